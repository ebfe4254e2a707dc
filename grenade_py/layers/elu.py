"""Elu: y = x for x > 0, exp(x) - 1 below (alpha = 1), element-wise, any shape. Tape: the input.
Kernels: elu_forward, elu_backward (kernels/activations.cl). Ports Grenade.Layers.Elu."""
from grenade_py.layers.activation import Activation


class Elu(Activation):
    """Exponential linear unit, element-wise, alpha = 1."""

    family = "elu"
    tape = "input"
