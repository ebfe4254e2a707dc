"""FullyConnected: y = W x + b, from D1 i to D1 o. Ports Grenade.Layers.FullyConnected."""
from __future__ import annotations

import numpy as np
import pyopencl.array as cl_array

from grenade_py import blocks
from grenade_py.device import Launch
from grenade_py.gemm import (
    gemm_forward,
    gemm_outer,
    gemm_outer_panels,
    gemm_outer_update,
    gemm_transpose_sums,
    k_splits,
    outer_panel_size,
    panel_size,
    vector_width,
)
from grenade_py.layers.arguments import initial_values
from grenade_py.layers.base import Buffers, Factor, WindowForm
from grenade_py.layers.dense import Dense

#: The fused loop's update unrolls its loop over a row's inputs up to this many (on CPUs).
UNROLLED_ROW = 16
#: Weights from which a batch's backward pass steps them in their gradient's GEMM
#: (`update_fused`). MNIST's 10 x 512 output layer, below it, took 16-17 us a step at batch 64
#: that way against 12 for its gradient alone, and parted the update of the rest into two
#: launches: with it, the MLP's batch-32 epochs took 1.02-1.06x as long.
UPDATE_FUSED = 1 << 16
#: Rows from which, untuned, a batch's step moves the weights in their gradient's GEMM (and at
#: one row); fewer take the two passes, gemm_outer then the update, as the tuner chose at
#: MNIST's batch 32 on a 2-core AVX2 EPYC and on an AVX-512 one (there 591 against 627 us a
#: step; 322 against 349 at batch 16). MLP epochs there taking turns, the same weights at the
#: end: the two passes 1.062-1.075x as fast at batches 10, 16 and 24, 1.016x at 40, and 0.958x
#: at 64.
UPDATE_FUSED_ROWS = 48
#: Inputs from which the fused loop's forward pass sums four rows of W side by side
#: (fc_forward_rows: MNIST's 784-512-10 per example, 142-159 -> 75-92 us); smaller rows run
#: one to a lane (the feedforward example's, 2 and 40 inputs, ran 5% slower four at a time).
FOUR_ROWS = 64


class FullyConnected(Dense):
    """A dense layer.

    Shape: D1 i -> D1 o; a batch (n, i) -> (n, o).
    Parameters: `weights` (o, i) and `bias` (o,), each with its momentum and gradient.
    Initialisation: "scaled" (default) draws both uniformly from [-1/sqrt(i), 1/sqrt(i)], as
        PyTorch's nn.Linear does; "grenade" draws both from [-1, 1], as Grenade does.
    Tape: the input (dW = dy x^T).
    Kernels: one example at a time (per-example training, as the fused loop): fc_forward,
        fc_backward_input, fc_backward_weights (kernels/fully_connected.cl; under
        `update_fused`, gemm_transpose_sums and gemm_outer_update instead); batches: the
        register-blocked GEMMs gemm_dot (y = x W^T + b; from PANEL_ROWS rows, gemm_panels from
        W packed by gemm_pack_panels) and gemm_outer (dW = dy^T x, dx = dy W; dx from W's
        column strips copied by gemm_copy_panels where W is large: `gemm.outer_panel_size`)
        and gemm_transpose_sums (db, and dy^T for dW) of kernels/gemm.cl.
    Buffers: `dy_t` (o, n), dy transposed (in training: batches of n > 1, and one row whose
        weights step in their GEMM, `update_fused`); on GPUs `parts`
        (splits, n, o), the forward's sums over parts of the inputs (`gemm.k_splits`), added
        up in order by gemm_sum_chunks; `panels`, W packed for the forward where
        `gemm.panel_size` says, and for the input delta where `gemm.outer_panel_size` says
        (one buffer: the forward is done with it by then).
    A Relu next to it runs in its launches where `relu_fused` says (a Series asks): one after
    it in the forward's gemm_dot, one before it in the input delta's gemm_outer; the same bits
    as the Relu's own launches, one launch less each way. MNIST's MLP at batch 256 on a 2-core
    Ice Lake Xeon (profiled, 3 runs each): the GEMMs took the same time with the Relu as
    without, and relu_forward and relu_backward's 154-169 us a step (~4%) were gone.
    Under `Step.descend` (fit, train) the weights take the optimiser's step in the GEMM that
    forms their gradient, where `update_fused` says: the gradient is neither stored nor read
    back, and the weights and moments are stepped while the product's block is in hand.
    MNIST's 784-512-10 on a 2-core AVX-512 Xeon, profiled at batch 64: gemm_outer_update
    321-325 us a step against gemm_outer's 215-225 plus the update's 165-176.
    """

    def batch_buffers(self, n: int) -> dict[str, tuple[int, ...]]:
        own = self.inference_buffers(n)
        # The input delta's panels (gemm.outer_panel_size) reuse the forward's buffer.
        panels = max(own.get("panels", (0,))[0], outer_panel_size(self.device, n, self.i,
                                                                  self.o))
        return ({"dy_t": (self.o, n)} if n > 1 or self.update_fused(n) else {}) | own | \
            ({"panels": (panels,)} if panels else {})

    def inference_buffers(self, n: int) -> dict[str, tuple[int, ...]]:
        splits = k_splits(self.device, n, self.o, self.i) if n > 1 else 1
        sizes = {"parts": splits * n * self.o if splits > 1 else 0,
                 "panels": panel_size(self.device, n, self.o, self.i)}
        return {name: (size,) for name, size in sizes.items() if size}

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weights": (self.o, self.i), "bias": (self.o,)}

    def initial_parameters(self, rng: np.random.Generator, init: str) -> dict[str, np.ndarray]:
        return {name: initial_values(rng, init, shape, self.i, self.o)
                for name, shape in (("weights", (self.o, self.i)), ("bias", (self.o,)))}

    def relu_fused(self, n: int) -> bool:
        """Whether a batch of `n` rows runs a Relu next to this layer in this layer's launches
        (`forward` and `input_delta` with `relu`): batches of the register-blocked GEMMs."""
        return n > 1 and self.device.gemm == "registers"

    def forward(self, n: int, x: cl_array.Array, y: cl_array.Array, buffers: Buffers,
                training: bool, relu: cl_array.Array | None = None) -> list[Launch]:
        """With `relu` (where `relu_fused`), the output of a Relu after this layer too."""
        assert relu is None or self.relu_fused(n), "the Relu runs in batches' GEMMs only"
        p, device = self.parameters, self.device
        if n == 1:
            return [device.launch("fc_forward", (self.o, n), n, self.i, self.o,
                                  p["weights"], p["bias"], x, y)]
        # In dot form, as W is stored, but from PANEL_ROWS rows and blocks.WIDE outputs on CPUs of
        # 16-float vectors (gemm.panel_size): there W is packed into k-major panels of 4 VW rows
        # (gemm_pack_panels), then gemm_panels sums from them. Taking turns in one process on a
        # 2-core AVX-512 Xeon (PoCL "skylake-avx512"), float32, packing included, against gemm_dot's
        # tuned block: 1024^3 0.81x the time (264 GFLOP/s against 215), 4096 / 1024 / 512 / 256 x
        # 512 x 784 0.79x / 0.83x / 0.89x / 1.03x (inside MNIST's training steps the panels gain at
        # 256 rows: see gemm.PANEL_ROWS); float64 0.77-0.91x; at 10 outputs 1.8-2.5x (a panel mostly
        # padding).
        # MNIST's evaluate over 10k samples, profiled: the first layer's products 33.8-35.6 ms
        # against 41.5-41.7, the packing 1.3-1.8 ms. (A packing moving values one at a time, 1.1 ms
        # at 1024^2 against 0.32-0.40 for VW x VW blocks transposed in registers, had left the
        # panels at 0.94-1.08x gemm_dot's rate; on a 2-core EPYC the packing now stores each panel
        # row's values one at a time, 0.67-0.79x the transposes' time.) The outer form on transposed
        # operands, y^T = W x^T, ran at 272-294 GFLOP/s at 64..256 x 784 x 512 (fastest block)
        # against gemm_dot's 215-242, but with the transposes of x and y it took 1.04-1.10x
        # gemm_dot's time (chains of launches, medians of 7). Inside MNIST's batch-256 step on a
        # 2-core AVX-512 EPYC the packing takes 190-330 us (W, just stepped, comes from L3; 100-140
        # alone), and neither way of avoiding its pass paid: the weights' step (gemm_outer_update)
        # storing W's panels too took ~300 us longer (scalar or transposed-vector stores alike),
        # epochs 1.03-1.04x; each gemm_panels work-group packing its own panel first took as long as
        # both launches; gemm_dot from W in place, 1.00x. Nor would W kept transposed, (i, o): on a
        # 2-core AVX2 EPYC (each at its fastest block, taking turns) y = x W^T as gemm_outer from it
        # took 3,566 us at 256 x 512 x 784 against gemm_dot's 2,943, and dW^T = x^T dy stepping the
        # weights (x read through its strides) 4,057 against dW's 3,410 (each with
        # gemm_transpose_sums' launch).
        return gemm_forward(device, n, self.o, self.i, x, p["weights"], p["bias"], y,
                            k_splits(device, n, self.o, self.i), buffers.get("parts"), relu,
                            buffers["panels"] if panel_size(device, n, self.o, self.i) else None)

    def update_fused(self, n: int) -> bool:
        """Whether `n` rows' step moves the weights in their gradient's GEMM (`backward` with
        `update`): the register-blocked GEMMs, at least VW inputs, and UPDATE_FUSED weights, as
        the tuner chose for (o, i, n) (blocks.chosen "update_fused"), untuned from
        UPDATE_FUSED_ROWS rows; and one row (a rank-1 gemm_outer_update, the bits of
        fc_backward_weights and the update's: a train call on one MNIST-MLP example by the
        layers' kernels took 0.58x the time, taking turns, and one with Dropout, which has no
        fused loop, 0.59x)."""
        return self.device.gemm == "registers" and \
            self.i >= vector_width(self.device) and self.i * self.o >= UPDATE_FUSED and \
            blocks.chosen(self.device, "update_fused", (self.o, self.i, n),
                          n == 1 or n >= UPDATE_FUSED_ROWS)

    def backward(self, n: int, x: cl_array.Array, y: cl_array.Array, dy: cl_array.Array,
                 dx: cl_array.Array | None, buffers: Buffers,
                 relu: cl_array.Array | None = None, update: bool = False) -> list[Launch]:
        """With `relu` (where `relu_fused`): see `input_delta`. With `update` (where
        `update_fused`): the weights take the optimiser's step in their gradient's GEMM
        (`gemm.gemm_outer_update`, its values set per call), after the input delta has used
        them, and no gradient of theirs is stored."""
        g, device = self.gradients, self.device
        if n == 1 and not update:
            return [device.launch("fc_backward_weights", (self.i + 1, self.o), n, self.i,
                                  self.o, x, dy, g["weights"], g["bias"])
                    ] + self.input_delta(n, dy, dx, buffers, relu)
        # (x copied into strips of 32 columns, each strip's rows contiguous, ran dW 1.05x as
        # fast at batch 128 and 1.21x at 256 on a 2-core Ice Lake Xeon, before the copy's
        # cost: at most ~4% of an MLP's epoch, so not done. dW^T = x^T dy, x read through its
        # strides, ran at 0.79x.)
        dy_t = buffers["dy_t"]
        weights = (gemm_outer_update(device, self.o, self.i, n, dy_t, n, 1, x,
                                     *(role["weights"] for role in (
                                         self.parameters, self.momentum, self.second)))
                   if update else gemm_outer(device, self.o, self.i, n, dy_t, n, 1, x,
                                             g["weights"]))
        return [gemm_transpose_sums(device, n, self.o, dy, dy_t, g["bias"]),
                *self.input_delta(n, dy, dx, buffers, relu), weights]

    def backward_sequence(self, steps: int, batch: int, x: cl_array.Array, y: cl_array.Array,
                          dy: cl_array.Array, dx: cl_array.Array | None, buffers: Buffers,
                          gradients: bool = True, relu: cl_array.Array | None = None,
                          update: bool = False) -> list[Launch]:
        if gradients:
            return self.backward(steps * batch, x, y, dy, dx, buffers, relu, update)
        return self.input_delta(steps * batch, dy, dx, buffers, relu)

    def input_delta(self, n: int, dy: cl_array.Array, dx: cl_array.Array | None,
                    buffers: Buffers, relu: cl_array.Array | None = None) -> list[Launch]:
        """The launches writing dx = dy W (n rows), none if dx is None: one gemm_outer, or
        from W's column strips copied into `panels` (of `buffers`) where
        `gemm.outer_panel_size` says. With `relu` (where `relu_fused`), the input or the output
        of a Relu before this layer (the same sign), whose input delta dx then is."""
        assert relu is None or self.relu_fused(n), "the Relu runs in batches' GEMMs only"
        w, device = self.parameters["weights"], self.device
        if dx is None:
            return []
        if n == 1:
            return [device.launch("fc_backward_input", (self.i, n), n, self.i, self.o, w, dy,
                                  dx)]
        if outer_panel_size(device, n, self.i, self.o):
            return gemm_outer_panels(device, n, self.i, self.o, dy, self.o, 1, w, self.i, dx,
                                     buffers["panels"], relu)
        return [gemm_outer(device, n, self.i, self.o, dy, self.o, 1, w, dx, relu=relu)]

    def factors(self, steps: int, batch: int, x: cl_array.Array, y: cl_array.Array,
                dy: cl_array.Array, buffers: Buffers) -> list[Factor]:
        return [Factor("weights", dy, self.o, x, self.i), Factor("bias", dy, self.o)]

    def fused_args(self, i: int) -> list[tuple[str, cl_array.Array]]:
        p, m, v = self.parameters, self.momentum, self.second
        return [(f"global REAL *{name}{i}", value) for name, value in (
            ("w", p["weights"]), ("b", p["bias"]), ("mw", m["weights"]), ("mb", m["bias"]),
            ("vw", v["weights"]), ("vb", v["bias"]))]

    def fused_forward(self, i: int) -> str:
        # CPU: four rows per lane from FOUR_ROWS inputs on, else a row per lane. GPU: a group
        # of lanes per row, reading it in consecutive words, its partial sums added in local
        # memory.
        rows = (f"for (int o = lid * 4; o < n{i + 1}; o += nl * 4)\n"
                f"    fc_forward_rows(w{i}, b{i}, a{i}, n{i}, n{i + 1}, o, a{i + 1});"
                if self.i >= FOUR_ROWS else
                f"for (int o = lid; o < n{i + 1}; o += nl) "
                f"a{i + 1}[o] = fc_forward_at(w{i}, b{i}, a{i}, n{i}, o);")
        return f"""#if FUSED_COALESCED
for (int o0 = 0; o0 < n{i + 1}; o0 += nl / FUSED_GROUP) {{
    const int o = o0 + lid / FUSED_GROUP, lane = lid % FUSED_GROUP;
    REAL s = 0;
    if (o < n{i + 1})
        for (int k = lane; k < n{i}; k += FUSED_GROUP) s += w{i}[(size_t)o * n{i} + k] * a{i}[k];
    fused_sums[lid] = s;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int h = FUSED_GROUP / 2; h > 0; h /= 2) {{
        if (lane < h) fused_sums[lid] += fused_sums[lid + h];
        barrier(CLK_LOCAL_MEM_FENCE);
    }}
    if (lane == 0 && o < n{i + 1}) a{i + 1}[o] = fused_sums[lid] + b{i}[o];
}}
#else
{rows}
#endif"""

    def fused_backward(self, i: int, input_delta: bool) -> str:
        # dx from the weights before this example's update, as Grenade's backward pass does.
        # CPU: row by row of W, vectors of inputs; GPU: an input per lane. The same sums.
        dx = (f"""#if FUSED_COALESCED
for (int j = lid; j < n{i}; j += nl)
    d{i}[j] = fc_backward_input_at(w{i}, d{i + 1}, n{i}, n{i + 1}, j);
#else
gemm_row_product(d{i + 1}, 1, n{i + 1}, w{i}, n{i}, d{i});
#endif
barrier(CLK_GLOBAL_MEM_FENCE);
""") if input_delta else ""
        # The update: CPU, a row per lane; GPU, lanes over consecutive weights. Rows of up to
        # UNROLLED_ROW inputs unrolled: their loop over rows then vectorises (the feedforward
        # example, 2 and 10 inputs: 0.34 -> 0.30 us per example). The lanes' counter is an int
        # (a buffer holds fewer than 2**31 values): with a size_t, PoCL 3.1 ran no lane of a
        # work-group of 16 or more through the loop over one weight (after a barrier, bounded
        # by 1), so a FullyConnected(1, 1) never learned.
        unroll = "#pragma unroll\n    " if self.i <= UNROLLED_ROW else ""
        return dx + f"""#if FUSED_COALESCED
for (int at = lid; at < n{i + 1} * n{i}; at += nl)
    optimizer_at(opt, decay, fc_weight_grad_at(a{i}, d{i + 1}, 1, n{i}, n{i + 1}, at / n{i},
                 at % n{i}), w{i}, mw{i}, vw{i}, at);
#else
for (int o = lid; o < n{i + 1}; o += nl)
    {unroll}for (int j = 0; j < n{i}; ++j)
        optimizer_at(opt, decay, fc_weight_grad_at(a{i}, d{i + 1}, 1, n{i}, n{i + 1}, o, j),
                     w{i}, mw{i}, vw{i}, (size_t)o * n{i} + j);
#endif
for (int o = lid; o < n{i + 1}; o += nl)
    optimizer_at(opt, decay, fc_bias_grad_at(d{i + 1}, 1, n{i + 1}, o), b{i}, mb{i}, vb{i}, o);"""

    def window_form(self, i: int, input_delta: bool) -> WindowForm:
        # Every step's rows from the weights before the window; then each weight takes the
        # window's per-step gradients d{i+1}[t, o] a{i}[t, j] in time order.
        dx = (f"for (int q = lid; q < T * n{i}; q += nl) d{i}[q] = fc_backward_input_at("
              f"w{i}, d{i + 1} + (size_t)(q / n{i}) * n{i + 1}, n{i}, n{i + 1}, q % n{i});"
              ) if input_delta else ""
        return WindowForm(
            self.fused_args(i), {},
            f"for (int q = lid; q < T * n{i + 1}; q += nl) a{i + 1}[q] = fc_forward_at("
            f"w{i}, b{i}, a{i} + (size_t)(q / n{i + 1}) * n{i}, n{i}, q % n{i + 1});",
            dx,
            f"""for (size_t q = lid; q < (size_t)n{i + 1} * n{i}; q += nl)
    recurrent_ordered_at(opt, decay, T, d{i + 1} + q / n{i}, n{i + 1}, a{i} + q % n{i}, n{i},
                         w{i}, mw{i}, vw{i}, q);
for (int q = lid; q < n{i + 1}; q += nl)
    recurrent_ordered_at(opt, decay, T, d{i + 1} + q, n{i + 1}, one, 0, b{i}, mb{i}, vb{i}, q);""")
