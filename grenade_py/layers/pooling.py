"""Pooling: max pooling per channel plane. Ports Grenade.Layers.Pooling.

Shape: D2 or D3 rows cols channels -> out_rows out_cols (channels), exact fit as Convolution:
(out_rows - 1) * stride_rows = rows - kernel_rows. The first strictly greatest value in
row-major window order wins a tie; windows that overlap (stride < kernel) add their gradients.
Tape: the input's picked offsets, a per-batch buffer. Kernels: pool_forward (an output per
work-item), and pool_backward (a gather, for overlapping windows) or pool_backward_cells
(windows apart: an input row per work-item); for
2 x 2 windows every 2, pool2_forward and pool2_backward, vectorised by hand
(kernels/pooling.cl). In the fused per-example loop: those kernels' row functions, chosen as
the kernels are (pool2_forward_row, pool_forward_at; pool2_backward_row,
pool_backward_cells_row, pool_backward_at), the picked offsets in the loop's own memory.
"""
from __future__ import annotations

from typing import Any

import pyopencl.array as cl_array

from grenade_py.device import Launch
from grenade_py.layers.arguments import positive_ints
from grenade_py.layers.base import Buffers, Layer
from grenade_py.layers.convolution import planes, windows
from grenade_py.shapes import D2, D3, Shape, size


class Pooling(Layer):
    """Max pooling over kernel_rows x kernel_cols windows every (stride_rows, stride_cols)."""

    def __init__(self, kernel_rows: int, kernel_cols: int, stride_rows: int,
                 stride_cols: int) -> None:
        super().__init__()
        positive_ints("Pooling", kernel_rows=kernel_rows, kernel_cols=kernel_cols,
                      stride_rows=stride_rows, stride_cols=stride_cols)
        self.kh, self.kw, self.sh, self.sw = (int(v) for v in (kernel_rows, kernel_cols,
                                                              stride_rows, stride_cols))

    def spec(self) -> dict[str, Any]:
        return {"type": "Pooling", "kernel_rows": self.kh, "kernel_cols": self.kw,
                "stride_rows": self.sh, "stride_cols": self.sw}

    def __repr__(self) -> str:
        return f"Pooling {self.kh} {self.kw} {self.sh} {self.sw}"

    def out_shape(self, in_shape: Shape) -> Shape:
        channels, rows, cols = planes(in_shape)
        out_rows = windows(rows, self.kh, self.sh, "rows")
        out_cols = windows(cols, self.kw, self.sw, "cols")
        return D3(out_rows, out_cols, channels) if isinstance(in_shape, D3) else D2(out_rows,
                                                                                  out_cols)

    def batch_buffers(self, n: int) -> dict[str, tuple[int, ...]]:
        return {"picked": (n, size(self.out_shape(self.in_shape)))}

    def geometry(self) -> list[int]:
        channels, rows, cols = planes(self.in_shape)
        _, out_rows, out_cols = planes(self.out_shape(self.in_shape))
        return [rows, cols, self.kh, self.kw, self.sh, self.sw, out_rows, out_cols]

    def halves(self) -> bool:
        """Whether the windows are 2 x 2 every 2, which have kernels vectorised by hand."""
        return (self.kh, self.kw, self.sh, self.sw) == (2, 2, 2, 2)

    def forward(self, n: int, x: cl_array.Array, y: cl_array.Array, buffers: Buffers,
                training: bool) -> list[Launch]:
        count, g = n * planes(self.in_shape)[0], self.geometry()
        if self.halves():
            return [self.device.launch("pool2_forward", (count * g[6],), count, g[6], g[7], x,
                                       y, buffers["picked"])]
        return [self.device.launch("pool_forward", (count * g[6] * g[7],), count, *g, x, y,
                                   buffers["picked"])]

    def backward(self, n: int, x: cl_array.Array, y: cl_array.Array, dy: cl_array.Array,
                 dx: cl_array.Array | None, buffers: Buffers) -> list[Launch]:
        if dx is None:
            return []
        count, g = n * planes(self.in_shape)[0], self.geometry()
        if self.halves():
            return [self.device.launch("pool2_backward", (count * g[6],), count, g[6], g[7],
                                       buffers["picked"], dy, dx)]
        if self.sh >= self.kh and self.sw >= self.kw:  # windows apart: scatter each one's cell
            return [self.device.launch("pool_backward_cells", (count * g[0],), count, *g,
                                       buffers["picked"], dy, dx)]
        return [self.device.launch("pool_backward", (g[0] * g[1], count), count, *g,
                                   buffers["picked"], dy, dx)]

    def fused_scratch(self) -> int:
        return size(self.out_shape(self.in_shape))

    def fused_forward(self, i: int) -> str:
        g = self.geometry()
        rows, shape = planes(self.in_shape)[0] * g[6], ", ".join(str(v) for v in g)
        if self.halves():
            return (f"for (int g = lid; g < {rows}; g += nl) "
                    f"pool2_forward_row(g, {g[7]}, a{i}, a{i + 1}, s{i});")
        return (f"for (int o = lid; o < {rows * g[7]}; o += nl) "
                f"pool_forward_at(o, {shape}, a{i}, a{i + 1}, s{i});")

    def fused_backward(self, i: int, input_delta: bool) -> str:
        # As `backward` chooses: by hand for 2 x 2, each window's cells where they are apart,
        # else a gather.
        if not input_delta:
            return ""
        g = self.geometry()
        channels, shape, rows = planes(self.in_shape)[0], ", ".join(str(v) for v in g), g[6]
        if self.halves():
            return (f"for (int g = lid; g < {channels * rows}; g += nl) "
                    f"pool2_backward_row(g, {g[7]}, s{i}, d{i + 1}, d{i});")
        if self.sh >= self.kh and self.sw >= self.kw:
            return (f"for (int g = lid; g < {channels * g[0]}; g += nl) "
                    f"pool_backward_cells_row(g, {shape}, s{i}, d{i + 1}, d{i});")
        area = g[0] * g[1]
        return (f"for (int p = lid; p < {channels * area}; p += nl) d{i}[p] = "
                f"pool_backward_at(p % {area}, p / {area}, {shape}, s{i}, d{i + 1});")
