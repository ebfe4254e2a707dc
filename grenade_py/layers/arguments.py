"""What the layers' constructors share: checking their arguments, and the initialisations
their parameters are drawn by."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

#: Initialisations (see `initial_values`): "scaled" (uniform +-1/sqrt(fan_in), PyTorch's
#: nn.Linear; the Grenade fork's UniformInit), "grenade" (uniform +-1, as Grenade's
#: randomFullyConnected), and the fork's "xavier" and "he" (WeightInitialization.hs).
INITS = ("scaled", "grenade", "xavier", "he")


def initial_values(rng: np.random.Generator, init: str, shape: tuple[int, ...], fan_in: int,
                   fan_out: int) -> np.ndarray:
    """Values of `shape` drawn as `init` says, for a parameter whose layer has `fan_in` inputs
    and `fan_out` outputs per value it computes:
    grenade: U(-1, 1); scaled: U(-1, 1) / sqrt(fan_in); xavier: U(-1, 1) sqrt(6 / (fan_in +
    fan_out)) (the fork's Xavier); he: N(0, 1) sqrt(2 / fan_in) (the fork's HeEtAl)."""
    if init == "he":
        return rng.normal(0.0, np.sqrt(2 / fan_in), size=shape)
    bound = {"grenade": 1.0, "scaled": 1 / np.sqrt(fan_in),
             "xavier": np.sqrt(6) / np.sqrt(fan_in + fan_out)}[init]
    return rng.uniform(-bound, bound, size=shape)


def real_argument(owner: str, name: str, value: object, ok: Callable[[float], bool],
                  expected: str) -> float:
    """`value` as a float if it is a finite real number (not a bool) that `ok` accepts, else
    ValueError: "<owner> <name> must be <expected>, got <value>"."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or \
            not math.isfinite(value) or not ok(float(value)):
        raise ValueError(f"{owner} {name} must be {expected}, got {value!r}")
    return float(value)


def chosen_init(owner: str, init: str | None) -> str | None:
    """`init` if it is None or one of INITS, else ValueError naming `owner`."""
    if init is not None and init not in INITS:
        raise ValueError(f"{owner} init must be one of {INITS} or None (the network's), got "
                         f"{init!r}")
    return init


def positive_ints(owner: str, **values: Any) -> None:
    """ValueError naming `owner` and the argument unless every value is an int >= 1."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{owner} {name} must be a positive int, got {value!r}")
