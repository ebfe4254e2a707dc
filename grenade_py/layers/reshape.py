"""Reshape: the same values as another shape (D1 <-> D2 <-> D3), flattened row-major over the
channel-major layout; D3 <-> D2 only with one channel. Ports Grenade.Layers.Reshape.

Grenade infers the output shape from the layers after it; so does `Reshape()` when the first of
them that does not keep any shape (activations do) takes one shape (a FullyConnected i takes
D1 i); otherwise give it: `Reshape(D3(28, 28, 1))`.
Kernels: trivial_forward, trivial_backward (kernels/activations.cl), as Trivial; none between
two layers of a Series, where its output is its input's buffer (Series.base).
"""
from __future__ import annotations

from typing import Any

from grenade_py.errors import ShapeError
from grenade_py.layers.base import Layer
from grenade_py.layers.branches import Trivial
from grenade_py.shapes import D2, D3, Shape, check_shape, parse_shape, size


class Reshape(Trivial):
    """Shape: S -> `target` with as many values; on the device a copy, as Trivial's, or none
    (Series.base)."""

    keeps_shape = False
    renames = True

    def __init__(self, target: Shape | None = None) -> None:
        super().__init__()
        self.target = None if target is None else check_shape(target, "Reshape's target")

    def infer(self, following: Layer | None) -> None:
        """Take the output shape from the layer after it, where that layer takes one shape."""
        if self.target is None and following is not None:
            self.target = following.takes()

    def out_shape(self, in_shape: Shape) -> Shape:
        if self.target is None:
            raise ShapeError("cannot tell its output shape from the layer after it: give it, "
                             "e.g. Reshape(D3(28, 28, 1))")
        if size(self.target) != size(in_shape):
            raise ShapeError(f"gives {self.target!r} ({size(self.target)} values)")
        two_three = {type(in_shape), type(self.target)} == {D2, D3}
        three = in_shape if isinstance(in_shape, D3) else self.target
        if two_three and isinstance(three, D3) and three.channels != 1:
            raise ShapeError(f"turns D3 into D2 and back only with one channel, not "
                             f"{three.channels}, to give {self.target!r}")
        return self.target

    def spec(self) -> dict[str, Any]:
        return {"type": "Reshape", "target": None if self.target is None else repr(self.target)}

    @classmethod
    def from_arguments(cls, **arguments: Any) -> Reshape:
        target = arguments.pop("target", None)
        return cls(None if target is None else parse_shape(target), **arguments)

    def __repr__(self) -> str:
        return "Reshape" if self.target is None else f"Reshape {self.target!r}"
