"""Deconvolution: the transpose of Convolution (Grenade's Deconvolution), no bias. Ports
Grenade.Layers.Deconvolution.

Shape: D2 or D3 rows cols channels -> D3 ((rows - 1) * stride_rows + kernel_rows)
((cols - 1) * stride_cols + kernel_cols) filters (D2 for a D2 input and one filter).
Parameters: `kernel` K, (kernel_rows * kernel_cols * filters, channels): the kernel of the
Convolution from `filters` channels to `channels` that this layer transposes; output
y[f, i*sh + a, j*sw + b] gets K[f*kh*kw + a*kw + b, c] x[c, i, j] from every input.
Tape: the input. Kernels: that Convolution's, in transposed roles: its input delta is this
layer's forward pass, its forward pass this layer's input delta, and the kernel gradient has
x and dy swapped; in the fused per-example loop, through the patches, as the batched ones.
"""
from __future__ import annotations

import numpy as np
import pyopencl.array as cl_array

from grenade_py.device import Launch
from grenade_py.gemm import rows_product
from grenade_py.layers.arguments import initial_values
from grenade_py.layers.base import Buffers
from grenade_py.layers.convolution import Convolution, planes
from grenade_py.layers.pad import Pad


class Deconvolution(Convolution):
    """The transposed convolution with `filters` outputs per position."""

    # In the fused per-example loop: the transposed Convolution's products through its
    # patches (c kh kw, positions), in s{i}, as the batched kernels compute them. Forward: the
    # patches K x (gemm_rows_product, four patch entries per lane), put back onto the output a
    # row's phase of columns at a time (conv_col2im_phase: conv_col2im's sums, 8 side by
    # side). Backward: dy's patches copied out (conv_im2col_entry); the input delta K^T patches
    # (gemm_rows_product, four channels per lane); K's gradient, the patches times x
    # transposed (gemm_rows_product, four rows of K per lane: each entry summed over the
    # positions in order), then its update in one loop over K.
    def fused_scratch(self) -> int:
        """The patches and 8 values conv_col2im_phase may read past them, x transposed, K's
        gradient."""
        c, _, _, f, kh, kw, _, _, oh, ow = self.geometry()
        r, p = c * kh * kw, oh * ow
        return r * p + 8 + p * f + r * f

    def fused_forward(self, i: int) -> str:
        c, h, w, f, kh, kw, sh, sw, oh, ow = self.geometry()
        r, p = c * kh * kw, oh * ow
        return (rows_product(r, f"k{i}", f, 1, f, f"a{i}", p, f"s{i}", p) +
                f"for (int q = lid; q < {c * h * sw}; q += nl) conv_col2im_phase(q / {sw} % {h}, "
                f"q % {sw}, {w}, {kh}, {kw}, {sh}, {sw}, {oh}, {ow}, "
                f"s{i} + (size_t)q / {h * sw} * {kh * kw * p}, a{i + 1} + (size_t)q / {sw} * {w});")

    def fused_backward(self, i: int, input_delta: bool,
                       needed: tuple[int, int, int, int] | None = None) -> str:
        c, h, w, f, kh, kw, sh, sw, oh, ow = self.geometry()
        r, p = c * kh * kw, oh * ow
        patches = (f"for (int r = lid; r < {r}; r += nl) conv_im2col_entry(d{i + 1} + "
                   f"(r / {kh * kw} * {h} + r / {kw} % {kh}) * {w} + r % {kw}, {oh}, {ow}, "
                   f"{sh * w}, {sw}, s{i} + (size_t)r * {p});\nbarrier(CLK_GLOBAL_MEM_FENCE);\n")
        dx = rows_product(f, f"k{i}", 1, f, r, f"s{i}", p, f"d{i}", p) if input_delta else ""
        xt, grads = r * p + 8, r * p + 8 + p * f  # x transposed (p, f), K's gradient
        return (f"for (int q = lid; q < {p * f}; q += nl) s{i}[{xt} + q] = "
                f"a{i}[q % {f} * {p} + q / {f}];\n" + patches + dx +
                rows_product(r, f"s{i}", p, 1, p, f"s{i} + {xt}", f, f"s{i} + {grads}", f) +
                f"for (int q = lid; q < {r * f}; q += nl) optimizer_at(opt, decay, "
                f"s{i}[{grads} + q], k{i}, mk{i}, vk{i}, q);")

    def out_planes(self, rows: int, cols: int) -> tuple[int, int]:
        return (rows - 1) * self.sh + self.kh, (cols - 1) * self.sw + self.kw

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"kernel": (self.kh * self.kw * self.filters, self.channels)}

    def initial_parameters(self, rng: np.random.Generator, init: str) -> dict[str, np.ndarray]:
        rows = self.kh * self.kw * self.filters
        return {"kernel": initial_values(rng, init, (rows, self.channels),
                                         self.kh * self.kw * self.channels, rows)}

    def geometry(self) -> list[int]:
        """The transposed Convolution's shape arguments: its input is this layer's output."""
        channels, rows, cols = planes(self.in_shape)
        _, out_rows, out_cols = planes(self.out_shape(self.in_shape))
        return [self.filters, out_rows, out_cols, channels, self.kh, self.kw, self.sh, self.sw,
                rows, cols]

    def inference_buffers(self, n: int) -> dict[str, tuple[int, ...]]:
        """The forward pass is the transposed Convolution's input delta: its patches."""
        return self.batch_buffers(n)

    def delta_buffers(self) -> set[str]:
        return set()  # (the forward pass is the transposed Convolution's input delta)

    def forward(self, n: int, x: cl_array.Array, y: cl_array.Array, buffers: Buffers,
                training: bool) -> list[Launch]:
        return self.input_delta(n, x, y, buffers)

    def backward(self, n: int, x: cl_array.Array, y: cl_array.Array, dy: cl_array.Array,
                 dx: cl_array.Array | None, buffers: Buffers, below: Pad | None = None
                 ) -> list[Launch]:
        """(`below` is never given: the input delta is the transposed convolution's forward
        pass, which takes the Pad's backward pass in no part.)"""
        launches = self.kernel_gradient(n, dy, x, buffers)  # copies dy's patches out, if any
        if dx is not None:
            launches += self.convolve(n, dy, dx, buffers, patched=True)
        return launches
