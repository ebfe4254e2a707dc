"""Shapes of one sample, as in Grenade's `Shape` kind: D1, D2 and D3.

The batch is never part of a shape: a batch of N samples of shape S is an array `(N, *S.dims)`.
D3 is channel-major, as Grenade stores it: `D3(rows, cols, channels)` keeps Grenade's order of
type parameters, but its `dims` are `(channels, rows, cols)`, so a batch is `(N, C, H, W)` —
Grenade's `(rows * channels) x cols` matrix per sample, and PyTorch's NCHW.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import TypeGuard


def _is_count(value: object, least: int) -> TypeGuard[numbers.Integral]:
    """Whether `value` is an int >= least (numpy integers too; bools not)."""
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and \
        int(value) >= least


def count(value: object, name: str, least: int) -> int:
    """`value` as an int >= least (numpy integers welcome; bools refused), else ValueError."""
    if not _is_count(value, least):
        raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
    return int(value)


def _check_dims(shape: Shape) -> None:
    """ValueError unless every size is a positive int (numpy's too, kept as Python ints),
    naming them in the constructor's order (D3's dims are in another)."""
    fields = dataclasses.fields(shape)
    if not all(_is_count(d, 1) for d in shape.dims):
        raise ValueError(f"{type(shape).__name__} sizes ({', '.join(f.name for f in fields)}) "
                         f"must be positive ints, got {dataclasses.astuple(shape)}")
    for field in fields:
        object.__setattr__(shape, field.name, int(getattr(shape, field.name)))


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
    """`channels` planes of `rows` x `cols` values; `dims` is `(channels, rows, cols)`."""

    rows: int
    cols: int
    channels: int

    def __post_init__(self) -> None:
        _check_dims(self)

    @property
    def dims(self) -> tuple[int, ...]:
        return (self.channels, self.rows, self.cols)

    def __repr__(self) -> str:
        return f"D3 {self.rows} {self.cols} {self.channels}"


Shape = D1 | D2 | D3


def size(shape: Shape) -> int:
    """Number of values in one sample of `shape`."""
    return math.prod(shape.dims)


def parse_shape(text: str) -> Shape:
    """The shape written as its repr, e.g. "D3 28 28 1" (used by model files)."""
    kinds = {"D1": D1, "D2": D2, "D3": D3}
    words = text.split() if isinstance(text, str) else []
    if not words or words[0] not in kinds or not all(w.isdigit() for w in words[1:]):
        raise ValueError(f"not a shape: {text!r}; expected e.g. 'D1 10' or 'D3 28 28 1'")
    try:
        return kinds[words[0]](*(int(w) for w in words[1:]))
    except TypeError:
        raise ValueError(f"not a shape: {text!r}: wrong number of sizes") from None


def check_shape(shape: object, what: str) -> Shape:
    """`shape` if it is a D1, D2 or D3, else TypeError naming `what`."""
    if not isinstance(shape, (D1, D2, D3)):
        raise TypeError(f"{what} must be a shape such as D1(2), got {shape!r}")
    return shape
