"""Tanh: y = tanh x, element-wise, any shape. Tape: the output (Grenade keeps the input and
recomputes tanh x; 1 - y^2 from the kept y is the same value without a second tanh per element).
Kernels: tanh_forward, tanh_backward (kernels/activations.cl). Ports Grenade.Layers.Tanh."""
from grenade_py.layers.activation import Activation


class Tanh(Activation):
    """Hyperbolic tangent, element-wise; backward multiplies by 1 - tanh(x)^2."""

    family = "tanh"
    tape = "output"
