"""What a recurrent layer is (Grenade's `RecurrentLayer`), and the per-step gradients every
layer of a RecurrentNetwork gives.

A recurrent layer runs over whole sequences: B independent sequences of T steps, rows
time-major (row t * B + s). A cell's per-sequence buffers include `states` ((T + 1) * B, state
size): rows 0 .. B - 1 are the recurrent inputs the sequences start from, row (t + 1) * B + s the
state after step t. Its starting state is a parameter, "state", saved with the model (Grenade
keeps it beside the network as `RecurrentInputs`). A ConcatRecurrent holds the states of the
cells among its branches.

Grenade updates a recurrent network once per time step, from that step's gradient. Every layer
with parameters in a RecurrentNetwork therefore says how its step-k gradient is formed: each
parameter's gradient at row k is the outer product d[k] (x) x[k] of two per-row factors (a
vector's x is 1), which the update kernel (`recurrent_update` in kernels/recurrent.cl) forms
step by step while it applies them.
"""
from __future__ import annotations

import pyopencl.array as cl_array

from grenade_py.device import Launch
from grenade_py.layers.base import Buffers, Factor, Layer
from grenade_py.layers.dense import Dense


class RecurrentLayer(Layer):
    """Anything a RecurrentNetwork runs over whole sequences (see the module's docstring): the
    cells (LSTM, BasicRecurrent) and ConcatRecurrent, whose branches may be cells.

    Subclasses give `sequence_buffers` (a cell's "states", "dstate": the delta of the
    starting states, and its tape), `forward_sequence` (a cell starting from the states in rows
    0 .. batch - 1 of buffers["states"]), `backward_sequence` (dx, a cell's "dstate", and the
    per-row factors `factors` reads) and `factors`.
    """

    recurrent = True

    def forward(self, n: int, x: cl_array.Array, y: cl_array.Array, buffers: Buffers,
                training: bool) -> list[Launch]:
        raise TypeError(f"{self!r} is recurrent: it runs over sequences in a RecurrentNetwork "
                        "(grenade_py.recurrent_runner)")

    def backward(self, n: int, x: cl_array.Array, y: cl_array.Array, dy: cl_array.Array,
                 dx: cl_array.Array | None, buffers: Buffers) -> list[Launch]:
        return self.forward(n, x, y, buffers, True)

    def factors(self, steps: int, batch: int, x: cl_array.Array, y: cl_array.Array,
                dy: cl_array.Array, buffers: Buffers) -> list[Factor] | None:
        """Each parameter's per-row gradient factors after `backward_sequence`."""
        raise NotImplementedError


class RecurrentCell(RecurrentLayer, Dense):
    """A recurrent layer D1 i -> D1 o with a state of its own (Grenade's recurrent layers with a
    `RecurrentShape`: LSTM, BasicRecurrent), whose starting state is its parameter "state"."""

    @property
    def state_size(self) -> int:
        """Values in the recurrent state of one sequence."""
        return self.o

    def local(self) -> tuple[int]:
        """The work-group of the step kernels: one per sequence, lanes over the units."""
        lanes = 1
        while lanes < self.o and lanes < (128 if self.device.gpu else 64):
            lanes *= 2
        return (lanes,)
