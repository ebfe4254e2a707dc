"""Softmax: y = exp(x - max x) / sum exp(x - max x) over a D1 vector. Tape: the output.
Kernels: softmax_forward, softmax_backward (kernels/softmax.cl). Ports Grenade.Layers.Softmax.

Trained with loss="cross_entropy", its backward pass is replaced by the fused, numerically stable
gradient p - t at the logits."""
from __future__ import annotations

import pyopencl.array as cl_array

from grenade_py.device import Launch
from grenade_py.errors import ShapeError
from grenade_py.layers.base import Buffers, Layer, WindowForm
from grenade_py.shapes import D1, Shape, size


class Softmax(Layer):
    """Softmax over a vector; max-subtracted, so no overflow for large logits."""

    tape = "output"

    def out_shape(self, in_shape: Shape) -> Shape:
        if not isinstance(in_shape, D1):
            raise ShapeError("takes a D1 vector")
        return in_shape

    def forward(self, n: int, x: cl_array.Array, y: cl_array.Array, buffers: Buffers,
                training: bool) -> list[Launch]:
        width = size(self.in_shape)
        return [self.device.launch("softmax_forward", (n,), n, width, x, y)]

    def backward(self, n: int, x: cl_array.Array, y: cl_array.Array, dy: cl_array.Array,
                 dx: cl_array.Array | None, buffers: Buffers) -> list[Launch]:
        if dx is None:
            return []
        width = size(self.in_shape)
        return [self.device.launch("softmax_backward", (n,), n, width, y, dy, dx)]

    def fused_forward(self, i: int) -> str:
        return f"if (lid == 0) softmax_forward_row(a{i}, a{i + 1}, n{i});"

    def fused_backward(self, i: int, input_delta: bool) -> str:
        return f"if (lid == 0) softmax_backward_row(a{i + 1}, d{i + 1}, d{i}, n{i});" \
            if input_delta else ""

    def window_form(self, i: int, input_delta: bool) -> WindowForm:
        rows = f"for (int t = lid; t < T; t += nl) softmax_{{}}_row({{}}, n{i});"
        at = f" + (size_t)t * n{i}"
        return WindowForm([], {}, rows.format("forward", f"a{i}{at}, a{i + 1}{at}"),
                          rows.format("backward", f"a{i + 1}{at}, d{i + 1}{at}, d{i}{at}")
                          if input_delta else "", "")
