"""BatchNorm: batch normalisation per feature of a D1 vector (PyTorch's BatchNorm1d) or per
channel of a D3 image (BatchNorm2d). No Grenade has it; the fork's BatchNorm.hs is not ported.

Shape: D1 c -> D1 c, or D3 rows cols c -> the same. Parameters: `gamma` (c,) from 1 and `beta`
(c,) from 0, whatever the network's init. While training (`train`, `fit`) each channel is
normalised by its batch mean and biased variance, y = gamma (x - mean) / sqrt(var + eps) +
beta, and the running statistics move by `momentum` (the variance's unbiased estimate, as
PyTorch does); in `run_net`/`evaluate` by the running ones. The running statistics (from
mean 0, variance 1) are the layer's state, saved in model files; no optimiser touches them.
Tape: the input, with each channel's batch mean and 1 / sqrt(var + eps). Kernels:
kernels/batchnorm.cl. A Relu after it runs in its launches while training (Series.relu_fused):
batchnorm_normalise writes the Relu's output instead of its own, the backward kernels mask dy
by it; the same bits as the Relu's own kernels. The bn recipe's training step (MNIST's `bn`
architecture, batch 64) took 0.94x the time in float32, 0.91x in float64, on a 2-core AVX-512
EPYC (writing both outputs, 0.93-0.96x). A D1 BatchNorm cannot train on one row at a time
(each feature's variance over one row is 0): per-example training of it is an error saying so;
a D3 one normalises over the image's positions, so it can.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyopencl.array as cl_array

from grenade_py.device import Device, Launch, streaming_size
from grenade_py.errors import ShapeError
from grenade_py.layers.arguments import positive_ints, real_argument
from grenade_py.layers.base import Buffers, Layer
from grenade_py.shapes import D1, D3, Shape

#: Work-items per channel of the statistics kernels (BATCHNORM_LANES in kernels/batchnorm.cl).
LANES = 64


class BatchNorm(Layer):
    """Batch normalisation over `channels` (a D1's features or a D3's channels)."""

    tape = "input"
    keeps_shape = True

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        positive_ints("BatchNorm", channels=channels)
        self.channels = int(channels)
        self.eps = real_argument("BatchNorm", "eps", eps, lambda e: e > 0, "a finite number > 0")
        # (not `momentum`: a layer's `momentum` holds its optimiser state's views)
        self.running_momentum = real_argument("BatchNorm", "momentum", momentum,
                                              lambda m: 0 < m <= 1, "at most 1 (and > 0)")
        self.running: cl_array.Array | None = None

    def out_shape(self, in_shape: Shape) -> Shape:
        channels = in_shape.n if isinstance(in_shape, D1) else \
            in_shape.channels if isinstance(in_shape, D3) else None
        if channels != self.channels:
            raise ShapeError(f"takes D1 {self.channels} or D3 with {self.channels} channels")
        return in_shape

    def spec(self) -> dict[str, Any]:
        return {"type": "BatchNorm", "channels": self.channels, "eps": self.eps,
                "momentum": self.running_momentum}

    def __repr__(self) -> str:
        return f"BatchNorm {self.channels}"

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"gamma": (self.channels,), "beta": (self.channels,)}

    def initial_parameters(self, rng: np.random.Generator, init: str) -> dict[str, np.ndarray]:
        return {"gamma": np.ones(self.channels), "beta": np.zeros(self.channels)}

    def bind(self, device: Device, in_shape: Shape, owner: object) -> None:
        super().bind(device, in_shape, owner)
        if self.running is None or self.running.dtype != device.dtype:
            self.running = device.to_device(np.stack([np.zeros(self.channels),
                                                      np.ones(self.channels)]))

    def get_state(self) -> dict[str, Any]:
        if self.running is None:
            return {}
        means, variances = self.running.get().astype(float)
        return {"running_mean": means.tolist(), "running_var": variances.tolist()}

    def set_state(self, state: Any) -> None:
        if state is None:
            return
        values = [state.get(k) if isinstance(state, dict) else None
                  for k in ("running_mean", "running_var")]
        if not all(isinstance(v, list) and len(v) == self.channels and
                   all(isinstance(x, (int, float)) and math.isfinite(x) for x in v)
                   for v in values) or min(values[1] or [-1]) < 0:
            raise ValueError(f"BatchNorm state {state!r:.80} is not {self.channels} running "
                             "means and variances")
        assert self.running is not None
        self.running.set(np.array(values, dtype=self.device.dtype))

    def _geometry(self) -> tuple[int, int]:
        """(C, P): channels and values per channel per sample."""
        shape = self.in_shape
        return (shape.n, 1) if isinstance(shape, D1) else \
            (self.channels, shape.rows * shape.cols)  # type: ignore[attr-defined]

    def _elements(self, n: int) -> tuple[int]:
        """The element-wise kernels' global size: a work-item per run of up to 8 values of a
        (sample, channel) row, or where P is 1 of 8 features of a sample (kernels/batchnorm.cl)."""
        c, p = self._geometry()
        return streaming_size(c, n) if p == 1 else streaming_size(p, n * c)

    def batch_buffers(self, n: int) -> dict[str, tuple[int, ...]]:
        return {"mean": (self.channels,), "inv_std": (self.channels,),
                "affine": (2, self.channels), "coefficients": (3, self.channels)}

    def inference_buffers(self, n: int) -> dict[str, tuple[int, ...]]:
        return {}  # the running statistics are the layer's own

    def forward(self, n: int, x: cl_array.Array, y: cl_array.Array, buffers: Buffers,
                training: bool, relu: cl_array.Array | None = None) -> list[Launch]:
        """With `relu`, the output of a Relu after this layer (Series.relu_fused): while
        training, instead of y (the backward passes mask by the Relu's output)."""
        c, p = self._geometry()
        device, real, g = self.device, self.device.dtype, self.parameters
        assert self.running is not None
        if not training:
            return [device.launch("batchnorm_inference", self._elements(n), n, c, p,
                                  real(self.eps), x, self.running, g["gamma"], g["beta"], y)
                    ] + ([] if relu is None else [device.launch(
                        "relu_forward", streaming_size(y.size), y.size, y, relu)])
        if n * p < 2:  # a ShapeError: the CLIs report it as a usage error, in one line
            raise ShapeError(f"{self!r} on {self.in_shape!r} cannot train on one row at a time "
                             "(each feature's variance over one row is 0): train it on "
                             "minibatches of 2 or more", located=True)
        statistics = (real(self.eps), real(self.running_momentum), x, g["gamma"], g["beta"],
                      buffers["mean"], buffers["inv_std"], buffers["affine"], self.running)
        return [device.launch("batchnorm_feature_statistics", (c,), n, c, *statistics)
                if p == 1 else
                device.launch("batchnorm_statistics", (LANES * c,), n, c, p, *statistics,
                              local=(LANES,)),
                device.launch("batchnorm_normalise", self._elements(n), n, c, p, x,
                              buffers["affine"], y if relu is None else None, relu)]

    def backward(self, n: int, x: cl_array.Array, y: cl_array.Array, dy: cl_array.Array,
                 dx: cl_array.Array | None, buffers: Buffers, relu: cl_array.Array | None = None
                 ) -> list[Launch]:
        """With `relu`, the output of a Relu after this layer, dy is the delta at that output,
        and these launches take the Relu's backward pass too (masking dy by its output;
        Series.backward_below)."""
        c, p = self._geometry()
        device, grads = self.device, self.gradients
        assert self.running is not None
        sums = (x, buffers["mean"], buffers["inv_std"], self.parameters["gamma"], dy, relu,
                grads["gamma"], grads["beta"], buffers["coefficients"])
        launches = [device.launch("batchnorm_feature_backward_statistics", (c,), n, c, *sums)
                    if p == 1 else
                    device.launch("batchnorm_backward_statistics", (LANES * c,), n, c, p, *sums,
                                  local=(LANES,))]
        if dx is not None:
            launches.append(device.launch("batchnorm_backward_input", self._elements(n), n, c, p,
                                          x, dy, relu, buffers["coefficients"], dx))
        return launches
