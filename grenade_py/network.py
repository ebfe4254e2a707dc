"""Network: Grenade's typed list of layers with the shapes between them, placed on a device."""
from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyopencl.array as cl_array

from grenade_py.device import Device, Launch
from grenade_py.errors import ShapeError
from grenade_py.layers import Layer
from grenade_py.shapes import Shape

MAX_PLANS = 4


class Plan:
    """The device buffers and launches for batches of `n` samples: every activation between
    layers (which the layers use as their tapes), every delta, the target, and the launches of a
    forward pass, a loss gradient with the backward pass, and loss metrics. Built once per batch
    size and reused; the launches on first use (the fused loop needs only the buffers)."""

    def __init__(self, net: Network, n: int) -> None:
        device = net.device
        self.net, self.n = net, n
        self.acts = [device.zeros((n, *s.dims)) for s in net.shapes]
        # deltas[0] (the input's gradient) is never needed for training, so never computed.
        self.deltas: list[cl_array.Array | None] = [None] + [
            device.zeros((n, *s.dims)) for s in net.shapes[1:]
        ]
        self.target = device.zeros((n, *net.shapes[-1].dims))
        self._gradients: dict[str, list[Launch]] = {}

    @functools.cached_property
    def forward(self) -> list[Launch]:
        launches = []
        for i, layer in enumerate(self.net.layers):
            launches += layer.forward(self.n, self.acts[i], self.acts[i + 1])
        return launches

    def gradient(self, loss: str) -> list[Launch]:
        """The launches of the loss gradient and the backward pass, for data already in
        acts[0] and target. "squared_error" pushes Grenade's output - target back through every
        layer; "cross_entropy" (last layer Softmax) pushes the fused p - t to the logits and
        skips Softmax's own backward pass. Both are averaged over the batch."""
        launches = self._gradients.get(loss)
        if launches is None:
            net, device, count = self.net, self.net.device, self.target.size
            layers = len(net.layers) - (1 if loss == "cross_entropy" else 0)
            launches = [device.launch("loss_output_minus_target", (count,), count,
                                      device.dtype(1.0 / self.n), self.acts[-1], self.target,
                                      self.deltas[layers])]
            for i in reversed(range(layers)):
                dy = self.deltas[i + 1]
                assert dy is not None  # only deltas[0] is None
                launches += net.layers[i].backward(self.n, self.acts[i], self.acts[i + 1], dy,
                                                   self.deltas[i])
            self._gradients[loss] = launches
        return launches

    def metrics(self, loss: str, acc: cl_array.Array) -> list[Launch]:
        """New launches adding this batch's summed loss to acc[0] and its correct rows to
        acc[1]; the caller keeps them for as long as it sums into `acc`."""
        device, n = self.net.device, self.n
        width = self.target.size // n
        logits = self.acts[-2] if loss == "cross_entropy" else self.acts[-1]
        row_loss, row_correct = device.zeros((n,)), device.zeros((n,))
        return [
            device.launch("loss_rows", (n,), n, width, int(loss == "cross_entropy"),
                          self.acts[-1], logits, self.target, row_loss, row_correct),
            device.launch("loss_accumulate", (1,), n, row_loss, row_correct, acc),
        ]


class Network:
    """A list of layers checked against the shapes between them, placed on an OpenCL device.

    Parameters:
        layers: the layers, input first. Each layer object belongs to one network.
        input: the shape of one input sample, e.g. `D1(2)`.
        device: where the network lives; default `Device()` (see `grenade_py.device`).
        seed: seeds the initial parameters; None draws fresh ones.
        init: "scaled" (default, uniform +-1/sqrt(fan_in)) or "grenade" (uniform +-1).

    Raises ShapeError naming the layer's index, the layer, the shape it takes and the shape it
    was given, when a layer cannot take its input.

    `net.shapes` is Grenade's shape list: input shape, then every layer's output shape.
    """

    def __init__(self, layers: Sequence[Layer], input: Shape, device: Device | None = None,
                 seed: int | None = None, init: str = "scaled") -> None:
        self.layers = list(layers)
        if not self.layers:
            raise ShapeError("a network needs at least one layer")
        self.shapes: list[Shape] = [input]
        for index, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layer {index} is {layer!r}, not a grenade_py layer")
            try:
                self.shapes.append(layer.out_shape(self.shapes[-1]))
            except ShapeError as e:
                raise ShapeError(
                    f"layer {index} ({layer!r}) {e}, but its input is {self.shapes[-1]!r}"
                ) from None
        self.device = device if device is not None else Device()
        rng = np.random.default_rng(seed)
        for layer, shape in zip(self.layers, self.shapes[:-1], strict=True):
            layer.place(self.device, shape, rng, init)
        self._plans: dict[int, Plan] = {}
        #: Things built once per network on first use (the fused training loop).
        self.cache: dict[str, Any] = {}

    @property
    def input_shape(self) -> Shape:
        return self.shapes[0]

    @property
    def output_shape(self) -> Shape:
        return self.shapes[-1]

    def __repr__(self) -> str:
        layers = ", ".join(repr(layer) for layer in self.layers)
        shapes = ", ".join(repr(shape) for shape in self.shapes)
        return f"Network '[{layers}] '[{shapes}]"

    def plan(self, n: int) -> Plan:
        """The buffers and launches for batches of `n` samples (built on first use)."""
        plan = self._plans.get(n)
        if plan is None:
            if len(self._plans) >= MAX_PLANS:
                self._plans.pop(next(iter(self._plans)))
            plan = self._plans[n] = Plan(self, n)
        return plan

    # -- parameters as numpy -----------------------------------------------------------------
    def get_parameters(self) -> list[dict[str, np.ndarray]]:
        """Host copies of every layer's parameters: one dict per layer (empty for activations),
        e.g. `{"weights": (o, i), "bias": (o,)}` for FullyConnected."""
        return [{k: v.get() for k, v in layer.parameters.items()} for layer in self.layers]

    def set_parameters(self, parameters: Sequence[dict[str, np.ndarray]]) -> None:
        """Replace every layer's parameters with host arrays shaped as `get_parameters` gives."""
        self._set("parameters", parameters)

    def get_momentum(self) -> list[dict[str, np.ndarray]]:
        """Host copies of every layer's momentum, shaped as `get_parameters`."""
        return [{k: v.get() for k, v in layer.momentum.items()} for layer in self.layers]

    def set_momentum(self, momentum: Sequence[dict[str, np.ndarray]]) -> None:
        """Replace every layer's momentum (zero it to restart descent from rest)."""
        self._set("momentum", momentum)

    def _set(self, role: str, values: Sequence[dict[str, np.ndarray]]) -> None:
        if len(values) != len(self.layers):
            raise ValueError(f"expected {role} for {len(self.layers)} layers, got {len(values)}")
        checked = []
        for index, (layer, given) in enumerate(zip(self.layers, values, strict=True)):
            buffers = getattr(layer, role)
            if set(given) != set(buffers):
                raise ValueError(f"layer {index} ({layer!r}) has {role} {sorted(buffers)}, "
                                 f"got {sorted(given)}")
            for name, target in buffers.items():
                array = np.asarray(given[name])
                if array.shape != target.shape:
                    raise ValueError(f"layer {index} ({layer!r}) {name} must have shape "
                                     f"{target.shape}, got {array.shape}")
                if not np.issubdtype(array.dtype, np.number) or not np.all(np.isfinite(array)):
                    raise ValueError(f"layer {index} ({layer!r}) {name} must be finite numbers")
                checked.append((target, array.astype(self.device.dtype)))
        for target, array in checked:  # only once everything is valid: never half-set
            target.set(array)

    # -- model files -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the network (layers, shapes, parameters and momentum) to `path`, atomically.
        The format is described in `grenade_py.model_file`."""
        from grenade_py.model_file import save

        save(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: Device | None = None,
             like: Network | None = None) -> Network:
        """Read a network written by `save`. With `like`, the file must hold that network's
        architecture (layers and shapes), else ModelFileError says how they differ."""
        from grenade_py.model_file import load

        return load(path, device=device, like=like)
