"""Learning-rate schedules: the rate of each epoch from a base rate, by name or by a callable,
for `fit` and the CLIs (`--schedule`); changing it rebuilds nothing."""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

from grenade_py.optimizers import Optimizer, optimizer

#: A learning-rate schedule: a name ("constant", "step:EVERY:FACTOR", "exponential:FACTOR",
#: "cosine") or a callable epoch -> rate (epochs counted from 0).
Schedule = str | Callable[[int], float]


def schedule_rate(schedule: Schedule | None, rate: float, epoch: int, epochs: int) -> float:
    """The rate of epoch `epoch` (from 0) of `epochs` under `schedule`, from the base `rate`:
    constant (None too): rate;  step:E:F: rate F^(epoch // E);  exponential:F: rate F^epoch
    (Grenade's mnist.hs uses F = 0.9);  cosine: rate (1 + cos(pi epoch / epochs)) / 2;
    a callable: its value. ValueError for a malformed name or a rate that is not > 0."""
    if schedule is None:
        return rate
    if callable(schedule):
        value = schedule(epoch)
    else:
        name, *args = str(schedule).split(":")
        try:
            numbers_ = [float(a) for a in args]
        except ValueError:
            numbers_ = []
        if name == "constant" and not args:
            value = rate
        elif name == "step" and len(numbers_) == 2 and numbers_[0] >= 1 \
                and numbers_[0] == int(numbers_[0]) and numbers_[1] > 0:
            value = rate * _power(numbers_[1], epoch // int(numbers_[0]))
        elif name == "exponential" and len(numbers_) == 1 and numbers_[0] > 0:
            value = rate * _power(numbers_[0], epoch)
        elif name == "cosine" and not args:
            value = rate * (1 + math.cos(math.pi * epoch / max(1, epochs))) / 2
        else:
            raise ValueError(f"schedule {schedule!r} is not one of constant, step:EVERY:FACTOR "
                             "(e.g. step:5:0.5), exponential:FACTOR (e.g. exponential:0.9), "
                             "cosine (from Python also a callable epoch -> rate)")
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or \
            not math.isfinite(value) or not value > 0:
        raise ValueError(f"schedule {schedule!r} gives epoch {epoch} the rate {value!r}; "
                         "rates must be finite and > 0")
    return float(value)


def epoch_optimizers(schedule: Schedule | None, params: Optimizer, first: int, epochs: int,
                     dtype: Any) -> list[Optimizer]:
    """`params` at the rate of each of epochs first .. first + epochs - 1 (of as many in all)
    under `schedule`, each checked for precision `dtype` (`optimizers.optimizer`), so that a
    run fails before its first epoch, not in a later one; ValueError naming the epoch."""
    chosen = []
    for epoch in range(first, first + epochs):
        rate = schedule_rate(schedule, params.rate, epoch, first + epochs)
        try:
            chosen.append(optimizer(params.with_rate(rate), dtype))
        except ValueError as e:
            raise ValueError(f"schedule {schedule!r} gives epoch {epoch} the rate {rate!r}: "
                             f"{e}") from None
    return chosen


def _power(factor: float, n: int) -> float:
    """factor ** n, inf where that overflows a float (Python raises OverflowError there)."""
    try:
        return float(factor) ** n
    except OverflowError:
        return math.inf
