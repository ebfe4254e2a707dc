"""Dropout: inverted dropout while training, the identity in `run_net`/`evaluate`.

Differs from Grenade on purpose: Grenade.Layers.Dropout is a stub that passes its input through.
Ours drops each value with probability `rate` while training (`train`, `fit`) and scales the kept
ones by 1 / (1 - rate), so the expected output is the input; at inference it is the identity.
The mask is drawn on the device by Philox4x32-10, keyed by a key drawn from the network's seed
and counted by a step counter the device advances after each training forward pass, so the same
seed gives the same masks. Shape: any. Tape: the mask, a per-batch buffer. Kernels:
dropout_forward, dropout_advance, dropout_backward (kernels/dropout.cl); trivial_forward at
inference.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyopencl.array as cl_array

from grenade_py.device import Device, Launch, streaming_size
from grenade_py.layers.arguments import real_argument
from grenade_py.layers.base import Buffers, Layer
from grenade_py.shapes import Shape, size


class Dropout(Layer):
    """Drops values with probability `rate` (0 <= rate < 1) while training."""

    keeps_shape = True

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = real_argument("Dropout", "rate", rate, lambda r: 0 <= r < 1,
                                  "a number in [0, 1)")
        self.key = (0, 0)
        self.step: cl_array.Array | None = None

    def out_shape(self, in_shape: Shape) -> Shape:
        return in_shape

    def spec(self) -> dict[str, Any]:
        return {"type": "Dropout", "rate": self.rate}

    def __repr__(self) -> str:
        return f"Dropout {self.rate:g}"

    def draw(self, rng: np.random.Generator) -> None:
        low, high = rng.integers(0, 2**32, size=2)
        self.key = (int(low), int(high))

    def get_state(self) -> dict[str, Any]:
        step = int(self.step.get()[0]) if self.step is not None else 0
        return {"key": list(self.key), "step": step}

    def set_state(self, state: Any) -> None:
        if state is None:
            return
        key = state.get("key") if isinstance(state, dict) else None
        step = state.get("step") if isinstance(state, dict) else None
        if not (isinstance(key, list) and len(key) == 2
                and all(type(k) is int and 0 <= k < 2**32 for k in key)
                and type(step) is int and 0 <= step < 2**32):
            raise ValueError(f"Dropout state {state!r} is not a key and a step")
        self.key = (key[0], key[1])
        if self.step is not None:
            self.step.set(np.array([step], np.uint32))

    def bind(self, device: Device, in_shape: Shape, owner: object) -> None:
        super().bind(device, in_shape, owner)
        self.step = cl_array.zeros(device.queue, (1,), np.uint32)

    def batch_buffers(self, n: int) -> dict[str, tuple[int, ...]]:
        return {"mask": (n, *self.in_shape.dims)}

    def inference_buffers(self, n: int) -> dict[str, tuple[int, ...]]:
        return {}  # outside training the identity

    def forward(self, n: int, x: cl_array.Array, y: cl_array.Array, buffers: Buffers,
                training: bool) -> list[Launch]:
        count, device = n * size(self.in_shape), self.device
        if not training:
            return [device.launch("trivial_forward", streaming_size(count), count, x, y)]
        real = np.dtype(device.dtype).type
        return [device.launch("dropout_forward", (count,), count, np.uint32(0),
                              np.uint32(size(self.in_shape)), real(self.rate),
                              real(1 / (1 - self.rate)), np.uint32(self.key[0]),
                              np.uint32(self.key[1]), self.step, x, y, buffers["mask"],
                              per_call={"first_row": 1}),
                self.advance()]

    def advance(self) -> Launch:
        """The launch moving the mask counter on by one training forward pass: the last of
        `forward`'s, and what a distributed rank runs for a pass it skips (an empty shard)."""
        return self.device.launch("dropout_advance", (1,), self.step)

    def backward(self, n: int, x: cl_array.Array, y: cl_array.Array, dy: cl_array.Array,
                 dx: cl_array.Array | None, buffers: Buffers) -> list[Launch]:
        if dx is None:
            return []
        count = n * size(self.in_shape)
        return [self.device.launch("dropout_backward", streaming_size(count), count,
                                   buffers["mask"], dy, dx)]
