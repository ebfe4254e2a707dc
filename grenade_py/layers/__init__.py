"""The layers, one per module (the branching ones together in branches.py)."""
from grenade_py.layers.activation import Activation
from grenade_py.layers.arguments import INITS
from grenade_py.layers.base import Factor, Layer
from grenade_py.layers.basic_recurrent import BasicRecurrent
from grenade_py.layers.batch_norm import BatchNorm
from grenade_py.layers.branches import Concat, Merge, Trivial
from grenade_py.layers.concat_recurrent import ConcatRecurrent
from grenade_py.layers.convolution import Convolution
from grenade_py.layers.deconvolution import Deconvolution
from grenade_py.layers.dropout import Dropout
from grenade_py.layers.elu import Elu
from grenade_py.layers.fully_connected import FullyConnected
from grenade_py.layers.gelu import Gelu
from grenade_py.layers.inception import Inception, InceptionMini, Resnet
from grenade_py.layers.leaky_relu import LeakyRelu
from grenade_py.layers.leaky_tanh import LeakyTanh
from grenade_py.layers.logit import Logit
from grenade_py.layers.lstm import LSTM
from grenade_py.layers.pad import Crop, Pad
from grenade_py.layers.pooling import Pooling
from grenade_py.layers.recurrent import RecurrentCell, RecurrentLayer
from grenade_py.layers.relu import Relu
from grenade_py.layers.reshape import Reshape
from grenade_py.layers.series import Series
from grenade_py.layers.sinusoid import Sinusoid
from grenade_py.layers.softmax import Softmax
from grenade_py.layers.tanh import Tanh

#: Layers without parts, by the name model files store: built as `cls(**arguments)`.
LAYER_TYPES: dict[str, type[Layer]] = {
    cls.__name__: cls for cls in (FullyConnected, Tanh, Relu, Logit, Softmax, Trivial, Elu,
                                  Reshape, Pad, Crop, Convolution, Deconvolution, Pooling,
                                  Dropout, LSTM, BasicRecurrent, Sinusoid, Gelu, LeakyRelu,
                                  LeakyTanh, BatchNorm)
}

__all__ = [
    "INITS", "LAYER_TYPES", "LSTM", "Activation", "BasicRecurrent", "Concat", "Factor",
    "Convolution", "Crop", "Deconvolution", "Dropout", "Elu", "FullyConnected", "Layer", "Logit",
    "Merge", "Pad", "Pooling", "RecurrentCell", "RecurrentLayer", "Relu", "ConcatRecurrent",
    "Reshape", "Series", "Softmax", "Tanh", "Trivial", "Inception", "InceptionMini", "Resnet",
    "Sinusoid", "Gelu", "LeakyRelu", "LeakyTanh", "BatchNorm",
]
