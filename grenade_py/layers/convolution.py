"""Convolution: Grenade's cross-correlation of channel-major planes, no bias. Ports
Grenade.Layers.Convolution.

Shape: D2 rows cols (one channel) or D3 rows cols channels -> D3 out_rows out_cols filters (D2
when the input is D2 and there is one filter), "valid, exact fit" as in Grenade:
(out_rows - 1) * stride_rows = rows - kernel_rows, and the same for columns; sizes that do not
tile the input exactly are a ShapeError when the network is built.
Parameters: `kernel` K, (kernel_rows * kernel_cols * channels, filters): row c*kh*kw + a*kw + b
multiplies input x[c, i*sh + a, j*sw + b] — Grenade's K, so its model files map onto ours.
Tape: the input's patches (im2col, as columns: R = kh*kw*channels rows by batch x positions),
a per-batch buffer. Kernels: conv_im2col and conv_col2im (a gather: overlaps add up without
atomics, kernels/convolution.cl), swap_axes (kernels/data.cl), and FullyConnected's GEMMs
along the batch x positions axis: y = K^T patches; dK^T = dy patches^T; the input delta's
patches = K dy, put back by col2im. With dy and y as (F, batch, positions).
Initialisation: "scaled", uniform +-1/sqrt(kh*kw*channels); "grenade", uniform +-1.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyopencl.array as cl_array

from grenade_py.device import Launch
from grenade_py.errors import ShapeError
from grenade_py.gemm import gemm_dot, gemm_outer
from grenade_py.layers.base import Buffers, Layer, chosen_init, initial_values, positive_ints
from grenade_py.shapes import D2, D3, Shape


def planes(shape: Shape) -> tuple[int, int, int]:
    """(channels, rows, cols) of a D2 (one channel) or D3 shape; ShapeError for D1."""
    if isinstance(shape, D3):
        return shape.channels, shape.rows, shape.cols
    if isinstance(shape, D2):
        return 1, shape.rows, shape.cols
    raise ShapeError("takes D2 or D3")


def windows(size: int, kernel: int, stride: int, what: str) -> int:
    """How many windows of `kernel` every `stride` tile `size` exactly (Grenade's exact fit)."""
    if size < kernel or (size - kernel) % stride:
        raise ShapeError(f"needs (out - 1) * {stride} = {what} - {kernel} for its "
                         f"{kernel}-wide windows every {stride}, and {what} = {size} gives none")
    return (size - kernel) // stride + 1


class Convolution(Layer):
    """Cross-correlation with `filters` kernels of kernel_rows x kernel_cols x channels;
    `init` draws the kernel as that one of INITS says instead of as the network's `init`."""

    def __init__(self, channels: int, filters: int, kernel_rows: int, kernel_cols: int,
                 stride_rows: int, stride_cols: int, init: str | None = None) -> None:
        super().__init__()
        self.init = chosen_init(type(self).__name__, init)
        positive_ints(type(self).__name__, channels=channels, filters=filters,
                      kernel_rows=kernel_rows, kernel_cols=kernel_cols, stride_rows=stride_rows,
                      stride_cols=stride_cols)
        self.channels, self.filters = int(channels), int(filters)
        self.kh, self.kw, self.sh, self.sw = (int(v) for v in (kernel_rows, kernel_cols,
                                                              stride_rows, stride_cols))

    def spec(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "channels": self.channels, "filters": self.filters,
                "kernel_rows": self.kh, "kernel_cols": self.kw, "stride_rows": self.sh,
                "stride_cols": self.sw} | ({} if self.init is None else {"init": self.init})

    def __repr__(self) -> str:
        return (f"{type(self).__name__} {self.channels} {self.filters} {self.kh} {self.kw} "
                f"{self.sh} {self.sw}")

    def out_shape(self, in_shape: Shape) -> Shape:
        channels, rows, cols = planes(in_shape)
        if channels != self.channels:
            raise ShapeError(f"takes {self.channels} channels")
        out_rows, out_cols = self.out_planes(rows, cols)
        if isinstance(in_shape, D2) and self.filters == 1:
            return D2(out_rows, out_cols)
        return D3(out_rows, out_cols, self.filters)

    def out_planes(self, rows: int, cols: int) -> tuple[int, int]:
        """The output planes' rows and cols for input planes of rows x cols."""
        return windows(rows, self.kh, self.sh, "rows"), windows(cols, self.kw, self.sw, "cols")

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"kernel": (self.kh * self.kw * self.channels, self.filters)}

    def initial_parameters(self, rng: np.random.Generator, init: str) -> dict[str, np.ndarray]:
        rows = self.kh * self.kw * self.channels
        return {"kernel": initial_values(rng, init, (rows, self.filters), rows,
                                         self.kh * self.kw * self.filters)}

    def geometry(self) -> list[int]:
        """The convolution's shape arguments: C, H, W, F, kh, kw, sh, sw, OH, OW."""
        channels, rows, cols = planes(self.in_shape)
        _, out_rows, out_cols = planes(self.out_shape(self.in_shape))
        return [channels, rows, cols, self.filters, self.kh, self.kw, self.sh, self.sw,
                out_rows, out_cols]

    def batch_buffers(self, n: int) -> dict[str, tuple[int, ...]]:
        c, h, w, f, kh, kw, _, sw, oh, ow = self.geometry()
        if c * h * w >= 2**24:  # the offsets are exact in float32: checked before allocating
            raise ShapeError(f"takes samples of under 2^24 values, not {c * h * w}")
        return {"patches": (c * kh * kw, n * oh * ow), "product": (f, n * oh * ow),
                "zeros": (f,), "offsets": (c * kh * kw, 1 if sw == 1 else oh * ow)}

    def _swap(self, a: int, b: int, k: int, src: cl_array.Array,
              dst: cl_array.Array) -> Launch:
        """dst (b, a, k) = src (a, b, k) with its first two axes swapped."""
        return self.device.launch("swap_axes", (k, b, a), a, b, k, src, dst)

    def setup(self, n: int, buffers: Buffers) -> list[Launch]:
        """The map of patch offsets that im2col gathers through, once per batch size (with
        stride 1, one offset per patch entry: each output row's inputs are consecutive)."""
        c, h, w, _, kh, kw, sh, sw, oh, ow = self.geometry()
        if sw == 1:
            return [self.device.launch("conv_row_offsets", (c * kh * kw,), c, h, w, kh, kw,
                                       buffers["offsets"])]
        return [self.device.launch("conv_offsets", (oh * ow, c * kh * kw), c, h, w, kh, kw, sh,
                                   sw, oh, ow, buffers["offsets"])]

    def im2col(self, n: int, x: cl_array.Array, buffers: Buffers) -> list[Launch]:
        """x's patches, as the columns of buffers["patches"] (through the map of offsets)."""
        c, h, w, _, kh, kw, sh, sw, oh, ow = self.geometry()
        width, positions = c * kh * kw, oh * ow
        if sw == 1:  # a row copy per (output row, patch entry, sample)
            return [self.device.launch("conv_im2col_rows", (oh, width, n), n, c * h * w,
                                       sh * w, width, oh, ow,
                                       buffers["offsets"], x, buffers["patches"],
                                       local=(8, 8, 1))]
        return [self.device.launch("conv_im2col", (positions, width, n), n, c * h * w, width,
                                   positions, buffers["offsets"], x, buffers["patches"],
                                   local=(32, 1, 1))]

    def patches_times_kernel(self, n: int, y: cl_array.Array, buffers: Buffers) -> list[Launch]:
        """y (channel-major) = K^T x the patches."""
        c, _, _, f, kh, kw, _, _, oh, ow = self.geometry()
        columns = n * oh * ow
        return [gemm_outer(self.device, f, columns, c * kh * kw, self.parameters["kernel"], 1,
                           f, buffers["patches"], buffers["product"]),
                self._swap(f, n, oh * ow, buffers["product"], y)]

    def kernel_gradient(self, n: int, dy: cl_array.Array, buffers: Buffers) -> list[Launch]:
        """dK = the patches x dy^T, straight into K's layout; leaves dy as (F, batch, positions) in
        buffers["product"]."""
        c, _, _, f, kh, kw, _, _, oh, ow = self.geometry()
        width, product = c * kh * kw, buffers["product"]
        return [self._swap(n, f, oh * ow, dy, product),
                gemm_dot(self.device, width, f, n * oh * ow, buffers["patches"], product,
                         buffers["zeros"], self.gradients["kernel"])]

    def input_delta(self, n: int, dy: cl_array.Array | None, dx: cl_array.Array,
                    buffers: Buffers) -> list[Launch]:
        """dx = col2im(K dy), through the patches buffer; dy None: dy is already in
        buffers["product"] (kernel_gradient put it there)."""
        c, h, w, f, kh, kw, sh, sw, oh, ow = self.geometry()
        product, patches = buffers["product"], buffers["patches"]
        launches = [] if dy is None else [self._swap(n, f, oh * ow, dy, product)]
        if sh == sw == 1:
            col2im = self.device.launch("conv_col2im_rows", (n * c * h,), n, c, h, w, kh, kw, oh,
                                        ow, patches, dx)
        else:
            col2im = self.device.launch("conv_col2im", (h * w, n * c), n, c, h, w, kh, kw, sh,
                                        sw, oh, ow, patches, dx)
        return launches + [
            gemm_outer(self.device, c * kh * kw, n * oh * ow, f, self.parameters["kernel"], f, 1,
                       product, patches),
            col2im,
        ]

    def forward(self, n: int, x: cl_array.Array, y: cl_array.Array, buffers: Buffers,
                training: bool) -> list[Launch]:
        return self.im2col(n, x, buffers) + self.patches_times_kernel(n, y, buffers)

    def backward(self, n: int, x: cl_array.Array, y: cl_array.Array, dy: cl_array.Array,
                 dx: cl_array.Array | None, buffers: Buffers) -> list[Launch]:
        launches = self.kernel_gradient(n, dy, buffers)  # the forward pass left x's patches
        if dx is not None:  # then the patches are spent: dx's overwrite them
            launches += self.input_delta(n, None, dx, buffers)
        return launches
