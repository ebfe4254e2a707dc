"""The losses, as objects: where a loss's gradient enters the network, the launch computing it
(with an optional per-row mask and an explicit scale), and the one launch reporting it.

- `SQUARED_ERROR` ("squared_error"): Grenade's: loss 0.5 |y - t|^2 per row, gradient y - t at
  the output.
- `CROSS_ENTROPY` ("cross_entropy"): for a network ending in Softmax: loss -sum t log
  softmax(logits), computed from the logits (log-sum-exp, finite for any logits); gradient
  p - t at the logits, skipping Softmax's own backward pass. Targets must be distributions
  (rows >= 0 summing to 1).

A row is correct when argmax y == argmax t (width 1: both on the same side of 0.5). A loss
never builds the backward pass: whoever runs the network starts it at `top`.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyopencl.array as cl_array

from grenade_py.device import Device, Launch
from grenade_py.layers import Softmax

#: Work-items of loss_metrics' one work-group (LOSS_LANES in kernels/loss.cl).
LOSS_LANES = 64


class Loss:
    """A loss: its name, what it needs of a network and targets, and its launches."""

    name = ""
    #: Whether loss_metrics computes the loss from the logits (cross entropy), not the output.
    from_logits = False

    def check(self, net: Any) -> None:
        """ValueError unless the loss fits the network."""

    def check_targets(self, y: np.ndarray, what: str = "y") -> None:
        """ValueError unless `y` (N, ...) are targets this loss can use."""

    def top(self, net: Any) -> int:
        """The boundary whose delta the loss's gradient writes (the output's: the layer
        count)."""
        return len(net.layers)

    def gradient(self, device: Device, y: cl_array.Array, target: cl_array.Array,
                 mask: cl_array.Array | None, delta: cl_array.Array) -> Launch:
        """delta = scale (y - target) over rows of y (rows, ...), 0 on rows whose mask is 0;
        `scale` is given per call (`Launch.set("scale", ...)`)."""
        rows, width = y.shape[0], y.size // y.shape[0]
        return device.launch("loss_gradient", (rows * width,), rows, width, device.dtype(1),
                             int(mask is not None), y, target,
                             mask if mask is not None else target, delta,
                             per_call={"scale": 2})

    def metrics(self, device: Device, y: cl_array.Array, logits: cl_array.Array,
                target: cl_array.Array, acc: cl_array.Array,
                mask: cl_array.Array | None = None) -> list[Launch]:
        """New launches adding, over the rows of y (rows, ...) whose mask is not 0, their
        summed loss to acc[0], their correct rows to acc[1] and their count to acc[2]; the
        caller keeps them for as long as it sums into `acc` (3 values)."""
        n = y.shape[0]
        return [device.launch("loss_metrics", (LOSS_LANES,), n, y.size // n,
                              int(self.from_logits), int(mask is not None), y, logits, target,
                              mask if mask is not None else target, acc, local=(LOSS_LANES,))]

    def __repr__(self) -> str:
        return self.name


class SquaredError(Loss):
    name = "squared_error"


class CrossEntropy(Loss):
    name = "cross_entropy"
    from_logits = True

    def check(self, net: Any) -> None:
        if len(net.layers) < 2 or not isinstance(net.layers[-1], Softmax):
            raise ValueError("loss='cross_entropy' needs a network ending in a Softmax layer "
                             "after at least one other layer")

    def check_targets(self, y: np.ndarray, what: str = "y") -> None:
        rows = y.reshape(len(y), -1).astype(np.float64)
        bad = np.flatnonzero((rows < 0).any(axis=1) | (np.abs(rows.sum(axis=1) - 1) > 1e-3))
        if len(bad):
            raise ValueError(f"loss='cross_entropy' needs targets that are distributions "
                             f"(values >= 0 summing to 1, e.g. one-hot rows), but "
                             f"{what}[{bad[0]}] is {rows[bad[0]].tolist()[:10]}")

    def top(self, net: Any) -> int:
        return len(net.layers) - 1


SQUARED_ERROR, CROSS_ENTROPY = SquaredError(), CrossEntropy()
LOSSES = {loss.name: loss for loss in (SQUARED_ERROR, CROSS_ENTROPY)}


def loss_named(value: str | Loss) -> Loss:
    """The Loss `value` names (or is); ValueError for another name."""
    if isinstance(value, Loss):
        return value
    if value not in LOSSES:
        raise ValueError(f"loss must be one of {tuple(LOSSES)}, got {value!r}")
    return LOSSES[value]
