"""The layers, one per module."""
from grenade_py.layers.base import Activation, Layer
from grenade_py.layers.fully_connected import FullyConnected
from grenade_py.layers.logit import Logit
from grenade_py.layers.relu import Relu
from grenade_py.layers.softmax import Softmax
from grenade_py.layers.tanh import Tanh

#: Layer types by the name model files store.
LAYER_TYPES: dict[str, type[Layer]] = {
    cls.__name__: cls for cls in (FullyConnected, Tanh, Relu, Logit, Softmax)
}

__all__ = ["LAYER_TYPES", "Activation", "FullyConnected", "Layer", "Logit", "Relu", "Softmax",
           "Tanh"]
