"""Deconvolution: the transpose of Convolution (Grenade's Deconvolution), no bias. Ports
Grenade.Layers.Deconvolution.

Shape: D2 or D3 rows cols channels -> D3 ((rows - 1) * stride_rows + kernel_rows)
((cols - 1) * stride_cols + kernel_cols) filters (D2 for a D2 input and one filter).
Parameters: `kernel` K, (kernel_rows * kernel_cols * filters, channels): the kernel of the
Convolution from `filters` channels to `channels` that this layer transposes; output
y[f, i*sh + a, j*sw + b] gets K[f*kh*kw + a*kw + b, c] x[c, i, j] from every input.
Tape: the input. Kernels: that Convolution's, in transposed roles: its input delta is this
layer's forward pass, its forward pass this layer's input delta, and the kernel gradient has
x and dy swapped; so are its column-by-column forms in the fused per-example loop.
"""
from __future__ import annotations

import numpy as np
import pyopencl.array as cl_array

from grenade_py.device import Launch
from grenade_py.layers.arguments import initial_values
from grenade_py.layers.base import Buffers
from grenade_py.layers.convolution import Convolution, planes


class Deconvolution(Convolution):
    """The transposed convolution with `filters` outputs per position."""

    # In the fused per-example loop, the transposed Convolution's forms for any stride, in
    # their transposed roles (its blocks would compute Convolution's own products).
    def fused_scratch(self) -> int:
        return 0

    def fused_forward(self, i: int) -> str:
        return self._fused_scatter(i, f"a{i}", f"a{i + 1}")

    def fused_backward(self, i: int, input_delta: bool,
                       needed: tuple[int, int, int, int] | None = None) -> str:
        dx = self._fused_rows(i, f"d{i + 1}", f"d{i}") + "\nbarrier(CLK_GLOBAL_MEM_FENCE);\n" \
            if input_delta else ""
        return dx + self._fused_kernel_grads(i, f"d{i + 1}", f"a{i}")

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

    def forward(self, n: int, x: cl_array.Array, y: cl_array.Array, buffers: Buffers,
                training: bool) -> list[Launch]:
        return self.input_delta(n, x, y, buffers)

    def backward(self, n: int, x: cl_array.Array, y: cl_array.Array, dy: cl_array.Array,
                 dx: cl_array.Array | None, buffers: Buffers) -> list[Launch]:
        launches = self.kernel_gradient(n, dy, x, buffers)  # copies dy's patches out, if any
        if dx is not None:
            launches += self.convolve(n, dy, dx, buffers, patched=True)
        return launches
