"""grenade_py: Grenade's networks of typed layers, every layer running as OpenCL kernels."""
from grenade_py.device import Device
from grenade_py.errors import (
                               DataError,
                               DeviceError,
                               GrenadeError,
                               KernelBuildError,
                               ModelFileError,
                               ShapeError,
)
from grenade_py.layers import FullyConnected, Layer, Logit, Relu, Softmax, Tanh
from grenade_py.learning import LearningParameters
from grenade_py.network import Network
from grenade_py.runner import apply_update, back_propagate, evaluate, fit, run_net, train
from grenade_py.shapes import D1, D2, D3

__version__ = "0.1.0"

__all__ = [
    "D1", "D2", "D3", "DataError", "Device", "DeviceError", "FullyConnected", "GrenadeError",
    "KernelBuildError", "Layer", "LearningParameters", "Logit", "ModelFileError", "Network",
    "Relu", "ShapeError", "Softmax", "Tanh", "apply_update", "back_propagate", "evaluate", "fit",
    "run_net", "train",
]
