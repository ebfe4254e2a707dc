"""LSTM: Grenade's peephole-style LSTM, whose recurrent state is the cell alone.

Ports Grenade.Recurrent.Layers.LSTM (runRecurrentForwards, runRecurrentBackwards, randomLSTM).
"""
from __future__ import annotations

import numpy as np
import pyopencl.array as cl_array

from grenade_py.device import Launch
from grenade_py.gemm import gemm_dot, gemm_outer
from grenade_py.layers.arguments import initial_values
from grenade_py.layers.base import Buffers, WindowForm
from grenade_py.layers.recurrent import Factor, RecurrentCell


class LSTM(RecurrentCell):
    """Grenade's LSTM, D1 i -> D1 o, state: the cell c (D1 o).

    Per step, with sigma the logistic function and c- the previous cell:
    f = sigma(b_f + W_f x + U_f c-), i = sigma(b_i + W_i x + U_i c-),
    o = sigma(b_o + W_o x + U_o c-), g = tanh(b_c + W_c x) (no recurrent term),
    c = f * c- + i * g, output h = o * c (no tanh), and h is not fed back.

    Parameters: `w` (i, 4 o) = [W_f W_i W_o W_c]^T; `u` (o, 3 o) = [U_f U_i U_o]^T;
    `b` (4 o,) = b_f, b_i, b_o, b_c; `state` (o,), the starting cell (Grenade's recurrent
    input, zero at first). Grenade keeps eleven separate (o, i), (o, o) and (o,) arrays; these
    are the same values stacked and stored transposed, so that one GEMM along contiguous rows
    forms every gate's input term for a whole sequence, and each step adds U c- as vectors.
    Initialisation: as randomLSTM, W, U and the biases uniform in [-1, 1] except b_f = 1
    ("grenade"); "scaled" draws from [-1/sqrt(fan_in), 1/sqrt(fan_in)] instead, fan_in being
    i for W and o for U, with b_f = 1 still.
    Kernels: gemm_outer (W x for all steps), lstm_forward_steps, lstm_backward_steps,
    gemm_dot (dx = W^T d for all steps) (kernels/recurrent.cl, kernels/gemm.cl).
    """

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        o, i = self.o, self.i
        return {"w": (i, 4 * o), "u": (o, 3 * o), "b": (4 * o,), "state": (o,)}

    def initial_parameters(self, rng: np.random.Generator, init: str) -> dict[str, np.ndarray]:
        o, i = self.o, self.i
        # "scaled": U's fan-in is o; the fork's xavier and he take (i, o) for every array.
        b = initial_values(rng, init, (4 * o,), i, o)
        b[:o] = 1  # the forget gates start open
        return {"w": initial_values(rng, init, (i, 4 * o), i, o),
                "u": initial_values(rng, init, (o, 3 * o), o if init == "scaled" else i, o),
                "b": b, "state": np.zeros(o)}

    def sequence_buffers(self, steps: int, batch: int) -> dict[str, tuple[int, ...]]:
        rows, o = steps * batch, self.o
        return {"states": ((steps + 1) * batch, o), "gates": (rows, 4 * o),
                "deltas": (rows, 4 * o), "dstate": (batch, o), "dcell": (batch, o),
                "zeros": (self.i,)}

    def forward_sequence(self, steps: int, batch: int, x: cl_array.Array, y: cl_array.Array,
                         buffers: Buffers, training: bool) -> list[Launch]:
        p, device, o = self.parameters, self.device, self.o
        local = self.local()
        return [gemm_outer(device, steps * batch, 4 * o, self.i, x, self.i, 1, p["w"],
                           buffers["gates"]),
                device.launch("lstm_forward_steps", (local[0] * batch,), steps, batch, o,
                              p["u"], p["b"], buffers["gates"], buffers["states"], y,
                              local=local)]

    def backward_sequence(self, steps: int, batch: int, x: cl_array.Array, y: cl_array.Array,
                          dy: cl_array.Array, dx: cl_array.Array | None, buffers: Buffers,
                          gradients: bool = True) -> list[Launch]:
        p, device, o = self.parameters, self.device, self.o
        local = self.local()
        launches = [device.launch("lstm_backward_steps", (local[0] * batch,), steps, batch, o,
                                  p["u"], buffers["gates"], buffers["states"], dy,
                                  buffers["deltas"], buffers["dstate"], buffers["dcell"],
                                  local=local)]
        if dx is not None:
            launches.append(gemm_dot(device, steps * batch, self.i, 4 * o, buffers["deltas"],
                                     p["w"], buffers["zeros"], dx))
        return launches

    def factors(self, steps: int, batch: int, x: cl_array.Array, y: cl_array.Array,
                dy: cl_array.Array, buffers: Buffers) -> list[Factor]:
        d, o = buffers["deltas"], self.o
        return [Factor("w", x, self.i, d, 4 * o, deltas="x"),
                Factor("u", buffers["states"], o, d, 4 * o, deltas="x"), Factor("b", d, 4 * o)]

    def window_form(self, i: int, input_delta: bool) -> WindowForm:
        # The window's states st{i} ((T + 1) x o, the starting state first), gates z{i} and
        # their deltas dz{i} (T x 4 o), and the carried cell delta cr{i} (o: after BPTT, the
        # starting state's delta) are the loop's, laid out as one sequence of
        # lstm_forward_steps' and lstm_backward_steps' buffers. The starting states' copy has
        # a barrier of its own: in one interval with the gates' loop, PoCL 3.1's build of a
        # work-group of 4 or more lanes trained otherwise than one lane and than Oclgrind
        # (which agree, and find no race) wherever a starting state was not zero.
        p, m, v, o = self.parameters, self.momentum, self.second, self.o
        args = [(f"global REAL *{role}{name[0]}{i}", buffers[name])
                for role, buffers in (("", p), ("m", m), ("v", v))
                for name in ("w", "u", "b", "state")] + [(f"int o{i}", np.int32(o))]
        scratch = {f"st{i}": (o, o), f"z{i}": (4 * o, 0), f"dz{i}": (4 * o, 0),
                   f"cr{i}": (0, o), f"dc{i}": (0, o)}
        g = f"4 * o{i}"
        forward = f"""for (int r = lid; r < o{i}; r += nl) st{i}[r] = s{i}[r];
barrier(CLK_GLOBAL_MEM_FENCE);
for (int q = lid; q < T * {g}; q += nl)
    z{i}[q] = fc_dot(w{i} + q % ({g}), {g}, a{i} + (size_t)(q / ({g})) * n{i}, n{i});
barrier(CLK_GLOBAL_MEM_FENCE);
for (int t = 0; t < T; ++t) {{
    for (int r = lid; r < o{i}; r += nl)
        lstm_unit_forward(o{i}, r, u{i}, b{i}, z{i} + (size_t)t * {g}, st{i} + (size_t)t * o{i},
                          st{i} + (size_t)(t + 1) * o{i}, a{i + 1} + (size_t)t * o{i});
    barrier(CLK_GLOBAL_MEM_FENCE);
}}"""
        backward = f"""for (int r = lid; r < o{i}; r += nl) cr{i}[r] = 0;
barrier(CLK_GLOBAL_MEM_FENCE);
for (int t = T - 1; t >= 0; --t) {{
    global const REAL *zt = z{i} + (size_t)t * {g};
    global REAL *dzt = dz{i} + (size_t)t * {g};
    for (int r = lid; r < o{i}; r += nl)
        lstm_unit_backward(o{i}, r, zt, st{i} + (size_t)t * o{i}, st{i} + (size_t)(t + 1) * o{i},
                           d{i + 1}[(size_t)t * o{i} + r], cr{i}, dc{i}, dzt);
    barrier(CLK_GLOBAL_MEM_FENCE);
    for (int k = lid * LSTM_VECTORS; k < o{i}; k += nl * LSTM_VECTORS)
        lstm_carry_rows(o{i}, k, min(LSTM_VECTORS, o{i} - k), u{i}, zt, dzt, dc{i}, cr{i});
    barrier(CLK_GLOBAL_MEM_FENCE);
}}"""
        if input_delta:
            backward += f"""
for (int q = lid; q < T * n{i}; q += nl)
    d{i}[q] = fc_dot(w{i} + (size_t)(q % n{i}) * {g}, 1, dz{i} + (size_t)(q / n{i}) * {g}, {g});"""
        update = f"""for (size_t q = lid; q < (size_t)n{i} * {g}; q += nl)
    recurrent_ordered_at(opt, decay, T, a{i} + q / ({g}), n{i}, dz{i} + q % ({g}), {g}, w{i},
                         mw{i}, vw{i}, q);
for (size_t q = lid; q < (size_t)o{i} * 3 * o{i}; q += nl)
    recurrent_ordered_at(opt, decay, T, st{i} + q / (3 * o{i}), o{i}, dz{i} + q % (3 * o{i}),
                         {g}, u{i}, mu{i}, vu{i}, q);
for (int q = lid; q < {g}; q += nl)
    recurrent_ordered_at(opt, decay, T, dz{i} + q, {g}, one, 0, b{i}, mb{i}, vb{i}, q);
for (int r = lid; r < o{i}; r += nl)
    recurrent_state_at(sopt, decay, cr{i}[r], s{i}, ms{i}, vs{i}, r);"""
        return WindowForm(args, scratch, forward, backward, update)
