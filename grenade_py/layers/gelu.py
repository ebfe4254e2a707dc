"""Gelu: the Gaussian error linear unit, element-wise, any shape. Tape: the input.

Ports the Grenade fork's Grenade.Layers.Gelu (pull request #69), whose form is the fast one,
y = x s(1.702 x) with s the logistic function: `Gelu(approximate=True)` (kernels gelu_fast_*).
Where it differs on purpose: the fork computes s with e = 2.71828 (its values differ from the
exact logistic by up to ~1e-6 relatively); ours uses exp. `Gelu()` is the exact form
y = x Phi(x), Phi the standard normal's distribution function, as torch.nn.functional.gelu
(kernels gelu_*).
"""
from __future__ import annotations

from typing import Any

from grenade_py.layers.activation import Activation


class Gelu(Activation):
    """Gaussian error linear unit; `approximate=True`: the fork's x s(1.702 x)."""

    tape = "input"

    def __init__(self, approximate: bool = False) -> None:
        super().__init__()
        if not isinstance(approximate, bool):
            raise ValueError(f"Gelu approximate must be True or False, got {approximate!r}")
        self.approximate = approximate
        self.family = "gelu_fast" if approximate else "gelu"

    def spec(self) -> dict[str, Any]:
        return {"type": "Gelu", "approximate": self.approximate}

    def __repr__(self) -> str:
        return "Gelu (approximate)" if self.approximate else "Gelu"
