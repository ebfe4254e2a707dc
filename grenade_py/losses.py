"""The losses, in one place: the gradient pushed back from the output, and the per-row loss and
correctness that `fit` and `evaluate` report, both computed on the device.

- "squared_error": Grenade's: loss 0.5 |y - t|^2 per sample, gradient y - t at the output.
- "cross_entropy": for a network ending in Softmax: loss -sum t log softmax(logits), computed
  from the logits (log-sum-exp, finite for any logits); gradient p - t at the logits, skipping
  Softmax's own backward pass. Targets must be distributions (rows >= 0 summing to 1).

Gradients are averaged over the batch. A row is correct when argmax y == argmax t (width 1:
both on the same side of 0.5).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyopencl.array as cl_array

from grenade_py.device import Launch
from grenade_py.layers import Softmax
from grenade_py.network import Network

if TYPE_CHECKING:
    from grenade_py.execution import Plan

LOSSES = ("squared_error", "cross_entropy")


def check_loss(net: Network, loss: str) -> None:
    """ValueError unless `loss` is one of LOSSES and fits the network."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if loss == "cross_entropy" and (len(net.layers) < 2 or not isinstance(net.layers[-1], Softmax)):
        raise ValueError("loss='cross_entropy' needs a network ending in a Softmax layer after "
                         "at least one other layer")


def check_targets(loss: str, y: np.ndarray, what: str = "y") -> None:
    """ValueError unless `y` (N, ...) are targets `loss` can use."""
    if loss != "cross_entropy":
        return
    rows = y.reshape(len(y), -1).astype(np.float64)
    bad = np.flatnonzero((rows < 0).any(axis=1) | (np.abs(rows.sum(axis=1) - 1) > 1e-3))
    if len(bad):
        raise ValueError(f"loss='cross_entropy' needs targets that are distributions (values >= "
                         f"0 summing to 1, e.g. one-hot rows), but {what}[{bad[0]}] is "
                         f"{rows[bad[0]].tolist()[:10]}")


def _logits(net: Network, plan: Plan, loss: str) -> tuple[cl_array.Array, cl_array.Array]:
    """The output's buffers where the loss starts: (value, its delta)."""
    if loss == "cross_entropy":
        last = len(net.layers) - 1
        return plan.buffers[f"a{last}"], plan.buffers[f"d{last}"]
    return plan.output, plan.delta


def gradient_launches(net: Network, plan: Plan, loss: str) -> list[Launch]:
    """The loss gradient into the delta where the loss starts (the first launch; its argument
    1 is the scale, 1/n), then the backward pass from there."""
    device, n, count = net.device, plan.n, plan.output.size
    _, delta = _logits(net, plan, loss)
    launches = [device.launch("loss_output_minus_target", (count,), count,
                              device.dtype(1.0 / n), plan.output, plan.target, delta)]
    top = len(net.layers) - (1 if loss == "cross_entropy" else 0)
    return launches + net.backward_below(top, n, plan.input, plan.output, delta, None,
                                         plan.buffers)


def metric_launches(net: Network, plan: Plan, loss: str, acc: cl_array.Array) -> list[Launch]:
    """New launches adding the batch's summed loss to acc[0] and its correct rows to acc[1];
    the caller keeps them for as long as it sums into `acc`."""
    device, n = net.device, plan.n
    logits, _ = _logits(net, plan, loss)
    row_loss, row_correct = device.zeros((n,)), device.zeros((n,))
    return [
        device.launch("loss_rows", (n,), n, plan.output.size // n,
                      int(loss == "cross_entropy"), plan.output, logits, plan.target, row_loss,
                      row_correct),
        device.launch("loss_accumulate", (1,), n, row_loss, row_correct, acc),
    ]
