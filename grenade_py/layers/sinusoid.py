"""Sinusoid: y = sin x, element-wise, any shape. Tape: the input (sin' = cos). Kernels:
sinusoid_forward, sinusoid_backward (kernels/activations.cl). Ports Grenade.Layers.Sinusoid."""
from grenade_py.layers.activation import Activation


class Sinusoid(Activation):
    """The sine, element-wise."""

    family = "sinusoid"
    tape = "input"
