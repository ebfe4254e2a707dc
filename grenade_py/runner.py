"""Running and training networks, in Grenade's words: run_net, train, back_propagate,
apply_update; and fit, for epochs of minibatches over a dataset kept on the device.
numpy in, numpy out; within a step everything stays on the device."""
from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pyopencl as cl
import pyopencl.array as cl_array

from grenade_py import execution, inputs
from grenade_py.device import buffer, opencl_errors
from grenade_py.distributed import Alone, Group, ends_the_job_on_error
from grenade_py.errors import ShapeError
from grenade_py.execution import Step, enqueue
from grenade_py.fused import FusedTrainer, fused_runner, kernels_bits
from grenade_py.host_memory import check_host_memory
from grenade_py.losses import Loss, loss_named
from grenade_py.network import Network
from grenade_py.optimizers import Optimizer, optimizer
from grenade_py.schedules import Schedule, epoch_optimizers
from grenade_py.waits import polls, read, row_work

log = logging.getLogger("grenade_py")

#: run_net and evaluate split larger inputs into chunks of at most this many samples, and of
#: at most RUN_BYTES of batch buffers.
RUN_CHUNK = 4096
RUN_BYTES = 1 << 28


def run_chunk(net: Network) -> int:
    """How many samples run_net and evaluate run at a time: RUN_CHUNK, fewer where a sample's
    buffers are large (an Inception network's are ~1.6 MB). Held on the network (working it
    out took 60-250 us: a one-sample run_net's kernels take less)."""
    if "run_chunk" not in net.held:
        per_sample = sum(math.prod(shape) for shape in net.inference_buffers(1).values()) + 2 * (
            math.prod(net.input_shape.dims) + math.prod(net.output_shape.dims))
        net.held["run_chunk"] = max(1, min(RUN_CHUNK, RUN_BYTES // (
            per_sample * np.dtype(net.device.dtype).itemsize)))
    return int(net.held["run_chunk"])


#: run_net gives one sample of a network of at most this many parameters by one launch of
#: its layers' fused forms (`grenade_py.fused.FusedRunner`: the bits of a one-row pass of
#: their kernels), once the network has run FUSED_RUN_AFTER single samples (the build takes
#: ~0.5 s the first time). Interleaved with the layers' kernels, run_net's time: the MNIST
#: MLP (407k parameters) 0.83-0.92x, the circles network 0.83x. Not for batches: their rows
#: would take other bits than the batch's GEMMs give them, and the loop runs on one core. train
#: on one example does likewise with the fused per-example loop (`_fused_example`).
FUSED_RUN_PARAMETERS = 1 << 20
FUSED_RUN_AFTER = 16
#: Per-example training launches about this many examples x parameters at a time.
FUSED_WORK = 1 << 25
#: train and train_sequences upload up to this many bytes of inputs and targets without
#: waiting for their work (keeping the upload until the next call); more, they wait.
QUEUED_BYTES = 1 << 20
#: fit keeps at most about twice this many steps queued (so Ctrl-C is honoured within a few
#: steps, not at the epoch's end, with no progress bar to wait on the device).
QUEUED_STEPS = 16


def _check(net: Network, params: object, loss: str | Loss) -> tuple[Optimizer, Loss]:
    """`params` as an optimiser whose values the device's precision holds, and `loss` as a
    Loss that fits the network."""
    net.check_runnable()
    chosen = loss_named(loss)
    chosen.check(net)
    return optimizer(params, net.device.dtype), chosen


def _upload(queue: cl.CommandQueue, step: Step, xs: np.ndarray, ys: np.ndarray
            ) -> list[cl.Event]:
    """Enqueue copies of (x, y) into the step's input and target, not waited for: their
    events, which the caller keeps until a blocking read after them (pyopencl waits for a
    copy whose event is dropped)."""
    return [cl.enqueue_copy(queue, buffer(step.input), xs, is_blocking=False),
            cl.enqueue_copy(queue, buffer(step.target), ys, is_blocking=False)]


def held_sums(net: Network, user: str) -> cl_array.Array:
    """The sums (loss, correct, count) that `user` (evaluate, fit, SymbolCorpus) adds up on
    the device, held on the network between calls, so that the launches adding to them
    (`Step.metrics`, kept by each Step for each sum buffer) are made once: a new kernel object
    costs ~0.5 ms in pyopencl, more than a small call's kernels."""
    if user not in net.held:
        net.held[user] = net.device.zeros((3,))
    return cast(cl_array.Array, net.held[user])


def _train_queued(net: Network, step: Step, xs: np.ndarray, ys: np.ndarray,
                  params: Optimizer | None) -> None:
    """Enqueue `step.train(params)` on (x, y), uploaded as one copy of a host array laid out as
    the step's io buffer (a copy: the caller's arrays are free to change once this returns),
    not waited for. The work of the call before the last is waited for first, so that in a
    loop of calls (Grenade's fold of train) the device has the next call's work while the
    host prepares the one after, and no more is queued. A batch of more than QUEUED_BYTES is
    copied in place and waited for, as its kernels take far longer than the wait: the host
    then holds no copy of it once this returns. One example of a small network trains by one
    launch of the fused per-example loop where `_fused_example` says so: the same bits."""
    pending = net.held.setdefault("queued", [])
    if xs.nbytes + ys.nbytes > QUEUED_BYTES:
        pending.clear()  # (their uploads are waited for as they are dropped)
        for copied in _upload(net.device.queue, step, xs, ys):
            copied.wait()
        step.train(params)
        return
    if len(pending) == 2:
        pending.pop(0)[0].wait()
    host = step.host_io(xs, ys)
    upload = cl.enqueue_copy(net.device.queue, buffer(step.io), host, is_blocking=False)
    if params is not None and (trainer := _fused_example(net, step, params)) is not None:
        trainer(step.input, step.target, 0, 1, params)
    else:
        step.train(params)
    # The upload's event holds the host array (pyopencl waits for it when it is dropped).
    pending.append((cl.enqueue_marker(net.device.queue), upload))
    net.device.queue.flush()


def _after_singles(net: Network, key: str, make: Callable[[], Any]) -> Any:
    """What `make()` gave, made once a network of at most FUSED_RUN_PARAMETERS parameters has
    made FUSED_RUN_AFTER one-sample calls of kind `key` (counted here; the fused loops' builds
    take ~0.5 s the first time); None before, and for larger networks. Held on the network
    as [calls, what make gave]: run_net's and train's switch to the fused loops."""
    if net.parameter_count > FUSED_RUN_PARAMETERS:
        return None
    held = net.held.setdefault(key, [0, None])
    held[0] += 1
    if held[0] == FUSED_RUN_AFTER:
        held[1] = make()
    return held[1]


def _fused_example(net: Network, step: Step, params: Optimizer) -> FusedTrainer | None:
    """The fused per-example loop that trains a one-row `step` in one launch, past
    `_after_singles`' count, where it gives the bits of the step's kernels
    (`fused.kernels_bits`) and `Step.fused` allows; else None. The loop leaves no gradients in
    the flat buffer, as per-example training does not."""
    if step.rows != 1 or not _after_singles(net, "fused train", lambda: kernels_bits(net)):
        return None
    return step.fused(params)


@opencl_errors
def run_net(net: Network, x: np.ndarray) -> np.ndarray:
    """Grenade's runNet: the network's output for `x`.

    Shape: one sample `input.dims` -> `output.dims`, or a batch (N, *input.dims) ->
    (N, *output.dims), computed in chunks of up to RUN_CHUNK samples (`run_chunk`).
    """
    net.check_runnable()
    batch, single = inputs.samples(x, net.input_shape, "x", net.device.dtype)
    shape = (len(batch), *net.output_shape.dims)
    check_host_memory(f"run_net's outputs for {len(batch)} samples",
                      math.prod(shape) * np.dtype(net.device.dtype).itemsize)
    out = np.empty(shape, dtype=net.device.dtype)
    if len(batch) == 1 and (runner := _after_singles(net, "fused run",
                                                     lambda: fused_runner(net))) is not None:
        runner(batch, out)
        return out[0] if single else out
    queue = net.device.queue
    size = run_chunk(net)
    for start in range(0, len(batch), size):
        chunk = batch[start:start + size]
        step = execution.steps(net, len(chunk), inference=True)
        # Not waited for: the read below waits for it. (pyopencl waits for a copy whose event
        # is dropped, so the event is kept until then.)
        upload = cl.enqueue_copy(queue, buffer(step.input), chunk, is_blocking=False)
        step.forward(training=False)
        read(queue, out[start:start + len(chunk)], step.output,
             polls(net.device, len(chunk), net.parameter_count, row_work(net)))
        del upload
    return out[0] if single else out


@opencl_errors
def train(net: Network, params: Optimizer, x: np.ndarray, y: np.ndarray,
          per_example: bool = False, loss: str | Loss = "squared_error",
          progress: Callable[[int], None] | None = None) -> Network:
    """Grenade's train: update `net` in place from inputs `x` and targets `y`; returns `net`.

    Shape: x is one sample (input.dims) or a batch (N, *input.dims); y likewise with
    output.dims. With a batch, one step on the gradient averaged over the batch (N = 1 is
    exactly Grenade's step); with `per_example=True`, N of Grenade's steps, one per example in
    order, each moving the weights before the next example is seen, run by a kernel that loops
    over the examples on the device (`grenade_py.fused`) where every layer has a device-side
    form, else layer by layer with the same results (on a GPU, to rounding); launched for runs
    of about FUSED_WORK examples x parameters, each waited for, so that Ctrl-C is honoured
    within ~0.1 s.
    `params`: the optimiser (`LearningParameters`/`SGD`, `Adam`, `AdamW`; see
    `grenade_py.optimizers`); per-example training takes one optimiser step per example.
    `loss`: "squared_error" (Grenade's gradient output - target) or "cross_entropy" (network
    ending in Softmax; gradient p - t at the logits), or a Loss.
    `progress(done)` is called now and then with the number of examples done (per_example only).
    Nothing is read back to the host. A batch's step returns once it is queued (with the step
    of the call before last done), so that a loop of calls keeps the device busy; a step on one
    example of a network that has trained FUSED_RUN_AFTER single examples runs as one launch
    of the fused per-example loop where it gives the same bits (see `_fused_example`).
    """
    params, chosen = _check(net, params, loss)
    xs, ys = inputs.examples(net, x, y, chosen)
    if not per_example:
        _train_queued(net, execution.steps(net, len(xs), chosen), xs, ys, params)
        return net
    xs_dev, ys_dev = net.device.to_device(xs), net.device.to_device(ys)
    step = execution.steps(net, 1, chosen)
    trainer = step.fused(params)
    bound = FUSED_WORK // net.flat["parameters"].size if trainer else 256
    try:
        _in_launches(net, len(xs), min(bound, len(xs) // 100 if progress else len(xs)),
                     lambda start, count: step.train_examples(params, xs_dev, ys_dev, start,
                                                              count), progress)
    finally:  # the loop is held on the network: it lets go of this call's data, even after
        if trainer is not None:  # an error or Ctrl-C (work still queued keeps what it uses)
            trainer.release()
    return net


def _in_launches(net: Network, total: int, chunk: int, run: Callable[[int, int], None],
                 progress: Callable[[int], None] | None) -> None:
    """Per-example work on examples 0 .. total - 1 as `run(start, count)` over runs of about
    `chunk` (at least 1), each waited for, so that Ctrl-C is honoured soon; `progress(done)`
    after each."""
    chunk = max(1, chunk)
    for start in range(0, total, chunk):
        count = min(chunk, total - start)
        run(start, count)
        net.device.queue.finish()
        if progress is not None:
            progress(start + count)


@opencl_errors
def back_propagate(net: Network, x: np.ndarray, y: np.ndarray,
                   loss: str | Loss = "squared_error") -> list[dict[str, np.ndarray]]:
    """Grenade's backPropagate: every layer's gradient for inputs `x` and targets `y`, averaged
    over the batch, as host copies shaped as `net.get_parameters()`. Leaves the gradients on the
    device, where `apply_update` uses them."""
    net.check_runnable()
    chosen = loss_named(loss)
    xs, ys = inputs.examples(net, x, y, chosen)
    _train_queued(net, execution.steps(net, len(xs), chosen), xs, ys, None)
    return net.host_copies("gradients")


@opencl_errors
def apply_update(net: Network, params: Optimizer, gradients: Gradients | None = None) -> None:
    """Grenade's applyUpdate: one optimiser step of every layer (Grenade's momentum + L2
    descent under SGD), from `gradients` (as `run_gradient` returns them), else from those the
    last `back_propagate` left on the device (a `train` on one example through the fused loop
    leaves none there)."""
    params, _ = _check(net, params, "squared_error")
    if gradients is not None:
        if not isinstance(gradients, Gradients):
            raise TypeError(f"gradients must be what run_gradient returns, got "
                            f"{type(gradients).__name__} (after back_propagate, leave them out: "
                            "the gradients it left on the device are applied)")
        if gradients.flat.shape != net.flat["gradients"].shape:
            raise ValueError("these gradients belong to another network")
        inputs.same_device([gradients.flat], net.device, "the gradients")
        cl.enqueue_copy(net.device.queue, buffer(net.flat["gradients"]), buffer(gradients.flat))
    execution.steps(net, 1).update(params)


class Tapes:
    """What `run_network` keeps of a forward pass (Grenade's tapes): a Step of its own, whose
    buffers hold the pass (so several can be held at once) and the input's delta. Once the
    tapes are dropped, the Step waits on the network (up to `kept` of them, holding at most
    `kept_bytes` of buffers) for the next pass over as many rows: a Step is buffers and kernel
    objects, whose making took 3-4x the time of an MNIST MLP's forward and backward pass
    through them at batch 1 and 64."""

    kept, kept_bytes = 8, 1 << 28

    def __init__(self, step: Step) -> None:
        self.step = step

    def __del__(self) -> None:
        free = self.step.net.held.setdefault("free tapes", [])
        if len(free) < self.kept and sum(
                step.nbytes for step in free) + self.step.nbytes <= self.kept_bytes:
            free.append(self.step)


@dataclass(frozen=True)
class Gradients:
    """The gradients of a network's parameters, as one flat device buffer (`run_gradient`)."""

    flat: cl_array.Array


def _copy_in(net: Network, dst: cl_array.Array, src: cl_array.Array) -> None:
    """Enqueue a device copy of `src` (a contiguous array, perhaps a slice) into `dst`."""
    cl.enqueue_copy(net.device.queue, buffer(dst), cast(cl.Buffer, src.base_data),
                    src_offset=src.offset, byte_count=src.nbytes)


@opencl_errors
def run_network(net: Network, x: np.ndarray | cl_array.Array,
                reuse: Tapes | None = None) -> tuple[Tapes, Any]:
    """Grenade's runNetwork: the forward pass of `x` (one sample or a batch), as in training,
    keeping its tapes for `run_gradient`; returns (tapes, output). Tapes have buffers of their
    own, so several passes can be held at once; `reuse` gives back tapes no longer needed, whose
    buffers and launches then serve this pass (same batch size) instead of new ones.

    With `x` a device array (N, *input.dims) of the network's precision (a pyopencl array on
    its device; a slice of a larger one too), the output is a new device array and nothing
    waits for the device: chains of passes, such as a GAN's exchange, run without host round
    trips. Its values are not checked for NaN, as a host array's are."""
    net.check_runnable()
    if isinstance(x, cl_array.Array):
        tapes = _tapes(net, inputs.device_samples(x, net.input_shape, "x", net.device), reuse)
        _copy_in(net, tapes.step.input, x)
        tapes.step.forward(training=True)
        return tapes, tapes.step.output.copy()
    xs, single = inputs.samples(x, net.input_shape, "x", net.device.dtype)
    tapes = _tapes(net, len(xs), reuse)
    cl.enqueue_copy(net.device.queue, buffer(tapes.step.input), xs)
    tapes.step.forward(training=True)
    out = tapes.step.output.get()
    return tapes, out[0] if single else out


def _tapes(net: Network, rows: int, reuse: Tapes | None) -> Tapes:
    """`reuse` if it holds a pass of `net` over as many rows, else tapes over a Step that
    dropped tapes left (see Tapes), else over a new one."""
    if isinstance(reuse, Tapes) and reuse.step.net is net and reuse.step.rows == rows:
        return reuse
    free = net.held.get("free tapes", [])
    step = next((step for step in free if step.rows == rows), None)
    if step is not None:
        free.remove(step)
    return Tapes(step or Step(net, rows, input_delta=True))


@opencl_errors
def run_gradient(net: Network, tapes: Tapes, dy: np.ndarray | cl_array.Array
                 ) -> tuple[Gradients, Any]:
    """Grenade's runGradient: the backward pass from `dy`, the delta at the output of the
    forward pass `tapes` kept. Returns the parameters' gradients (summed over the batch; for
    `apply_update`) and the delta at the input, shaped as the input: a new device array when
    `dy` is one (see run_network), else a host array."""
    if not isinstance(tapes, Tapes) or tapes.step.net is not net:
        raise ValueError("tapes must be what run_network returned for this network")
    step = tapes.step
    delta, dx = step.delta, step.deltas[0]
    assert delta is not None and dx is not None  # run_network's Steps keep both
    if isinstance(dy, cl_array.Array):
        rows = inputs.device_samples(dy, net.output_shape, "dy", net.device)
    else:
        dys, single = inputs.samples(dy, net.output_shape, "dy", net.device.dtype, output=True)
        rows = len(dys)
    if rows != step.rows:
        raise ValueError(f"dy has {rows} samples but the tapes hold {step.rows}")
    if isinstance(dy, cl_array.Array):
        _copy_in(net, delta, dy)
    else:
        cl.enqueue_copy(net.device.queue, buffer(delta), dys)
    enqueue(step.backward_launches()[1:])  # the layers' backward pass, without the loss
    gradients = Gradients(net.flat["gradients"].copy())
    if isinstance(dy, cl_array.Array):
        return gradients, dx.copy()
    out = dx.get()
    return gradients, out[0] if single else out


@opencl_errors
def evaluate(net: Network, x: np.ndarray, y: np.ndarray,
             loss: str | Loss = "squared_error") -> dict[str, float]:
    """Mean loss and accuracy of `net` on (x, y), as `fit` reports them (see
    `grenade_py.losses`), computed on the device in chunks of up to RUN_CHUNK samples
    (`run_chunk`)."""
    net.check_runnable()
    chosen = loss_named(loss)
    chosen.check(net)
    xs, ys = inputs.examples(net, x, y, chosen)
    device = net.device
    acc = held_sums(net, "evaluate")
    acc.fill(0)
    size = run_chunk(net)
    uploads = []
    for start in range(0, len(xs), size):
        step = execution.steps(net, min(size, len(xs) - start), chosen, inference=True)
        uploads += _upload(device.queue, step, xs[start:start + step.rows],
                           ys[start:start + step.rows])
        step.forward(training=False)
        enqueue(step.metrics(acc))
    totals = acc.get()
    del uploads
    return {"loss": float(totals[0]) / len(xs), "accuracy": float(totals[1]) / len(xs)}


@ends_the_job_on_error
@opencl_errors
def fit(net: Network, params: Optimizer, x: np.ndarray, y: np.ndarray,
        batch_size: int = 32, epochs: int = 1, shuffle: bool = True, seed: int | None = None,
        loss: str | Loss = "squared_error", progress: Callable[[int, int], None] | None = None,
        validation: tuple[np.ndarray, np.ndarray] | None = None,
        on_epoch: Callable[[dict[str, Any]], bool | None] | None = None,
        comm: Any = None, schedule: Schedule | None = None, first_epoch: int = 0
        ) -> list[dict[str, Any]]:
    """Train for `epochs` passes over (x, y) in minibatches of `batch_size` (the last one of an
    epoch may be smaller), each an optimiser step (`params`: LearningParameters/SGD, Adam,
    AdamW) on the batch's averaged gradient.

    `schedule`: the rate of each epoch, from `params.rate` (see `schedules.schedule_rate`:
    "constant", "step:EVERY:FACTOR", "exponential:FACTOR", "cosine", or any callable
    epoch -> rate, epochs counted from 0); nothing is rebuilt when it changes.
    `first_epoch`: the epochs a resumed run has done already (a loaded model's): this call's
    are numbered on from there, take the schedule's rates for epochs first_epoch .. of
    first_epoch + epochs, and shuffle as those epochs of one run from `seed` would, so that a
    run saved and resumed ends with the weights of one that was not.

    With `comm` (an MPI communicator, see `grenade_py.distributed`), every rank of it calls fit
    with the same data and seed; each computes its shard of every batch, and one Allreduce per
    step gives all the batch's average gradient: the weights one process would reach. A rank
    that fails aborts the whole job with its error (distributed.abort_on_error), unless the
    caller's own abort_on_error block is there to do it.

    The dataset is uploaded once. Each epoch's order is a seeded permutation (drawn on the host,
    uploaded once per epoch), and every batch is gathered from it on the device; no step waits
    for the host. Loss and accuracy are summed on the device and read once per epoch. At
    batch_size 1 (Grenade's per-example training), the fused per-example loop runs the epoch
    where every layer has a device-side form (`train(per_example=True)`), the same steps.

    Shape: x (N, *input.dims), y (N, *output.dims).
    `progress(step, steps)` is called about 50 times an epoch (it waits for the device then),
    `on_epoch(record)` after each epoch; if it returns False, fit stops there (early stopping:
    with `comm`, as rank 0's says). Returns one dict per epoch done: epoch, rate, loss (mean
    training loss, measured on each batch before its update), accuracy, examples_per_s,
    seconds, and with `validation=(xv, yv)`, val_loss and val_accuracy.
    """
    params, chosen = _check(net, params, loss)
    batch_size = inputs.count(batch_size, "batch_size", 1)
    epochs = inputs.count(epochs, "epochs", 0)
    first_epoch = inputs.count(first_epoch, "first_epoch", 0)
    per_epoch = epoch_optimizers(schedule, params, first_epoch, epochs, net.device.dtype)
    group = Alone() if comm is None else Group(comm, net)
    if seed is not None:
        seed = inputs.count(seed, "seed", 0)
    xs, ys = inputs.examples(net, x, y, chosen)
    if validation is not None:
        if not isinstance(validation, (tuple, list)) or len(validation) != 2:
            raise ValueError("validation must be a pair (x, y) of inputs and targets")
        validation = inputs.examples(net, *validation, chosen, "validation[0] validation[1]")
    # Every rank trains as rank 0 does, shuffled as rank 0 is.
    seed = group.start(seed, precision=net.device.precision, data=(xs, ys),
                       batch_size=batch_size, epochs=epochs, first_epoch=first_epoch,
                       shuffle=shuffle, loss=chosen.name, optimizer=params,
                       rates=[p.rate for p in per_epoch])
    device, queue, count = net.device, net.device.queue, len(xs)
    xs_dev = device.to_device(xs.reshape(count, -1))
    ys_dev = device.to_device(ys.reshape(count, -1))
    order = cl_array.to_device(queue, np.arange(count, dtype=np.int32))
    # The sums and their launches are held (`held_sums`), and the Steps' gathers, which let go of
    # this call's data when it returns.
    acc = held_sums(net, "fit")
    rng = np.random.default_rng(seed)
    for _ in range(first_epoch if shuffle else 0):  # the orders of the epochs done
        rng.permutation(count)
    steps = -(-count // batch_size)
    report = max(1, steps // 50)
    # This process's rows of each batch size: all of them, or its shard; the first's, every batch's
    sizes = [group.shard(n)[1] - group.shard(n)[0]
             for n in (min(batch_size, count), count - (steps - 1) * batch_size)]
    held = {n: _batch_step(net, n, chosen, n == sizes[0], count, batch_size, group.share)
            for n in set(sizes) if n > 0}
    gathers = {n: step.gather(order, xs_dev, ys_dev) for n, step in held.items()}
    metrics = {n: step.metrics(acc) for n, step in held.items()}
    # batch 1 (one process): Grenade's per-example steps, in the fused loop where it runs
    fused = held[1].fused(params) if batch_size == 1 else None

    def one_batch(index: int, optimizer: Optimizer) -> None:
        """Batch `index` of the epoch's order (this process's shard of it): gathered on the
        device, forward, then the optimiser's step (`group.descend`)."""
        n = min(batch_size, count - index * batch_size)
        first, last = group.shard(n)
        step = held.get(last - first)
        if step is not None:
            gathers[step.rows].set("first", index * batch_size + first)
            gathers[step.rows]()
            step.forward(True, first)
        group.descend(step, optimizer, n, metrics.get(last - first))

    history: list[dict[str, Any]] = []
    queued: list[cl.Event] = []
    try:
        for epoch, epoch_params in enumerate(per_epoch):
            start_time = time.perf_counter()
            if shuffle:  # the host array must live until the copy is done: the epoch's end
                permutation = rng.permutation(count).astype(np.int32)
                order.set(permutation, async_=True)
            acc.set(np.zeros(3, dtype=device.dtype))
            if fused is not None:  # launches of bounded work; progress about 50 times
                _in_launches(net, count, min(FUSED_WORK // net.flat["parameters"].size,
                                             count // 50),
                             functools.partial(fused, xs_dev, ys_dev, optimizer=epoch_params,
                                               order=order, acc=acc),
                             None if progress is None else lambda done: progress(done, count))
            for index in range(steps if fused is None else 0):
                one_batch(index, epoch_params)
                if (index + 1) % QUEUED_STEPS == 0:  # wait for the marker QUEUED_STEPS steps back
                    queued.append(cl.enqueue_marker(queue))
                    if len(queued) > 1:
                        queued.pop(0).wait()
                if progress is not None and ((index + 1) % report == 0 or index + 1 == steps):
                    queue.finish()
                    progress(index + 1, steps)
            totals = group.epoch_totals(acc.get())  # (the read waits for the epoch's last step)
            history.append(_epoch_record(net, first_epoch + epoch + 1, epoch_params.rate, totals,
                                         count, time.perf_counter() - start_time, validation,
                                         chosen))
            if group.agree(on_epoch is not None and on_epoch(history[-1]) is False,
                           "on_epoch's stop"):
                break
    finally:  # the gathers and the fused loop are held: they let go of this call's data
        for gather in gathers.values():
            gather.set_all(dict.fromkeys(("order", "xs", "ys")))
        if fused is not None:
            fused.release()
    return history


def _batch_step(net: Network, n: int, loss: Loss, every: bool, count: int, batch_size: int,
                share: str) -> Step:
    """fit's Step for `n` rows (`every` batch's, else the last of each epoch's; `share`: how
    errors name this process's part of a batch), its training pass built, so that a layer that
    cannot train on n rows says so before training starts."""
    step = execution.steps(net, n, loss)
    try:
        step.forward_launches(True)
    except ShapeError as e:
        if not share and every:
            raise
        which, fix = (("every batch", "a larger batch_size") if every else
                      ("the last batch of each epoch", "a batch_size that leaves more"))
        raise ShapeError(f"{share}{which} has {n} example{'s' * (n > 1)} ({count} in batches of "
                         f"{batch_size}: choose {fix}), and {e}") from None
    return step


def _epoch_record(net: Network, epoch: int, rate: float, totals: np.ndarray, count: int,
                  seconds: float, validation: tuple[np.ndarray, np.ndarray] | None,
                  loss: Loss) -> dict[str, Any]:
    """fit's record of epoch `epoch` (counted from 1): its rate, mean training loss and
    accuracy from the device's sums `totals` over `count` examples, examples/s and `seconds`,
    and with `validation`, its scores there; a warning if the loss is not finite."""
    record: dict[str, Any] = {
        "epoch": epoch, "rate": rate, "loss": float(totals[0]) / count,
        "accuracy": float(totals[1]) / count, "examples_per_s": count / seconds,
        "seconds": seconds,
    }
    if not np.isfinite(record["loss"]):
        log.warning("training loss is %s in epoch %d: lower the learning rate",
                    record["loss"], epoch)
    if validation is not None:
        scores = evaluate(net, *validation, loss=loss)
        record["val_loss"], record["val_accuracy"] = scores["loss"], scores["accuracy"]
    return record
