"""Convolution: Grenade's cross-correlation of channel-major planes, no bias. Ports
Grenade.Layers.Convolution.

Shape: D2 rows cols (one channel) or D3 rows cols channels -> D3 out_rows out_cols filters (D2
when the input is D2 and there is one filter), "valid, exact fit" as in Grenade:
(out_rows - 1) * stride_rows = rows - kernel_rows, and the same for columns; sizes that do not
tile the input exactly are a ShapeError when the network is built.
Parameters: `kernel` K, (kernel_rows * kernel_cols * channels, filters): row c*kh*kw + a*kw + b
multiplies input x[c, i*sh + a, j*sw + b] — Grenade's K, so its model files map onto ours.
Tape: the input. Kernels: conv_forward, conv_backward_input (a gather: overlaps add up
without atomics), conv_backward_kernel (kernels/convolution.cl).
Initialisation: "scaled", uniform +-1/sqrt(kh*kw*channels); "grenade", uniform +-1.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyopencl.array as cl_array

from grenade_py.device import Launch
from grenade_py.errors import ShapeError
from grenade_py.layers.base import Buffers, Layer
from grenade_py.shapes import D2, D3, Shape


def positive_ints(owner: str, **values: Any) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{owner} {name} must be a positive int, got {value!r}")


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
    """Cross-correlation with `filters` kernels of kernel_rows x kernel_cols x channels."""

    def __init__(self, channels: int, filters: int, kernel_rows: int, kernel_cols: int,
                 stride_rows: int, stride_cols: int) -> None:
        super().__init__()
        positive_ints(type(self).__name__, channels=channels, filters=filters,
                      kernel_rows=kernel_rows, kernel_cols=kernel_cols, stride_rows=stride_rows,
                      stride_cols=stride_cols)
        self.channels, self.filters = int(channels), int(filters)
        self.kh, self.kw, self.sh, self.sw = (int(v) for v in (kernel_rows, kernel_cols,
                                                              stride_rows, stride_cols))

    def spec(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "channels": self.channels, "filters": self.filters,
                "kernel_rows": self.kh, "kernel_cols": self.kw, "stride_rows": self.sh,
                "stride_cols": self.sw}

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
        bound = 1.0 if init == "grenade" else 1.0 / np.sqrt(rows)
        return {"kernel": rng.uniform(-bound, bound, size=(rows, self.filters))}

    def geometry(self) -> list[int]:
        """The kernels' shape arguments: C, H, W, F, kh, kw, sh, sw, OH, OW."""
        channels, rows, cols = planes(self.in_shape)
        _, out_rows, out_cols = planes(self.out_shape(self.in_shape))
        return [channels, rows, cols, self.filters, self.kh, self.kw, self.sh, self.sw,
                out_rows, out_cols]

    def forward(self, n: int, x: cl_array.Array, y: cl_array.Array, buffers: Buffers,
                training: bool) -> list[Launch]:
        g = self.geometry()
        return [self.device.launch("conv_forward", (g[8] * g[9], -(-g[3] // 4), n), n, *g, x,
                                   self.parameters["kernel"], y)]

    def backward(self, n: int, x: cl_array.Array, y: cl_array.Array, dy: cl_array.Array,
                 dx: cl_array.Array | None, buffers: Buffers) -> list[Launch]:
        g, kernel = self.geometry(), self.parameters["kernel"]
        launches = [self.device.launch("conv_backward_kernel", (g[3], g[0] * g[4] * g[5]), n,
                                       *g, x, dy, self.gradients["kernel"])]
        if dx is not None:
            launches.append(self.device.launch("conv_backward_input", (g[1] * g[2], g[0], n), n,
                                               *g, dy, kernel, dx))
        return launches
