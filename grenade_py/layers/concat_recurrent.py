"""ConcatRecurrent: two branches over one input in a RecurrentNetwork, at least one recurrent,
their outputs joined. Ports Grenade.Recurrent.Layers.ConcatRecurrent (ConcatRecLeft,
ConcatRecRight, ConcatRecBoth).

Kernels: those of the branches, then concat_rows; backwards split_rows, the branches', and
add_values for the input delta (kernels/branches.cl).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pyopencl.array as cl_array

from grenade_py.device import Launch, streaming_size
from grenade_py.errors import ShapeError
from grenade_py.layers.base import Buffers, Factor, Layer, sub
from grenade_py.layers.branches import Branches
from grenade_py.layers.recurrent import RecurrentLayer
from grenade_py.shapes import D1, Shape, size


class ConcatRecurrent(RecurrentLayer, Branches):
    """Branches a and b on the same input, their D1 outputs concatenated, a's first: D1 m +
    D1 n -> D1 (m + n), as Concat does.

    Grenade's three forms are the three ways of giving it branches: a recurrent layer (LSTM,
    BasicRecurrent, or another ConcatRecurrent) and a feed-forward one (ConcatRecLeft), the
    other way round (ConcatRecRight), or two recurrent ones (ConcatRecBoth). A feed-forward
    branch is a layer or a list of layers, run on every step, whose parameters (if any) give
    per-step gradients (FullyConnected does). Training follows Grenade's recurrent semantics
    through both branches: the output's delta is split between them, the input's delta is the
    sum of theirs, each cell's starting state is learned as at the top level, and every per-step
    gradient of both branches is one step of Grenade's ordered updates.
    """

    def __init__(self, a: Layer | Sequence[Layer], b: Layer | Sequence[Layer]) -> None:
        Branches.__init__(self, a, b)
        if not any(isinstance(part, RecurrentLayer) for part in (self.a, self.b)):
            raise ValueError("ConcatRecurrent needs a recurrent branch (LSTM, BasicRecurrent or "
                             "ConcatRecurrent); join two feed-forward branches with Concat")

    def out_shape(self, in_shape: Shape) -> Shape:
        out_a, out_b = self.branch_shapes(in_shape)
        if not (isinstance(out_a, D1) and isinstance(out_b, D1)):
            raise ShapeError(f"joins two D1 outputs, but branch a gives {out_a!r} and branch b "
                             f"{out_b!r}", located=True)
        return D1(out_a.n + out_b.n)

    def _parts(self) -> list[tuple[str, Layer, int]]:
        """(key, branch, output width) for a and b."""
        out_a, out_b = self.branch_shapes(self.in_shape)
        return [("a", self.a, size(out_a)), ("b", self.b, size(out_b))]

    def sequence_buffers(self, steps: int, batch: int) -> dict[str, tuple[int, ...]]:
        rows = steps * batch
        own: dict[str, tuple[int, ...]] = {"dxb": (rows, *self.in_shape.dims)}
        for key, part, width in self._parts():
            own |= {f"y{key}": (rows, width), f"dy{key}": (rows, width)}
            inner = part.sequence_buffers(steps, batch) if isinstance(part, RecurrentLayer) \
                else part.batch_buffers(rows)
            own |= {f"{key}.{name}": shape for name, shape in inner.items()}
        return own

    def forward_sequence(self, steps: int, batch: int, x: cl_array.Array, y: cl_array.Array,
                         buffers: Buffers, training: bool) -> list[Launch]:
        rows, launches = steps * batch, []
        for key, part, _ in self._parts():
            out, own = buffers[f"y{key}"], sub(buffers, key)
            launches += part.forward_sequence(steps, batch, x, out, own, training) \
                if isinstance(part, RecurrentLayer) else part.forward(rows, x, out, own, training)
        (_, _, wa), (_, _, wb) = self._parts()
        return launches + [self.device.launch("concat_rows", streaming_size(wa + wb, rows), rows,
                                              wa, wb, wa + wb, 0, buffers["ya"], buffers["yb"],
                                              y)]

    def backward_sequence(self, steps: int, batch: int, x: cl_array.Array, y: cl_array.Array,
                          dy: cl_array.Array, dx: cl_array.Array | None, buffers: Buffers,
                          gradients: bool = True) -> list[Launch]:
        rows, (_, _, wa), (_, _, wb) = steps * batch, *self._parts()
        launches = [self.device.launch("split_rows", streaming_size(wa + wb, rows), rows, wa, wb,
                                       wa + wb, 0, dy, buffers["dya"], buffers["dyb"])]
        into = {"a": dx, "b": None if dx is None else buffers["dxb"]}
        for key, part, _ in self._parts():
            out, delta, own = buffers[f"y{key}"], buffers[f"dy{key}"], sub(buffers, key)
            launches += part.backward_sequence(steps, batch, x, out, delta, into[key], own,
                                               gradients)
        return launches + self.summed_delta(rows, dx, buffers)

    def factors(self, steps: int, batch: int, x: cl_array.Array, y: cl_array.Array,
                dy: cl_array.Array, buffers: Buffers) -> list[Factor] | None:
        found = []
        for key, part, _ in self._parts():
            factors = part.factors(steps, batch, x, buffers[f"y{key}"], buffers[f"dy{key}"],
                                   sub(buffers, key))
            if factors is None:
                return None
            found += [dataclasses.replace(f, name=f"{key}.{f.name}") for f in factors]
        return found
