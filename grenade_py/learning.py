"""Grenade's LearningParameters: the rate, momentum and L2 regulariser of a descent step."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass


@dataclass(frozen=True)
class LearningParameters:
    """How far one step moves the parameters (Grenade's `LearningParameters`).

    Each step does `m' = momentum * m - rate * g; w' = w + m' - rate * l2 * w`.

    Parameters:
        rate: learning rate, finite and > 0.
        momentum: momentum coefficient, 0 <= momentum < 1.
        l2: L2 regulariser (weight decay per unit rate), finite and >= 0.
    """

    rate: float
    momentum: float = 0.9
    l2: float = 0.0005

    def __post_init__(self) -> None:
        for name in ("rate", "momentum", "l2"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"LearningParameters.{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"LearningParameters.{name} must be finite, got {value!r}")
        if not self.rate > 0:
            raise ValueError(f"LearningParameters.rate must be > 0, got {self.rate!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(
                f"LearningParameters.momentum must be in [0, 1), got {self.momentum!r}"
            )
        if not self.l2 >= 0:
            raise ValueError(f"LearningParameters.l2 must be >= 0, got {self.l2!r}")
