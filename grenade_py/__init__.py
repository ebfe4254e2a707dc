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
from grenade_py.layers import (
                               LSTM,
                               BasicRecurrent,
                               BatchNorm,
                               Concat,
                               ConcatRecurrent,
                               Convolution,
                               Crop,
                               Deconvolution,
                               Dropout,
                               Elu,
                               FullyConnected,
                               Gelu,
                               Inception,
                               InceptionMini,
                               Layer,
                               LeakyRelu,
                               LeakyTanh,
                               Logit,
                               Merge,
                               Pad,
                               Pooling,
                               Relu,
                               Reshape,
                               Resnet,
                               Series,
                               Sinusoid,
                               Softmax,
                               Tanh,
                               Trivial,
)
from grenade_py.many import train_many
from grenade_py.network import Network
from grenade_py.optimizers import SGD, Adam, AdamW, LearningParameters, Optimizer
from grenade_py.recurrent_network import RecurrentNetwork
from grenade_py.recurrent_runner import (
                               RecurrentState,
                               SymbolCorpus,
                               run_recurrent,
                               train_recurrent,
                               train_sequences,
)
from grenade_py.runner import (
                               Gradients,
                               Tapes,
                               apply_update,
                               back_propagate,
                               evaluate,
                               fit,
                               run_gradient,
                               run_net,
                               run_network,
                               train,
)
from grenade_py.shapes import D1, D2, D3

__version__ = "0.1.0"

__all__ = [
    "D1", "D2", "D3", "Concat", "ConcatRecurrent", "Convolution", "Crop", "DataError",
    "Deconvolution", "Device",
    "Dropout", "DeviceError", "Elu", "FullyConnected", "GrenadeError", "KernelBuildError", "Layer",
    "LearningParameters", "Logit", "Merge", "ModelFileError", "Network", "Pad", "Pooling", "Relu",
    "Reshape", "Series", "ShapeError", "Softmax", "Tanh", "Trivial", "apply_update",
    "back_propagate", "evaluate", "fit", "run_net", "train", "Inception", "InceptionMini",
    "Resnet", "Gradients", "Tapes", "run_gradient", "run_network", "LSTM", "BasicRecurrent",
    "RecurrentNetwork", "RecurrentState", "SymbolCorpus", "run_recurrent", "train_recurrent",
    "train_sequences", "SGD", "Adam", "AdamW", "Optimizer", "Sinusoid", "Gelu", "LeakyRelu",
    "LeakyTanh", "BatchNorm", "train_many",
]
