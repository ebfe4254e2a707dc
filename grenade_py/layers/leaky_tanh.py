"""LeakyTanh: the identity clipped, with a leak, to [-maximum, maximum], element-wise, any
shape: y = x inside, maximum + 0.05 (x - maximum) above, -maximum + 0.05 (x + maximum) below.
Tape: the input. Kernels: leaky_tanh_forward, leaky_tanh_backward (kernels/activations.cl).

Ports the Grenade fork's Grenade.Layers.LeakyTanh (pull request #69: its `tanhMax`, the maximum
given in thousandths there, a float in (0, 1] here). Where it differs on purpose: the fork's
lower branch is 0.05 (x - maximum) - maximum, which jumps at -maximum (to -1.1 maximum); ours
is continuous, mirroring the upper one. The fork's backward pass is not its forward pass's
derivative (it multiplies by max(0.005, tanh' x) inside, -0.05 below, and applies tanh' twice
on D2 and D3); ours is: 1 inside, 0.05 beyond, so gradients check against finite differences.
"""
from __future__ import annotations

from grenade_py.layers.activation import Activation
from grenade_py.layers.arguments import real_argument


class LeakyTanh(Activation):
    """Identity within [-maximum, maximum] (0 < maximum <= 1), slope 0.05 beyond."""

    family = "leaky_tanh"
    tape = "input"
    argument = "maximum"

    def __init__(self, maximum: float = 0.995) -> None:
        super().__init__()
        self.maximum = real_argument("LeakyTanh", "maximum", maximum, lambda m: 0 < m <= 1,
                                     "a number in (0, 1]")

