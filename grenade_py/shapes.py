"""Shapes of one sample, as in Grenade's `Shape` kind: D1, D2 and D3.

The batch is never part of a shape: a batch of N samples of shape S is an array `(N, *S.dims)`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


def _check_dims(shape: Shape) -> None:
    for d in shape.dims:
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ValueError(
                f"{type(shape).__name__} sizes must be positive ints, got {shape.dims}")


@dataclass(frozen=True)
class D1:
    """A vector of `n` values."""

    n: int

    def __post_init__(self) -> None:
        _check_dims(self)

    @property
    def dims(self) -> tuple[int, ...]:
        return (self.n,)

    def __repr__(self) -> str:
        return f"D1 {self.n}"


@dataclass(frozen=True)
class D2:
    """A matrix of `rows` x `cols` values, row-major."""

    rows: int
    cols: int

    def __post_init__(self) -> None:
        _check_dims(self)

    @property
    def dims(self) -> tuple[int, ...]:
        return (self.rows, self.cols)

    def __repr__(self) -> str:
        return f"D2 {self.rows} {self.cols}"


@dataclass(frozen=True)
class D3:
    """`rows` x `cols` x `channels` values, row-major."""

    rows: int
    cols: int
    channels: int

    def __post_init__(self) -> None:
        _check_dims(self)

    @property
    def dims(self) -> tuple[int, ...]:
        return (self.rows, self.cols, self.channels)

    def __repr__(self) -> str:
        return f"D3 {self.rows} {self.cols} {self.channels}"


Shape = D1 | D2 | D3


def size(shape: Shape) -> int:
    """Number of values in one sample of `shape`."""
    return math.prod(shape.dims)


def shape_from_dims(dims: tuple[int, ...] | list[int]) -> Shape:
    """The shape whose `dims` are `dims` (used by model files)."""
    kinds = {1: D1, 2: D2, 3: D3}
    if len(dims) not in kinds or any(int(d) < 1 for d in dims):
        raise ValueError(f"no shape has dims {list(dims)}: expected 1 to 3 positive sizes")
    return kinds[len(dims)](*(int(d) for d in dims))
