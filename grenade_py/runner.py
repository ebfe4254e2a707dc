"""Running and training networks, in Grenade's words: run_net, train, back_propagate,
apply_update. numpy in, numpy out; within a step everything stays on the device."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyopencl as cl
import pyopencl.array as cl_array

from grenade_py.fused import fused_trainer
from grenade_py.learning import LearningParameters
from grenade_py.network import Network, Plan
from grenade_py.shapes import Shape

#: run_net splits larger inputs into chunks of this many samples.
RUN_CHUNK = 4096


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
    if not np.all(np.isfinite(array)):
        bad = np.argwhere(~np.isfinite(array.reshape(len(array), -1)))[0][0]
        raise ValueError(f"{what} holds NaN or Inf (first in sample {bad})")
    return np.ascontiguousarray(array, dtype=dtype), single


def _check_params(params: object) -> LearningParameters:
    if not isinstance(params, LearningParameters):
        raise TypeError(f"expected LearningParameters, got {params!r}")
    return params


def _enqueue(launches: list) -> None:
    for launch in launches:
        launch()


def _step(net: Network, plan: Plan, params: LearningParameters | None) -> None:
    """Forward, loss gradient, backward and (with params) the update, for data already in
    plan.acts[0] and plan.target."""
    _enqueue(plan.forward)
    plan.loss()
    _enqueue(plan.backward)
    if params is not None:
        apply_update(net, params)


def run_net(net: Network, x: np.ndarray) -> np.ndarray:
    """Grenade's runNet: the network's output for `x`.

    Shape: one sample `input.dims` -> `output.dims`, or a batch (N, *input.dims) ->
    (N, *output.dims), computed in chunks of up to RUN_CHUNK samples.
    """
    batch, single = _batch(x, net.input_shape, "x", net.device.dtype)
    out = np.empty((len(batch), *net.output_shape.dims), dtype=net.device.dtype)
    queue = net.device.queue
    for start in range(0, len(batch), RUN_CHUNK):
        chunk = batch[start:start + RUN_CHUNK]
        plan = net.plan(len(chunk))
        cl.enqueue_copy(queue, plan.acts[0].data, chunk, is_blocking=False)
        _enqueue(plan.forward)
        cl.enqueue_copy(queue, out[start:start + len(chunk)], plan.acts[-1].data)
    return out[0] if single else out


def train(net: Network, params: LearningParameters, x: np.ndarray, y: np.ndarray,
          per_example: bool = False,
          progress: Callable[[int], None] | None = None) -> Network:
    """Grenade's train: update `net` in place from inputs `x` and targets `y`; returns `net`.

    Shape: x is one sample (input.dims) or a batch (N, *input.dims); y likewise with
    output.dims. With a batch, one step on the gradient averaged over the batch (N = 1 is
    exactly Grenade's step); with `per_example=True`, N of Grenade's steps, one per example in
    order, each moving the weights before the next example is seen, run by one kernel that loops
    over the examples on the device (`grenade_py.fused`) where every layer has a device-side
    form, else layer by layer with identical results.
    The gradient pushed back from the output is `output - target`.
    `progress(done)` is called now and then with the number of examples done (per_example only).
    Nothing is read back to the host.
    """
    params = _check_params(params)
    xs, _ = _batch(x, net.input_shape, "x", net.device.dtype)
    ys, _ = _batch(y, net.output_shape, "y", net.device.dtype)
    if len(xs) != len(ys):
        raise ValueError(f"x has {len(xs)} samples but y has {len(ys)}")
    queue = net.device.queue
    if not per_example:
        plan = net.plan(len(xs))
        cl.enqueue_copy(queue, plan.acts[0].data, xs, is_blocking=False)
        cl.enqueue_copy(queue, plan.target.data, ys, is_blocking=False)
        _step(net, plan, params)
        return net
    xs_dev, ys_dev = net.device.to_device(xs), net.device.to_device(ys)
    chunk = max(1, len(xs) // 100) if progress is not None else len(xs)
    trainer = fused_trainer(net)
    for start in range(0, len(xs), chunk):
        count = min(chunk, len(xs) - start)
        if trainer is not None:
            trainer(xs_dev, ys_dev, start, count, params)
        else:
            _train_layer_by_layer(net, params, xs_dev, ys_dev, start, count)
        if progress is not None:
            queue.finish()
            progress(start + count)
    return net


def _train_layer_by_layer(net: Network, params: LearningParameters, xs: cl_array.Array,
                          ys: cl_array.Array, start: int, count: int) -> None:
    """Grenade steps for examples start .. start + count - 1, a few launches per layer each."""
    plan, queue = net.plan(1), net.device.queue
    x_bytes = plan.acts[0].nbytes
    y_bytes = plan.target.nbytes
    for i in range(start, start + count):
        cl.enqueue_copy(queue, plan.acts[0].data, xs.data, byte_count=x_bytes,
                        src_offset=i * x_bytes)
        cl.enqueue_copy(queue, plan.target.data, ys.data, byte_count=y_bytes,
                        src_offset=i * y_bytes)
        _step(net, plan, params)


def back_propagate(net: Network, x: np.ndarray, y: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Grenade's backPropagate: every layer's gradient for inputs `x` and targets `y`, averaged
    over the batch, as host copies shaped as `net.get_parameters()`. Leaves the gradients on the
    device, where `apply_update` uses them."""
    xs, _ = _batch(x, net.input_shape, "x", net.device.dtype)
    ys, _ = _batch(y, net.output_shape, "y", net.device.dtype)
    if len(xs) != len(ys):
        raise ValueError(f"x has {len(xs)} samples but y has {len(ys)}")
    plan = net.plan(len(xs))
    queue = net.device.queue
    cl.enqueue_copy(queue, plan.acts[0].data, xs, is_blocking=False)
    cl.enqueue_copy(queue, plan.target.data, ys, is_blocking=False)
    _step(net, plan, None)
    return [{k: v.get() for k, v in layer.gradients.items()} for layer in net.layers]


def apply_update(net: Network, params: LearningParameters) -> None:
    """Grenade's applyUpdate: one momentum + L2 descent step of every layer, from the gradients
    left on the device by the last backward pass."""
    params = _check_params(params)
    for layer in net.layers:
        _enqueue(layer.update(params))
