"""Running and training networks, in Grenade's words: run_net, train, back_propagate,
apply_update; and fit, for epochs of minibatches over a dataset kept on the device.
numpy in, numpy out; within a step everything stays on the device."""
from __future__ import annotations

import logging
import numbers
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyopencl as cl
import pyopencl.array as cl_array

from grenade_py import execution
from grenade_py.device import Device, buffer, opencl_errors
from grenade_py.execution import Plan, enqueue
from grenade_py.learning import LearningParameters
from grenade_py.losses import check_loss, check_targets, metric_launches
from grenade_py.network import Network
from grenade_py.shapes import Shape

log = logging.getLogger("grenade_py")

#: run_net splits larger inputs into chunks of this many samples.
RUN_CHUNK = 4096
#: Per-example training launches about this many examples x parameters at a time.
FUSED_WORK = 1 << 25


def _batch(x: object, shape: Shape, what: str, dtype: type) -> tuple[np.ndarray, bool]:
    """`x` as a contiguous (N, *shape) array of `dtype`, and whether it was one sample."""
    array = np.asarray(x)
    dims = shape.dims
    if array.dtype == object or not (np.issubdtype(array.dtype, np.floating)
                                     or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{what} must be real numbers, got dtype {array.dtype}")
    single = array.shape == dims
    if single:
        array = array[None]
    if array.shape[1:] != dims or array.shape[0] < 1:
        raise ValueError(
            f"{what} has shape {array.shape}, but the network takes {shape!r}: pass one sample "
            f"of shape {dims} or a batch of shape (N, {', '.join(map(str, dims))}) with N >= 1"
        )
    with np.errstate(over="ignore"):
        cast: np.ndarray = np.ascontiguousarray(array, dtype=dtype)
    if not np.all(np.isfinite(cast)):
        bad = np.argwhere(~np.isfinite(cast.reshape(len(cast), -1)))[0][0]
        raise ValueError(f"{what} holds NaN or Inf in {np.dtype(dtype).name} (first in sample "
                         f"{bad})")
    return cast, single


def _examples(net: Network, x: object, y: object,
              loss: str = "squared_error") -> tuple[np.ndarray, np.ndarray]:
    xs, _ = _batch(x, net.input_shape, "x", net.device.dtype)
    ys, _ = _batch(y, net.output_shape, "y", net.device.dtype)
    if len(xs) != len(ys):
        raise ValueError(f"x has {len(xs)} samples but y has {len(ys)}")
    check_targets(loss, ys)
    return xs, ys


def _check(net: Network, params: object, loss: str = "squared_error") -> LearningParameters:
    """`params`, if they are LearningParameters that the device's precision holds, and `loss`
    fits the network."""
    net.check_runnable()
    params = learning_parameters(net.device, params)
    check_loss(net, loss)
    return params


def learning_parameters(device: Device, params: object) -> LearningParameters:
    """`params`, if they are LearningParameters that `device`'s precision holds."""
    if not isinstance(params, LearningParameters):
        raise TypeError(f"expected LearningParameters, got {params!r}")
    real = np.dtype(device.dtype).type
    with np.errstate(over="ignore"):
        cast = {name: real(getattr(params, name)) for name in ("rate", "momentum", "l2")}
        cast["rate * l2"] = cast["rate"] * cast["l2"]
    for name, value in cast.items():
        if not np.isfinite(value):
            raise ValueError(f"{params} : {name} overflows {device.precision}; use a "
                             "smaller value")
    return params


def _count(value: object, name: str, least: int) -> int:
    """`value` as an int >= least (numpy integers welcome), else ValueError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or \
            value < least:
        raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
    return int(value)


def _step(net: Network, plan: Plan, params: LearningParameters | None, loss: str) -> None:
    """Forward, loss gradient, backward and (with params) the update, for data already in
    plan.input and plan.target."""
    enqueue(plan.forward(net, training=True))
    enqueue(plan.gradient(net, loss))
    if params is not None:
        execution.update(net, params)()


def _upload(queue: cl.CommandQueue, plan: Plan, xs: np.ndarray, ys: np.ndarray) -> None:
    cl.enqueue_copy(queue, buffer(plan.input), xs, is_blocking=False)
    cl.enqueue_copy(queue, buffer(plan.target), ys, is_blocking=False)


@opencl_errors
def run_net(net: Network, x: np.ndarray) -> np.ndarray:
    """Grenade's runNet: the network's output for `x`.

    Shape: one sample `input.dims` -> `output.dims`, or a batch (N, *input.dims) ->
    (N, *output.dims), computed in chunks of up to RUN_CHUNK samples.
    """
    net.check_runnable()
    batch, single = _batch(x, net.input_shape, "x", net.device.dtype)
    out = np.empty((len(batch), *net.output_shape.dims), dtype=net.device.dtype)
    queue = net.device.queue
    for start in range(0, len(batch), RUN_CHUNK):
        chunk = batch[start:start + RUN_CHUNK]
        plan = execution.plan(net, len(chunk))
        cl.enqueue_copy(queue, buffer(plan.input), chunk, is_blocking=False)
        enqueue(plan.forward(net, training=False))
        cl.enqueue_copy(queue, out[start:start + len(chunk)], buffer(plan.output))
    return out[0] if single else out


@opencl_errors
def train(net: Network, params: LearningParameters, x: np.ndarray, y: np.ndarray,
          per_example: bool = False, loss: str = "squared_error",
          progress: Callable[[int], None] | None = None) -> Network:
    """Grenade's train: update `net` in place from inputs `x` and targets `y`; returns `net`.

    Shape: x is one sample (input.dims) or a batch (N, *input.dims); y likewise with
    output.dims. With a batch, one step on the gradient averaged over the batch (N = 1 is
    exactly Grenade's step); with `per_example=True`, N of Grenade's steps, one per example in
    order, each moving the weights before the next example is seen, run by a kernel that loops
    over the examples on the device (`grenade_py.fused`) where every layer has a device-side
    form, else layer by layer with identical results; launched for runs of about FUSED_WORK
    examples x parameters, each waited for, so that Ctrl-C is honoured within ~0.1 s.
    `loss`: "squared_error" (Grenade's gradient output - target) or "cross_entropy" (network
    ending in Softmax; gradient p - t at the logits).
    `progress(done)` is called now and then with the number of examples done (per_example only).
    Nothing is read back to the host.
    """
    params = _check(net, params, loss)
    xs, ys = _examples(net, x, y, loss)
    queue = net.device.queue
    if not per_example:
        plan = execution.plan(net, len(xs))
        _upload(queue, plan, xs, ys)
        _step(net, plan, params, loss)
        return net
    xs_dev, ys_dev = net.device.to_device(xs), net.device.to_device(ys)
    trainer = execution.fused(net) if loss == "squared_error" else None
    # Launches of bounded work (~10-100 ms), each waited for, so that Ctrl-C is honoured soon.
    bound = FUSED_WORK // net.flat["parameters"].size if trainer is not None else 256
    chunk = max(1, min(bound, len(xs) // 100 if progress is not None else len(xs)))
    for start in range(0, len(xs), chunk):
        count = min(chunk, len(xs) - start)
        if trainer is not None:
            trainer(xs_dev, ys_dev, start, count, params)
        else:
            _train_layer_by_layer(net, params, xs_dev, ys_dev, start, count, loss)
        queue.finish()
        if progress is not None:
            progress(start + count)
    return net


def _train_layer_by_layer(net: Network, params: LearningParameters, xs: cl_array.Array,
                          ys: cl_array.Array, start: int, count: int, loss: str) -> None:
    """Grenade steps for examples start .. start + count - 1, a few launches per layer each."""
    plan, queue = execution.plan(net, 1), net.device.queue
    x_bytes = plan.input.nbytes
    y_bytes = plan.target.nbytes
    for i in range(start, start + count):
        cl.enqueue_copy(queue, buffer(plan.input), buffer(xs), byte_count=x_bytes,
                        src_offset=i * x_bytes)
        cl.enqueue_copy(queue, buffer(plan.target), buffer(ys), byte_count=y_bytes,
                        src_offset=i * y_bytes)
        _step(net, plan, params, loss)


@opencl_errors
def back_propagate(net: Network, x: np.ndarray, y: np.ndarray,
                   loss: str = "squared_error") -> list[dict[str, np.ndarray]]:
    """Grenade's backPropagate: every layer's gradient for inputs `x` and targets `y`, averaged
    over the batch, as host copies shaped as `net.get_parameters()`. Leaves the gradients on the
    device, where `apply_update` uses them."""
    check_loss(net, loss)
    xs, ys = _examples(net, x, y, loss)
    plan = execution.plan(net, len(xs))
    _upload(net.device.queue, plan, xs, ys)
    _step(net, plan, None, loss)
    return [{k: v.get() for k, v in layer.gradients.items()} for layer in net.layers]


@opencl_errors
def apply_update(net: Network, params: LearningParameters,
                 gradients: Gradients | None = None) -> None:
    """Grenade's applyUpdate: one momentum + L2 descent step of every layer, from `gradients`
    (as `run_gradient` returns them), else from those the last backward pass left."""
    params = _check(net, params)
    if gradients is not None:
        if gradients.flat.shape != net.flat["gradients"].shape:
            raise ValueError("these gradients belong to another network")
        cl.enqueue_copy(net.device.queue, buffer(net.flat["gradients"]), buffer(gradients.flat))
    execution.update(net, params)()


class Tapes:
    """What `run_network` keeps of a forward pass (Grenade's tapes): the buffers of a batch, its
    own, so that several forward passes can be held at once."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.backward: list | None = None
        self.dx: cl_array.Array | None = None


@dataclass(frozen=True)
class Gradients:
    """The gradients of a network's parameters, as one flat device buffer (`run_gradient`)."""

    flat: cl_array.Array


@opencl_errors
def run_network(net: Network, x: np.ndarray,
                reuse: Tapes | None = None) -> tuple[Tapes, np.ndarray]:
    """Grenade's runNetwork: the forward pass of `x` (one sample or a batch), as in training,
    keeping its tapes for `run_gradient`; returns (tapes, output). Tapes have buffers of their
    own, so several passes can be held at once; `reuse` gives back tapes no longer needed, whose
    buffers and launches then serve this pass (same batch size) instead of new ones."""
    net.check_runnable()
    xs, single = _batch(x, net.input_shape, "x", net.device.dtype)
    if reuse is not None and reuse.plan.n == len(xs):
        tapes = reuse
    else:
        tapes = Tapes(execution.Plan(net, len(xs)))
    plan = tapes.plan
    cl.enqueue_copy(net.device.queue, buffer(plan.input), xs)
    enqueue(plan.forward(net, training=True))
    out = plan.output.get()
    return tapes, out[0] if single else out


@opencl_errors
def run_gradient(net: Network, tapes: Tapes, dy: np.ndarray) -> tuple[Gradients, np.ndarray]:
    """Grenade's runGradient: the backward pass from `dy`, the delta at the output of the
    forward pass `tapes` kept. Returns the parameters' gradients (summed over the batch; for
    `apply_update`) and the delta at the input, shaped as the input."""
    plan = tapes.plan
    dys, single = _batch(dy, net.output_shape, "dy", net.device.dtype)
    if len(dys) != plan.n:
        raise ValueError(f"dy has {len(dys)} samples but the tapes hold {plan.n}")
    cl.enqueue_copy(net.device.queue, buffer(plan.delta), dys)
    if tapes.backward is None:
        tapes.dx = net.device.zeros(plan.input.shape)
        tapes.backward = net.backward(plan.n, plan.input, plan.output, plan.delta, tapes.dx,
                                      plan.buffers)
    enqueue(tapes.backward)
    assert tapes.dx is not None
    dx = tapes.dx.get()
    return Gradients(net.flat["gradients"].copy()), dx[0] if single else dx


@opencl_errors
def evaluate(net: Network, x: np.ndarray, y: np.ndarray,
             loss: str = "squared_error") -> dict[str, float]:
    """Mean loss and accuracy of `net` on (x, y), as `fit` reports them (see
    `grenade_py.losses`), computed on the device in chunks of up to RUN_CHUNK samples."""
    check_loss(net, loss)
    xs, ys = _examples(net, x, y, loss)
    device = net.device
    acc = device.zeros((2,))
    for start in range(0, len(xs), RUN_CHUNK):
        plan = execution.plan(net, min(RUN_CHUNK, len(xs) - start))
        _upload(device.queue, plan, xs[start:start + plan.n], ys[start:start + plan.n])
        enqueue(plan.forward(net, training=False))
        enqueue(metric_launches(net, plan, loss, acc))
        device.queue.finish()  # the chunk's host arrays must outlive their copies
    totals = acc.get()
    return {"loss": float(totals[0]) / len(xs), "accuracy": float(totals[1]) / len(xs)}


@opencl_errors
def fit(net: Network, params: LearningParameters, x: np.ndarray, y: np.ndarray,
        batch_size: int = 32, epochs: int = 1, shuffle: bool = True, seed: int | None = None,
        loss: str = "squared_error", progress: Callable[[int, int], None] | None = None,
        validation: tuple[np.ndarray, np.ndarray] | None = None,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
        comm: Any = None) -> list[dict[str, Any]]:
    """Train for `epochs` passes over (x, y) in minibatches of `batch_size` (the last one of an
    epoch may be smaller), each step on the batch's averaged gradient.

    With `comm` (an MPI communicator, see `grenade_py.distributed`), every rank of it calls fit
    with the same data and seed; each computes its shard of every batch, and one Allreduce per
    step gives all the batch's average gradient: the weights one process would reach.

    The dataset is uploaded once. Each epoch's order is a seeded permutation (drawn on the host,
    uploaded once per epoch), and every batch is gathered from it on the device; no step waits
    for the host. Loss and accuracy are summed on the device and read once per epoch.

    Shape: x (N, *input.dims), y (N, *output.dims).
    `progress(step, steps)` is called about 50 times an epoch (it waits for the device then),
    `on_epoch(record)` after each epoch. Returns one dict per epoch: epoch, loss (mean
    training loss, measured on each batch before its update), accuracy, examples_per_s,
    seconds, and with `validation=(xv, yv)`, val_loss and val_accuracy.
    """
    params = _check(net, params, loss)
    batch_size, epochs = _count(batch_size, "batch_size", 1), _count(epochs, "epochs", 0)
    group = None
    if comm is not None:
        from grenade_py.distributed import Group

        if batch_size == 1:
            raise ValueError("batch_size 1 is Grenade's per-example training, which is serial "
                             "(each step needs the weights the last one left): give distributed "
                             "training a larger global batch")
        group = Group(comm, net)
    xs, ys = _examples(net, x, y, loss)
    if validation is not None:
        _examples(net, *validation, loss)  # fail before training, not after the first epoch
    device, queue, count = net.device, net.device.queue, len(xs)
    xs_dev = device.to_device(xs.reshape(count, -1))
    ys_dev = device.to_device(ys.reshape(count, -1))
    order = cl_array.to_device(queue, np.arange(count, dtype=np.int32))
    acc = device.zeros((2,))
    rng = np.random.default_rng(seed)
    steps = -(-count // batch_size)
    report = max(1, steps // 50)

    def shard(start: int, n: int) -> tuple[int, int]:
        """This process's first row and row count of the batch of n at `start`."""
        if group is None:
            return start, n
        first, last = group.shard(n)
        return start + first, last - first

    sizes = {shard(0, n)[1] for n in {min(batch_size, count), count - (steps - 1) * batch_size}}
    plans = {n: execution.plan(net, n) for n in sizes if n > 0}
    gathers = {
        n: [device.launch("gather_rows", (src.shape[1], n), n, src.shape[1], 0, order, src, dst)
            for src, dst in ((xs_dev, plan.input), (ys_dev, plan.target))]
        for n, plan in plans.items()
    }
    metrics = {n: metric_launches(net, plan, loss, acc) for n, plan in plans.items()}
    update = execution.update(net, params)
    if group is not None:
        group.broadcast()
    history = []
    for epoch in range(epochs):
        if shuffle:  # the host array must live until the copy is done: the epoch's end
            permutation = rng.permutation(count).astype(np.int32)
            order.set(permutation, async_=True)
        acc.set(np.zeros(2, dtype=device.dtype))
        start_time = time.perf_counter()
        for step in range(steps):
            n = min(batch_size, count - step * batch_size)
            first, rows = shard(step * batch_size, n)
            if rows:
                plan = plans[rows]
                for gather in gathers[rows]:
                    gather.set_arg(2, first)
                    gather()
                enqueue(plan.forward(net, training=True))
                enqueue(metrics[rows])
                plan.loss_scale(net, loss, 1.0 / n)
                enqueue(plan.gradient(net, loss))
            if group is not None:
                group.allreduce_gradients(rows, n)
            update()
            if progress is not None and ((step + 1) % report == 0 or step + 1 == steps):
                queue.finish()
                progress(step + 1, steps)
        totals = acc.get()  # waits for the epoch's last step
        if group is not None:
            totals = group.sum(totals)
        seconds = time.perf_counter() - start_time
        record: dict[str, Any] = {
            "epoch": epoch + 1, "loss": float(totals[0]) / count,
            "accuracy": float(totals[1]) / count, "examples_per_s": count / seconds,
            "seconds": seconds,
        }
        if not np.isfinite(record["loss"]):
            log.warning("training loss is %s in epoch %d: lower the learning rate",
                        record["loss"], epoch + 1)
        if validation is not None:
            scores = evaluate(net, *validation, loss=loss)
            record["val_loss"], record["val_accuracy"] = scores["loss"], scores["accuracy"]
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    return history
