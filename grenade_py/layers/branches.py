"""Layers that branch or pass through: Trivial, Merge and Concat. Ports Grenade.Layers.Trivial,
Grenade.Layers.Merge and Grenade.Layers.Concat.

Merge and Concat run two branches on the same input, each a layer, a list of layers or a Network;
the input's gradient is the sum of the two branches'. Kernels: add_values, concat_rows,
split_rows (kernels/branches.cl); Trivial's are trivial_forward/_backward
(kernels/activations.cl).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyopencl.array as cl_array

from grenade_py.device import Launch, streaming_size
from grenade_py.errors import ShapeError
from grenade_py.layers.activation import Activation
from grenade_py.layers.base import Buffers, Layer, sub
from grenade_py.layers.series import Series
from grenade_py.shapes import D1, D2, D3, Shape, size


class Trivial(Activation):
    """The identity, any shape (Grenade's Trivial): an activation whose function is x."""

    family = "trivial"


def branch(value: Layer | Sequence[Layer]) -> Layer:
    """A branch as a layer: a list of layers becomes a Series."""
    if isinstance(value, Layer):
        return value
    if isinstance(value, (list, tuple)):
        return Series(value)
    raise TypeError(f"a branch is a layer, a list of layers or a Network, got {value!r}")


class Branches(Layer):
    """Two branches on one input; subclasses join their outputs."""

    def __init__(self, a: Layer | Sequence[Layer], b: Layer | Sequence[Layer]) -> None:
        super().__init__()
        self.a, self.b = branch(a), branch(b)
        if self.a is self.b:
            raise ValueError("the two branches must be different layers")

    def children(self, in_shape: Shape) -> list[tuple[str, Layer, Shape]]:
        return [("a", self.a, in_shape), ("b", self.b, in_shape)]

    def branch_shapes(self, in_shape: Shape) -> tuple[Shape, Shape]:
        """The output shapes of branches a and b, or a ShapeError naming the branch."""
        shapes = []
        for key, layer in (("a", self.a), ("b", self.b)):
            try:
                shapes.append(layer.out_shape(in_shape))
            except ShapeError as e:
                if e.located:
                    raise ShapeError(f"branch {key}, {e}", located=True) from None
                raise ShapeError(f"branch {key} ({layer.label()}) {e}, but its input is "
                                 f"{in_shape!r}", located=True) from None
        return shapes[0], shapes[1]

    def spec(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "a": self.a.spec(), "b": self.b.spec()}

    def __repr__(self) -> str:
        return f"{type(self).__name__} ({self.a!r}) ({self.b!r})"

    def label(self) -> str:
        return type(self).__name__

    def batch_buffers(self, n: int) -> dict[str, tuple[int, ...]]:
        out_a, out_b = self.branch_shapes(self.in_shape)
        return {"ya": (n, *out_a.dims), "yb": (n, *out_b.dims),
                "dxb": (n, *self.in_shape.dims)} | self.child_buffers(n)

    def inference_buffers(self, n: int) -> dict[str, tuple[int, ...]]:
        out_a, out_b = self.branch_shapes(self.in_shape)
        return {"ya": (n, *out_a.dims), "yb": (n, *out_b.dims)} | self.child_buffers(
            n, inference=True)

    def run_branches(self, n: int, x: cl_array.Array, buffers: Buffers,
                     training: bool) -> list[Launch]:
        return (self.a.forward(n, x, buffers["ya"], sub(buffers, "a"), training)
                + self.b.forward(n, x, buffers["yb"], sub(buffers, "b"), training))

    def backward_branches(self, n: int, x: cl_array.Array, dya: cl_array.Array,
                          dyb: cl_array.Array, dx: cl_array.Array | None,
                          buffers: Buffers) -> list[Launch]:
        """Both branches' backward passes; dx = a's input delta + b's."""
        dxb = None if dx is None else buffers["dxb"]
        launches = (self.a.backward(n, x, buffers["ya"], dya, dx, sub(buffers, "a"))
                    + self.b.backward(n, x, buffers["yb"], dyb, dxb, sub(buffers, "b")))
        if dx is not None:
            count = n * size(self.in_shape)
            launches.append(self.device.launch("add_values", streaming_size(count), count, dx,
                                               dxb, dx))
        return launches


class Merge(Branches):
    """The sum of two branches' outputs, which must have the same shape (Grenade's Merge).

    Shape: S -> S' where both branches take S and give S'.
    """

    def out_shape(self, in_shape: Shape) -> Shape:
        out_a, out_b = self.branch_shapes(in_shape)
        if out_a != out_b:
            raise ShapeError(f"sums outputs of one shape, but branch a gives {out_a!r} "
                             f"and branch b {out_b!r}", located=True)
        return out_a

    def forward(self, n: int, x: cl_array.Array, y: cl_array.Array, buffers: Buffers,
                training: bool) -> list[Launch]:
        count = y.size
        return self.run_branches(n, x, buffers, training) + [self.device.launch(
            "add_values", streaming_size(count), count, buffers["ya"], buffers["yb"], y)]

    def backward(self, n: int, x: cl_array.Array, y: cl_array.Array, dy: cl_array.Array,
                 dx: cl_array.Array | None, buffers: Buffers) -> list[Launch]:
        return self.backward_branches(n, x, dy, dy, dx, buffers)


class Concat(Branches):
    """Two branches' outputs joined, a's first (Grenade's Concat).

    Shape: D1 m + D1 n -> D1 (m + n); with `stacked=True`, D1 o + D1 o -> D2 2 o (a's output
    is row 0); D3 rows cols m + D3 rows cols n -> D3 rows cols (m + n) (a's channels first).
    """

    def __init__(self, a: Layer | Sequence[Layer], b: Layer | Sequence[Layer],
                 stacked: bool = False) -> None:
        super().__init__(a, b)
        if not isinstance(stacked, bool):
            raise TypeError(f"stacked must be True or False, got {stacked!r}")
        self.stacked = stacked

    def out_shape(self, in_shape: Shape) -> Shape:
        out_a, out_b = self.branch_shapes(in_shape)
        if self.stacked and isinstance(out_a, D1) and out_a == out_b:
            return D2(2, out_a.n)
        if not self.stacked and isinstance(out_a, D1) and isinstance(out_b, D1):
            return D1(out_a.n + out_b.n)
        if (not self.stacked and isinstance(out_a, D3) and isinstance(out_b, D3)
                and (out_a.rows, out_a.cols) == (out_b.rows, out_b.cols)):
            return D3(out_a.rows, out_a.cols, out_a.channels + out_b.channels)
        takes = ("two D1 outputs of one size" if self.stacked else
                 "D1 + D1 outputs, or D3 + D3 of the same rows and cols")
        raise ShapeError(f"joins {takes}, but branch a gives {out_a!r} and branch b "
                         f"{out_b!r}", located=True)

    def spec(self) -> dict[str, Any]:
        return super().spec() | {"stacked": self.stacked}

    def __repr__(self) -> str:
        return super().__repr__() + (" stacked" if self.stacked else "")

    def batch_buffers(self, n: int) -> dict[str, tuple[int, ...]]:
        buffers = super().batch_buffers(n)
        return buffers | {"dya": buffers["ya"], "dyb": buffers["yb"]}

    def _widths(self) -> tuple[int, int]:
        out_a, out_b = self.branch_shapes(self.in_shape)
        return size(out_a), size(out_b)

    def forward(self, n: int, x: cl_array.Array, y: cl_array.Array, buffers: Buffers,
                training: bool) -> list[Launch]:
        wa, wb = self._widths()
        return self.run_branches(n, x, buffers, training) + [self.device.launch(
            "concat_rows", streaming_size(wa + wb, n), n, wa, wb, buffers["ya"], buffers["yb"], y)]

    def backward(self, n: int, x: cl_array.Array, y: cl_array.Array, dy: cl_array.Array,
                 dx: cl_array.Array | None, buffers: Buffers) -> list[Launch]:
        wa, wb = self._widths()
        split = self.device.launch("split_rows", streaming_size(wa + wb, n), n, wa, wb, dy,
                                   buffers["dya"], buffers["dyb"])
        return [split] + self.backward_branches(n, x, buffers["dya"], buffers["dyb"], dx,
                                                buffers)
