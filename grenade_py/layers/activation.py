"""Activation: what the element-wise layers share (Tanh, Relu, Logit, Elu, Gelu, ...)."""
from __future__ import annotations

from typing import Any

import pyopencl.array as cl_array

from grenade_py.device import Launch, streaming_size
from grenade_py.layers.base import Buffers, Layer, WindowForm, over_rows
from grenade_py.shapes import Shape, size


class Activation(Layer):
    """An element-wise layer of any shape whose kernels are `<family>_forward/_backward`;
    with an `argument` (the name of a float attribute, such as LeakyRelu's alpha), every
    kernel and fused-loop call is given its value too."""

    family = ""
    keeps_shape = True
    argument: str | None = None

    def out_shape(self, in_shape: Shape) -> Shape:
        return in_shape

    def spec(self) -> dict[str, Any]:
        if self.argument is None:
            return super().spec()
        return super().spec() | {self.argument: getattr(self, self.argument)}

    def __repr__(self) -> str:
        if self.argument is None:
            return super().__repr__()
        return f"{type(self).__name__} {getattr(self, self.argument):g}"

    def _extra(self) -> list[Any]:
        """The argument's value, typed for the kernels, if the activation has one."""
        return [] if self.argument is None else [self.device.dtype(getattr(self, self.argument))]

    def forward(self, n: int, x: cl_array.Array, y: cl_array.Array, buffers: Buffers,
                training: bool) -> list[Launch]:
        count = n * size(self.in_shape)
        return [self.device.launch(f"{self.family}_forward", streaming_size(count), count,
                                   *self._extra(), x, y)]

    def backward(self, n: int, x: cl_array.Array, y: cl_array.Array, dy: cl_array.Array,
                 dx: cl_array.Array | None, buffers: Buffers) -> list[Launch]:
        if dx is None:
            return []
        count = n * size(self.in_shape)
        tape = x if self.tape == "input" else y
        return [self.device.launch(f"{self.family}_backward", streaming_size(count), count,
                                   *self._extra(), tape, dy, dx)]

    def fused_args(self, i: int) -> list[tuple[str, Any]]:
        return [(f"REAL arg{i}", value) for value in self._extra()]

    def fused_forward(self, i: int) -> str:
        extra = f", arg{i}" if self.argument else ""
        return (f"for (int k = lid; k < n{i}; k += nl) "
                f"a{i + 1}[k] = {self.family}_forward_at(a{i}[k]{extra});")

    def fused_backward(self, i: int, input_delta: bool) -> str:
        if not input_delta:
            return ""
        tape = f"a{i}" if self.tape == "input" else f"a{i + 1}"
        extra = f", arg{i}" if self.argument else ""
        return (f"for (int k = lid; k < n{i}; k += nl) "
                f"d{i}[k] = {self.family}_backward_at({tape}[k], d{i + 1}[k]{extra});")

    def window_form(self, i: int, input_delta: bool) -> WindowForm:
        backward = self.fused_backward(i, input_delta)
        return WindowForm(self.fused_args(i), {}, over_rows(i, self.fused_forward(i)),
                          over_rows(i, backward) if backward else "", "")
