"""LeakyRelu: y = x for x >= 0, alpha x below, element-wise, any shape. Tape: the input.
Kernels: leaky_relu_forward, leaky_relu_backward (kernels/activations.cl). Ports the Grenade
fork's Grenade.Layers.LeakyRelu (pull request #69), whose alpha is fixed at 0.02, the default
here; its slope is alpha below 0 and 1 at 0 and above, as the fork's."""
from __future__ import annotations

from grenade_py.layers.activation import Activation
from grenade_py.layers.arguments import real_argument


class LeakyRelu(Activation):
    """Leaky rectified linear unit with slope `alpha` (finite, >= 0) below 0."""

    family = "leaky_relu"
    tape = "input"
    argument = "alpha"

    def __init__(self, alpha: float = 0.02) -> None:
        super().__init__()
        self.alpha = real_argument("LeakyRelu", "alpha", alpha, lambda a: a >= 0,
                                   "a finite number >= 0")

