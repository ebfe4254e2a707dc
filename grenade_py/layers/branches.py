"""Layers that branch or pass through: Trivial, Merge and Concat. Ports Grenade.Layers.Trivial,
Grenade.Layers.Merge and Grenade.Layers.Concat.

Merge and Concat run two branches on the same input, each a layer, a list of layers or a Network;
the input's gradient is the sum of the two branches'. Kernels: add_values, concat_rows,
split_rows (kernels/branches.cl); Trivial's are trivial_forward/_backward
(kernels/activations.cl). A Concat's branch that is a Concat joins its own branches' outputs
straight into the outer rows (and splits their deltas out of them), and a Trivial branch's input
is joined itself (its delta split into its input delta): neither output is copied twice. In
Grenade's mnist.hs network (Concats of a Trivial or a convolution and InceptionMini), a training
step at batch 64 took 0.86x and 0.92x the time of copying every branch's output (float32), 0.84x
(float64), on a 2-core AVX-512 EPYC; the same bits. A branch that `joins_rows` (one ending in
a Convolution of the implicit GEMMs, on CPUs) writes its output into the rows itself and reads
its delta there: none copied; that step then took 0.88x the time (float32), 0.94x (float64).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import pyopencl.array as cl_array

from grenade_py.device import Launch, columns, streaming_size
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
        return (self.a.backward(n, x, buffers["ya"], dya, dx, sub(buffers, "a"))
                + self.b.backward(n, x, buffers["yb"], dyb, dxb, sub(buffers, "b"))
                + self.summed_delta(n, dx, buffers))

    def summed_delta(self, rows: int, dx: cl_array.Array | None,
                     buffers: Buffers) -> list[Launch]:
        """dx += buffers["dxb"] over `rows` rows (branch a's input delta is in dx, b's in
        dxb); none without dx."""
        if dx is None:
            return []
        count = rows * size(self.in_shape)
        return [self.device.launch("add_values", streaming_size(count), count, dx,
                                   buffers["dxb"], dx)]


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

    def _parts(self) -> list[tuple[str, Layer, int, int]]:
        """(key, branch, values, first column) of each branch's part of an output row."""
        out_a, out_b = self.branch_shapes(self.in_shape)
        return [("a", self.a, size(out_a), 0), ("b", self.b, size(out_b), size(out_a))]

    @staticmethod
    def _copied(layer: Layer) -> bool:
        """Whether a branch's output has buffers of its own, copied into the rows (and its
        delta out of them): not a Concat's, which joins its branches' there itself (`join`,
        `part`), nor a Trivial's (its input is copied, its delta split out in place), nor that
        of a layer that `joins_rows` (it writes its output there, and reads its delta there)."""
        return type(layer) not in (Concat, Trivial) and not layer.joins_rows()

    def _own(self, buffers: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        """`buffers` without the output and delta buffers of branches not `_copied`."""
        unused = {f"{kind}{key}" for key, layer, _, _ in self._parts()
                  if not self._copied(layer) for kind in ("y", "dy")}
        return {name: shape for name, shape in buffers.items() if name not in unused}

    def batch_buffers(self, n: int) -> dict[str, tuple[int, ...]]:
        buffers = super().batch_buffers(n)
        return self._own(buffers | {"dya": buffers["ya"], "dyb": buffers["yb"]})

    def inference_buffers(self, n: int) -> dict[str, tuple[int, ...]]:
        return self._own(super().inference_buffers(n))

    def _rows(self, kernel: str, n: int, wy: int, at: int, joined: cl_array.Array,
              parts: list[tuple[cl_array.Array, int, int]]) -> list[Launch]:
        """concat_rows or split_rows between the rows of `joined` (wy values, this Concat's
        from column `at`) and `parts`, (buffer, values, first column) of one or two
        branches."""
        if not parts:
            return []
        (a, wa, first), (b, wb, _) = parts if len(parts) == 2 else (parts[0], (parts[0][0], 0, 0))
        return [self.device.launch(kernel, streaming_size(wa + wb, n), n, wa, wb, wy, at + first,
                                   *((a, b, joined) if kernel == "concat_rows" else
                                     (joined, a, b)))]

    def forward(self, n: int, x: cl_array.Array, y: cl_array.Array, buffers: Buffers,
                training: bool) -> list[Launch]:
        return self.join(n, x, y, buffers, training, size(self.out_shape(self.in_shape)), 0)

    def join(self, n: int, x: cl_array.Array, y: cl_array.Array, buffers: Buffers,
             training: bool, wy: int, at: int) -> list[Launch]:
        """The branches' forward passes, their outputs joined into columns `at` .. of y's
        rows of wy values (a nested Concat's part of its parent's rows)."""
        launches, parts = [], []
        for key, layer, width, first in self._parts():
            if type(layer) is Concat:
                launches += layer.join(n, x, y, sub(buffers, key), training, wy, at + first)
            elif layer.joins_rows():
                launches += layer.forward(n, x, columns(y, wy, at + first, width),
                                          sub(buffers, key), training)
            elif type(layer) is Trivial:
                parts.append((x, width, first))
            else:
                launches += layer.forward(n, x, buffers[f"y{key}"], sub(buffers, key), training)
                parts.append((buffers[f"y{key}"], width, first))
        return launches + self._rows("concat_rows", n, wy, at, y, parts)

    def backward(self, n: int, x: cl_array.Array, y: cl_array.Array, dy: cl_array.Array,
                 dx: cl_array.Array | None, buffers: Buffers) -> list[Launch]:
        return self.part(n, x, y, dy, dx, buffers, size(self.out_shape(self.in_shape)), 0)

    def part(self, n: int, x: cl_array.Array, y: cl_array.Array, dy: cl_array.Array,
             dx: cl_array.Array | None, buffers: Buffers, wy: int, at: int) -> list[Launch]:
        """The backward pass from this Concat's part of y's and dy's rows (columns `at` ..
        of rows of wy values): each branch's delta split out (a Trivial's straight into its
        input delta; read in place by a branch that `joins_rows`), the branches' passes;
        dx = a's input delta + b's."""
        into = {"a": dx, "b": None if dx is None else buffers["dxb"]}
        parts = [(cast(cl_array.Array, buffers[f"dy{key}"] if self._copied(layer) else
                       into[key]), width, first)
                 for key, layer, width, first in self._parts()
                 if self._copied(layer) or type(layer) is Trivial and into[key] is not None]
        launches = self._rows("split_rows", n, wy, at, dy, parts)
        for key, layer, width, first in self._parts():
            if type(layer) is Concat:
                launches += layer.part(n, x, y, dy, into[key], sub(buffers, key), wy,
                                       at + first)
            elif layer.joins_rows():
                launches += layer.backward(n, x, columns(y, wy, at + first, width),
                                           columns(dy, wy, at + first, width), into[key],
                                           sub(buffers, key))
            elif type(layer) is not Trivial:
                launches += layer.backward(n, x, buffers[f"y{key}"], buffers[f"dy{key}"],
                                           into[key], sub(buffers, key))
        return launches + self.summed_delta(n, dx, buffers)
