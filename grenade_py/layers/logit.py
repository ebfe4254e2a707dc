"""Logit: y = 1 / (1 + exp(-x)), element-wise, any shape. Tape: the output, since
s' = s (1 - s). Kernels: logit_forward, logit_backward (kernels/activations.cl).
Ports Grenade.Layers.Logit."""
from grenade_py.layers.activation import Activation


class Logit(Activation):
    """Logistic sigmoid, element-wise."""

    family = "logit"
    tape = "output"
