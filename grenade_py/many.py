"""train_many: several networks of one architecture trained per example in one launch.

Grenade's per-example training is sequential (each step needs the weights the last one left), so
one network keeps one compute unit busy. K independent networks of one architecture — a sweep
over seeds, rates or data orders, or an ensemble — are K independent loops: the fused
per-example kernel (grenade_py.fused, `many=True`) runs one per work-group, and the device
spreads the work-groups over its compute units (DeepCL's multinet is the same idea). Every
network's arithmetic is its solo run's: the same loop's code on its own weights and examples.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyopencl as cl
import pyopencl.array as cl_array

from grenade_py.device import buffer, named_errors, opencl_errors
from grenade_py.errors import GrenadeError
from grenade_py.fused import MANY_LINE, build_loop, flat_place, fused_source, plan_loop, unrolled
from grenade_py.inputs import ONE_DEVICE, examples
from grenade_py.losses import SQUARED_ERROR, Loss, loss_named
from grenade_py.network import Network, aligned_offsets, flat_view
from grenade_py.network_file import ROLES
from grenade_py.optimizers import Optimizer, optimizer, take_state
from grenade_py.runner import FUSED_WORK


def padded(count: int) -> int:
    """`count` values rounded up to whole 128-byte lines (MANY_PADDED in the kernel)."""
    return -(-count // MANY_LINE) * MANY_LINE


class ManyTrainer:
    """The fused loop of `count` networks shaped as `net`, one work-group each, its fixed
    arguments set once; the networks' values live in `flat` while it trains them."""

    def __init__(self, net: Network, count: int, kind: int, loss: Loss = SQUARED_ERROR) -> None:
        device = self.device = net.device
        plan = plan_loop(*unrolled(net, loss))
        built = build_loop(device, "fused_train_many", lambda count: fused_source(
            plan, count, kind, many=True))
        if built is None:
            raise GrenadeError(f"{net!r} " + (
                "has a layer without a device-side form" if plan.missing else
                f"makes a loop of more arguments than {device.name} takes") +
                ": train_many runs the fused per-example loop only")
        self.kernel, self.lanes = built
        self.count, self.size = count, padded(net.flat["parameters"].size)
        #: Every network's values by role, one network after another, in one allocation.
        self.at, total = aligned_offsets(device.alignment, [count * self.size] * len(ROLES))
        self.flat = device.zeros((total,))
        self.boundaries = [device.zeros((count * padded(n),)) for _, n in plan.own]
        self.roles = [flat_view(self.flat, at, (count * self.size,)) for at in self.at]
        fixed: list[Any] = [buffer(view) for view in self.roles] + [np.int32(self.size)]
        fixed += [buffer(b) for b in self.boundaries]
        for i, layer in plan.numbered:
            for decl, value in layer.fused_args(i):
                fixed.append(np.int32(flat_place(layer, value)[1]) if "*" in decl else value)
        for index, value in enumerate(fixed, start=7):
            self.kernel.set_arg(index, value)

    def copy(self, nets: Sequence[Network], into: bool) -> None:
        """Copy every network's parameters and moments into `flat` (or back out of it)."""
        queue, itemsize = self.device.queue, self.flat.dtype.itemsize
        nbytes = nets[0].flat["parameters"].nbytes
        for g, net in enumerate(nets):
            for r, role in enumerate(ROLES):
                at = (self.at[r] + g * self.size) * itemsize
                if into:
                    cl.enqueue_copy(queue, buffer(self.flat), buffer(net.flat[role]),
                                    byte_count=nbytes, dst_offset=at)
                else:
                    cl.enqueue_copy(queue, buffer(net.flat[role]), buffer(self.flat),
                                    byte_count=nbytes, src_offset=at)

    def run(self, start: int, count: int) -> None:
        self.kernel.set_arg(0, np.int32(start))
        self.kernel.set_arg(1, np.int32(count))
        with named_errors(f"run the fused training loop of {self.count} networks on "
                          f"{self.device.name}"):
            cl.enqueue_nd_range_kernel(self.device.queue, self.kernel,
                                       (self.lanes * self.count,), (self.lanes,))


@opencl_errors
def train_many(nets: Sequence[Network], params: Optimizer | Sequence[Optimizer],
               x: np.ndarray, y: np.ndarray, orders: np.ndarray | None = None,
               loss: str | Loss = "squared_error") -> list[Network]:
    """Grenade's per-example training of every network in `nets` (one architecture, one
    device; their own weights), in one launch: network k takes one optimiser step per example,
    in the order `orders[k]` gives (indices into x and y; default: 0 .. N - 1), under
    `params[k]` (or `params` for all; one kind of optimiser, without clip_norm). Each ends
    exactly as `train(net, params[k], x[orders[k]], y[orders[k]], per_example=True)` would
    leave it (`loss` as there), and the networks train side by side on the device's compute
    units. Returns `nets`.

    Shape: x (N, *input.dims), y (N, *output.dims), orders (K, M) of ints in [0, N).
    Launched for runs of about FUSED_WORK examples x parameters, each waited for (Ctrl-C).
    """
    if isinstance(nets, Network):
        raise TypeError("train_many takes a list of Networks, got one: pass [net, ...], or "
                        "train one with train(net, params, x, y, per_example=True)")
    nets = list(nets)
    if not nets or not all(isinstance(net, Network) for net in nets):
        raise TypeError("train_many takes a list of Networks")
    first = nets[0]
    for net in nets:
        net.check_runnable()
        if net.spec() != first.spec():
            raise ValueError(f"train_many trains networks of one architecture: {net!r} differs "
                             f"from {first!r}")
        if net.device is not first.device:
            raise ValueError(f"train_many trains networks on one Device object, and these are "
                             f"on several {ONE_DEVICE}")
    if len({id(net) for net in nets}) != len(nets):
        raise ValueError("a network appears twice in train_many's list")
    chosen = [optimizer(p, first.device.dtype) for p in (
        params if isinstance(params, Sequence) else [params] * len(nets))]
    if len(chosen) != len(nets) or len({p.kind for p in chosen}) != 1 or any(
            p.clip_norm is not None for p in chosen):
        raise ValueError("train_many takes one optimiser, or one per network, all of one kind "
                         "and without clip_norm")
    chosen_loss = loss_named(loss)
    chosen_loss.check(first)
    xs, ys = examples(first, x, y, chosen_loss)
    order: np.ndarray = (np.tile(np.arange(len(xs)), (len(nets), 1)) if orders is None
                         else np.asarray(orders))
    if order.ndim != 2 or len(order) != len(nets) or not np.issubdtype(order.dtype, np.integer) \
            or order.size == 0 or order.min() < 0 or order.max() >= len(xs):
        raise ValueError(f"orders must be {len(nets)} rows of example indices in "
                         f"[0, {len(xs)})")
    device = first.device
    trainer = ManyTrainer(first, len(nets), chosen[0].kind, chosen_loss)
    steps = order.shape[1]
    for p, net in zip(chosen, nets, strict=True):
        take_state(net, p)
    values = [list(p.arguments(net.steps + 1, device.dtype).values()) for p, net in zip(
        chosen, nets, strict=True)]
    held = [device.to_device(xs), device.to_device(ys), device.to_device(np.array(values)),
            cl_array.to_device(device.queue, np.ascontiguousarray(order, dtype=np.int32))]
    for index, array in enumerate(held, start=2):
        trainer.kernel.set_arg(index, buffer(array))
    trainer.kernel.set_arg(6, np.int32(steps))
    trainer.copy(nets, into=True)
    chunk, done = max(1, FUSED_WORK // trainer.size), 0
    try:
        for start in range(0, steps, chunk):
            trainer.run(start, min(chunk, steps - start))
            device.queue.finish()
            done = min(steps, start + chunk)
    finally:  # what was trained is kept, also on Ctrl-C
        trainer.copy(nets, into=False)
        device.queue.finish()
        for net in nets:
            net.steps += done
    return nets
