"""BasicRecurrent: y = b + W [x; y-], the output fed back. Ports
Grenade.Recurrent.Layers.BasicRecurrent."""
from __future__ import annotations

import numpy as np
import pyopencl.array as cl_array

from grenade_py.device import Launch
from grenade_py.layers.arguments import initial_values
from grenade_py.layers.base import Buffers
from grenade_py.layers.recurrent import Factor, RecurrentCell


class BasicRecurrent(RecurrentCell):
    """Grenade's simplest recurrent layer, D1 i -> D1 o, state: the last output (D1 o).

    Per step: y = b + W [x; y-], where [x; y-] stacks the input over the previous output.
    Parameters: `w` (o, i + o), `b` (o,), `state` (o,) (the first y-, zero at first).
    Initialisation: as randomBasicRecurrent, uniform in [-1, 1] ("grenade"), or
    [-1/sqrt(i + o), 1/sqrt(i + o)] ("scaled").
    Update: as Grenade's runUpdate, the bias descends with momentum but without the L2 term.
    Kernels: basic_recurrent_forward_steps, basic_recurrent_backward_steps,
    basic_recurrent_inputs (kernels/recurrent.cl).
    """

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"w": (self.o, self.i + self.o), "b": (self.o,), "state": (self.o,)}

    def initial_parameters(self, rng: np.random.Generator, init: str) -> dict[str, np.ndarray]:
        # "scaled": fan-in i + o (W multiplies [x; y_prev]); the fork's xavier and he: (i, o).
        fan_in = self.i + self.o if init == "scaled" else self.i
        return {"w": initial_values(rng, init, (self.o, self.i + self.o), fan_in, self.o),
                "b": initial_values(rng, init, (self.o,), fan_in, self.o),
                "state": np.zeros(self.o)}

    def sequence_buffers(self, steps: int, batch: int) -> dict[str, tuple[int, ...]]:
        rows, o = steps * batch, self.o
        return {"states": ((steps + 1) * batch, o), "deltas": (rows, o),
                "inputs": (rows, self.i + o), "dstate": (batch, o)}

    def forward_sequence(self, steps: int, batch: int, x: cl_array.Array, y: cl_array.Array,
                         buffers: Buffers, training: bool) -> list[Launch]:
        p, local = self.parameters, self.local()
        return [self.device.launch("basic_recurrent_forward_steps", (local[0] * batch,), steps,
                                   batch, self.i, self.o, p["w"], p["b"], x, buffers["states"],
                                   y, local=local)]

    def backward_sequence(self, steps: int, batch: int, x: cl_array.Array, y: cl_array.Array,
                          dy: cl_array.Array, dx: cl_array.Array | None,
                          buffers: Buffers) -> list[Launch]:
        device, i, o, local = self.device, self.i, self.o, self.local()
        rows = steps * batch
        return [device.launch("basic_recurrent_backward_steps", (local[0] * batch,), steps,
                              batch, i, o, dx is not None, self.parameters["w"], dy,
                              buffers["deltas"], dx if dx is not None else buffers["deltas"],
                              buffers["dstate"], local=local),
                device.launch("basic_recurrent_inputs", (i + o, rows), rows, i, o, x,
                              buffers["states"], buffers["inputs"])]

    def factors(self, steps: int, batch: int, x: cl_array.Array, y: cl_array.Array,
                dy: cl_array.Array, buffers: Buffers) -> list[Factor]:
        d, o = buffers["deltas"], self.o
        return [Factor("w", d, o, buffers["inputs"], self.i + o),
                Factor("b", d, o, decay=False)]
