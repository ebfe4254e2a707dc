"""What every layer is: Grenade's `Layer` and `UpdateLayer` classes, on an OpenCL device.

A layer says which input shape it takes and what it gives (`out_shape`). Once a Network places it,
it owns its device buffers (parameters, momentum, gradients) and hands the runner `Launch`es:
kernels with their arguments set once, for a given batch size and the activation buffers around it.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyopencl.array as cl_array

from grenade_py.device import Device, Launch
from grenade_py.learning import LearningParameters
from grenade_py.shapes import Shape, size


class Layer:
    """A layer without parameters; subclasses with parameters fill `parameters`.

    Tape: the runner keeps every activation of a batch on the device, so a layer's tape is the
    input or output buffer it chooses (`tape`), never a copy.
    """

    #: Which activation the backward pass reads: "input" or "output".
    tape = "input"

    def __init__(self) -> None:
        self._device: Device | None = None
        self._in_shape: Shape | None = None
        self.parameters: dict[str, cl_array.Array] = {}
        self.momentum: dict[str, cl_array.Array] = {}
        self.gradients: dict[str, cl_array.Array] = {}
        self._updates: list[Launch] = []
        self._learning: LearningParameters | None = None

    # -- shapes and description ------------------------------------------------------------
    def out_shape(self, in_shape: Shape) -> Shape:
        """The output shape for `in_shape`; raises ShapeError saying what the layer takes."""
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        """The layer's type and constructor arguments, as stored in model files."""
        return {"type": type(self).__name__}

    def __repr__(self) -> str:
        return type(self).__name__

    # -- device side --------------------------------------------------------------------
    @property
    def device(self) -> Device:
        """The device of the network the layer was placed in."""
        if self._device is None:
            raise RuntimeError(f"{self!r} is not part of a network yet")
        return self._device

    @property
    def in_shape(self) -> Shape:
        """The shape of one input sample, known once the layer is placed in a network."""
        if self._in_shape is None:
            raise RuntimeError(f"{self!r} is not part of a network yet")
        return self._in_shape

    def place(self, device: Device, in_shape: Shape, rng: np.random.Generator, init: str) -> None:
        """Allocate the layer's buffers on `device` for inputs of `in_shape`."""
        if self._device is not None:
            raise ValueError(f"{self!r} already belongs to a network; create a new layer")
        self._device, self._in_shape = device, in_shape
        for name, value in self.initial_parameters(rng, init).items():
            self.parameters[name] = device.to_device(value)
            self.momentum[name] = device.zeros(value.shape)
            self.gradients[name] = device.zeros(value.shape)

    def initial_parameters(self, rng: np.random.Generator, init: str) -> dict[str, np.ndarray]:
        return {}

    def forward(self, n: int, x: cl_array.Array, y: cl_array.Array) -> list[Launch]:
        """Launches computing y (n, *out) from x (n, *in)."""
        raise NotImplementedError

    def backward(self, n: int, x: cl_array.Array, y: cl_array.Array, dy: cl_array.Array,
                 dx: cl_array.Array | None) -> list[Launch]:
        """Launches computing the gradients (summed over the batch) and, unless `dx` is None,
        the input delta dx from the output delta dy."""
        raise NotImplementedError

    # -- device-side form, for the fused per-example loop (grenade_py.fused) -------------------
    # The loop's code names activations a{k}, deltas d{k} and sizes n{k} at boundary k (layer i
    # reads boundary i, writes i + 1); `lid` and `nl` are the lane index and lane count, and
    # `rate`, `momentum`, `l2` the learning parameters. A layer without these (None) makes the
    # runner fall back to the layer-by-layer path.
    def fused_args(self, i: int) -> list[tuple[str, cl_array.Array]]:
        """Extra kernel arguments as (C declaration, value), e.g. the layer's buffers."""
        return [(f"global REAL *{name}{i}", buffer) for name, buffer in self._fused_buffers()]

    def _fused_buffers(self) -> list[tuple[str, cl_array.Array]]:
        return []

    def fused_forward(self, i: int) -> str | None:
        """OpenCL statements computing a{i+1} from a{i} for one example."""
        return None

    def fused_backward(self, i: int, input_delta: bool) -> str | None:
        """OpenCL statements computing d{i} (if input_delta) from d{i+1}, then updating the
        layer's parameters, for one example. Each statement group ends at a barrier."""
        return None

    def update(self, learning: LearningParameters) -> list[Launch]:
        """Launches applying one momentum + L2 descent step to every parameter."""
        if learning != self._learning:
            if not self._updates:  # built on first use: fused training never needs them
                device = self.device
                self._updates = [
                    device.launch("sgd_momentum_l2", (w.size,), w.size, device.dtype(0),
                                  device.dtype(0), device.dtype(0), w, self.momentum[name],
                                  self.gradients[name])
                    for name, w in self.parameters.items()
                ]
            for launch in self._updates:
                launch.set_arg(1, self.device.dtype(learning.rate))
                launch.set_arg(2, self.device.dtype(learning.momentum))
                launch.set_arg(3, self.device.dtype(learning.l2))
            self._learning = learning
        return self._updates


class Activation(Layer):
    """An element-wise layer of any shape whose kernels are `<family>_forward/_backward`."""

    family = ""

    def out_shape(self, in_shape: Shape) -> Shape:
        return in_shape

    def forward(self, n: int, x: cl_array.Array, y: cl_array.Array) -> list[Launch]:
        count = n * size(self.in_shape)
        return [self.device.launch(f"{self.family}_forward", (count,), count, x, y)]

    def backward(self, n: int, x: cl_array.Array, y: cl_array.Array, dy: cl_array.Array,
                 dx: cl_array.Array | None) -> list[Launch]:
        if dx is None:
            return []
        count = n * size(self.in_shape)
        tape = x if self.tape == "input" else y
        return [self.device.launch(f"{self.family}_backward", (count,), count, tape, dy, dx)]

    def fused_forward(self, i: int) -> str:
        return (f"for (int k = lid; k < n{i}; k += nl) "
                f"a{i + 1}[k] = {self.family}_forward_at(a{i}[k]);")

    def fused_backward(self, i: int, input_delta: bool) -> str:
        if not input_delta:
            return ""
        tape = f"a{i}" if self.tape == "input" else f"a{i + 1}"
        return (f"for (int k = lid; k < n{i}; k += nl) "
                f"d{i}[k] = {self.family}_backward_at({tape}[k], d{i + 1}[k]);")
