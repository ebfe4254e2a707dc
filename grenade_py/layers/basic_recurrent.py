"""BasicRecurrent: y = b + W [x; y-], the output fed back. Ports
Grenade.Recurrent.Layers.BasicRecurrent."""
from __future__ import annotations

import numpy as np
import pyopencl.array as cl_array

from grenade_py.device import Launch
from grenade_py.layers.arguments import initial_values
from grenade_py.layers.base import Buffers, WindowForm
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
                          dy: cl_array.Array, dx: cl_array.Array | None, buffers: Buffers,
                          gradients: bool = True) -> list[Launch]:
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

    def window_form(self, i: int, input_delta: bool) -> WindowForm:
        # The window's states st{i} ((T + 1) x o: the starting state, then each step's
        # output), the steps' deltas dz{i} (T x o) and the carried delta cr{i} (o: after BPTT,
        # the starting state's), laid out as one sequence of the step kernels' buffers. W's
        # step-k gradient is dz[k] times [x_k; st_k]: the two halves of its columns apart.
        p, m, v, o = self.parameters, self.momentum, self.second, self.o
        args = [(f"global REAL *{role}{name[0]}{i}", buffers[name])
                for role, buffers in (("", p), ("m", m), ("v", v))
                for name in ("w", "b", "state")] + [(f"int o{i}", np.int32(o))]
        scratch = {f"st{i}": (o, o), f"dz{i}": (o, 0), f"cr{i}": (0, o)}
        at = f"(size_t)t * o{i}"
        forward = f"""for (int r = lid; r < o{i}; r += nl) st{i}[r] = s{i}[r];
barrier(CLK_GLOBAL_MEM_FENCE);
for (int t = 0; t < T; ++t) {{
    for (int r = lid; r < o{i}; r += nl)
        a{i + 1}[{at} + r] = st{i}[{at} + o{i} + r] = basic_recurrent_unit_at(
            n{i}, o{i}, r, w{i}, b{i}, a{i} + (size_t)t * n{i}, st{i} + {at});
    barrier(CLK_GLOBAL_MEM_FENCE);
}}"""
        dx = f"else if (k < n{i}) d{i}[(size_t)t * n{i} + k] = sum;" if input_delta else ""
        backward = f"""for (int r = lid; r < o{i}; r += nl) cr{i}[r] = 0;
barrier(CLK_GLOBAL_MEM_FENCE);
for (int t = T - 1; t >= 0; --t) {{
    for (int r = lid; r < o{i}; r += nl) dz{i}[{at} + r] = cr{i}[r] + d{i + 1}[{at} + r];
    barrier(CLK_GLOBAL_MEM_FENCE);
    for (int k = lid; k < n{i} + o{i}; k += nl) {{
        const REAL sum = basic_recurrent_back_at(n{i}, o{i}, k, w{i}, dz{i} + {at});
        if (k >= n{i}) cr{i}[k - n{i}] = sum; {dx}
    }}
    barrier(CLK_GLOBAL_MEM_FENCE);
}}"""
        width = f"(n{i} + o{i})"
        update = f"""for (size_t q = lid; q < (size_t)o{i} * {width}; q += nl) {{
    const int r = q / {width}, c = q % {width};
    if (c < n{i}) recurrent_ordered_at(opt, decay, T, dz{i} + r, o{i}, a{i} + c, n{i}, w{i}, mw{i},
                                       vw{i}, q);
    else recurrent_ordered_at(opt, decay, T, dz{i} + r, o{i}, st{i} + c - n{i}, o{i}, w{i}, mw{i},
                              vw{i}, q);
}}
for (int r = lid; r < o{i}; r += nl)
    recurrent_ordered_at(opt, 0, T, dz{i} + r, o{i}, one, 0, b{i}, mb{i}, vb{i}, r);
for (int r = lid; r < o{i}; r += nl)
    recurrent_state_at(sopt, decay, cr{i}[r], s{i}, ms{i}, vs{i}, r);"""
        return WindowForm(args, scratch, forward, backward, update)
