"""Relu: y = max(0, x), element-wise, any shape. Tape: the input. Kernels: relu_forward,
relu_backward (kernels/activations.cl). Ports Grenade.Layers.Relu."""
from grenade_py.layers.activation import Activation


class Relu(Activation):
    """Rectified linear unit, element-wise; its slope is 0 at x <= 0 and 1 above."""

    family = "relu"
    tape = "input"
