"""Pad and Crop: zeros around each channel's plane, or its edges cut off; each is the other's
backward pass, so they share one kernel (shift_planes, kernels/reshape.cl). Port
Grenade.Layers.Pad and Grenade.Layers.Crop. In the fused per-example loop: shift_row, the
kernel's row function.

Shape: D2 rows cols or D3 rows cols channels; Pad adds `top + bottom` rows and `left + right`
columns, Crop removes them. Arguments in Grenade's order: left, top, right, bottom.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyopencl.array as cl_array

from grenade_py.device import Launch
from grenade_py.errors import ShapeError
from grenade_py.layers.base import Buffers, Layer
from grenade_py.shapes import D2, D3, Shape


def _planes(shape: Shape) -> tuple[int, int, int]:
    """(planes per sample, rows, cols) of a D2 or D3 shape."""
    if isinstance(shape, D3):
        return shape.channels, shape.rows, shape.cols
    assert isinstance(shape, D2)
    return 1, shape.rows, shape.cols


def _resized(shape: Shape, rows: int, cols: int) -> Shape:
    return D3(rows, cols, shape.channels) if isinstance(shape, D3) else D2(rows, cols)


def fused_shift(src: str, dst: str, planes: int, h: int, w: int, oh: int, ow: int, top: int,
                left: int) -> str:
    """Fused-loop statements shifting `planes` planes h x w of `src` into planes oh x ow of
    `dst` as the kernel does, a row per lane (shift_row)."""
    return (f"for (int r = lid; r < {planes * oh}; r += nl) shift_row(r / {oh}, r % {oh}, {h}, "
            f"{w}, {ow}, {top}, {left}, {src}, {dst} + (size_t)r * {ow});")


class Pad(Layer):
    """Zeros around every plane: `left`, `top`, `right`, `bottom` of them."""

    sign = 1

    def __init__(self, left: int, top: int, right: int, bottom: int) -> None:
        super().__init__()
        for name, value in zip(("left", "top", "right", "bottom"), (left, top, right, bottom),
                               strict=True):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{type(self).__name__} {name} must be an int >= 0, "
                                 f"got {value!r}")
        self.left, self.top, self.right, self.bottom = (int(v) for v in (left, top, right,
                                                                         bottom))

    def out_shape(self, in_shape: Shape) -> Shape:
        if not isinstance(in_shape, (D2, D3)):
            raise ShapeError("takes D2 or D3")
        rows = in_shape.rows + self.sign * (self.top + self.bottom)
        cols = in_shape.cols + self.sign * (self.left + self.right)
        if rows < 1 or cols < 1:
            raise ShapeError(f"cuts {self.top + self.bottom} rows and "
                             f"{self.left + self.right} columns, more than it has")
        return _resized(in_shape, rows, cols)

    def spec(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "left": self.left, "top": self.top,
                "right": self.right, "bottom": self.bottom}

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.left} {self.top} {self.right} {self.bottom}"

    def _shift(self, n: int, src: cl_array.Array, dst: cl_array.Array, sign: int,
               src_shape: Shape, dst_shape: Shape) -> Launch:
        planes, h, w = _planes(src_shape)
        _, oh, ow = _planes(dst_shape)
        return self.device.launch("shift_planes", (n * planes * oh,), n * planes, h, w, oh, ow,
                                  sign * self.top, sign * self.left, src, 0, 1, h * w, dst)

    def forward(self, n: int, x: cl_array.Array, y: cl_array.Array, buffers: Buffers,
                training: bool) -> list[Launch]:
        out = self.out_shape(self.in_shape)
        return [self._shift(n, x, y, self.sign, self.in_shape, out)]

    def backward(self, n: int, x: cl_array.Array, y: cl_array.Array, dy: cl_array.Array,
                 dx: cl_array.Array | None, buffers: Buffers) -> list[Launch]:
        if dx is None:
            return []
        out = self.out_shape(self.in_shape)
        return [self._shift(n, dy, dx, -self.sign, out, self.in_shape)]

    def _fused_shift(self, src: str, dst: str, sign: int, src_shape: Shape,
                     dst_shape: Shape) -> str:
        planes, h, w = _planes(src_shape)
        _, oh, ow = _planes(dst_shape)
        return fused_shift(src, dst, planes, h, w, oh, ow, sign * self.top, sign * self.left)

    def fused_forward(self, i: int) -> str:
        return self._fused_shift(f"a{i}", f"a{i + 1}", self.sign, self.in_shape,
                                 self.out_shape(self.in_shape))

    def fused_backward(self, i: int, input_delta: bool) -> str:
        return self._fused_shift(f"d{i + 1}", f"d{i}", -self.sign,
                                 self.out_shape(self.in_shape), self.in_shape) \
            if input_delta else ""


class Crop(Pad):
    """Every plane without its `left`, `top`, `right`, `bottom` edges."""

    sign = -1
