"""Running and training a RecurrentNetwork over sequences, in Grenade's words: run_recurrent
(runRecurrent over a sequence), train_recurrent (trainRecurrent) and train_sequences (many
sequences, in Grenade's order or as ordinary minibatch BPTT).

Each call is a short loop around a sequence `Step` (grenade_py.execution): layer by layer, not
step by step: a layer's input for every step is known once the layer below has run over the
whole sequence, so a feed-forward layer runs once over all steps (as a batch of rows), and a
recurrent layer as one GEMM over all steps plus one launch that loops over them. Backwards, the
same in reverse. The update is one launch per parameter array, which applies the per-step
gradients one at a time as Grenade does (see `recurrent_update_at` in kernels/recurrent.cl).
Nothing is read back per step or per sequence.
"""
from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyopencl as cl
import pyopencl.array as cl_array

from grenade_py import inputs
from grenade_py.device import Launch, buffer, opencl_errors
from grenade_py.execution import Step, enqueue, sequence_steps
from grenade_py.losses import Loss, loss_named
from grenade_py.optimizers import Optimizer, optimizer
from grenade_py.recurrent_network import RecurrentNetwork
from grenade_py.runner import QUEUED_BYTES, held_sums
from grenade_py.waits import polls, read
from grenade_py.windows import ONE_HOT_PER_CALL, SymbolFills, train_symbol_windows, window_trainer

#: SymbolCorpus.train keeps at most about twice this many windows' launches queued.
WINDOWS_QUEUED = 256


@dataclass
class RecurrentState:
    """The recurrent layers' states after a run (Grenade's `RecurrentInputs`), on the device:
    one (batch, state size) array per cell (`RecurrentNetwork.recurrent_layers`: LSTM and
    BasicRecurrent layers, those in ConcatRecurrent branches included), in order. Pass it to
    run_recurrent to go on from where a run stopped."""

    states: list[cl_array.Array]

    def get(self) -> list[np.ndarray]:
        """Host copies of the states."""
        return [state.get() for state in self.states]


@opencl_errors
def train_sequences(net: RecurrentNetwork, learning: Optimizer, x: np.ndarray,
                    targets: np.ndarray, mask: np.ndarray | None = None, summed: bool = False,
                    loss: str | Loss = "squared_error", lengths: np.ndarray | None = None
                    ) -> None:
    """Train on B sequences of T steps: x (B, T, *in), targets (B, T, *out), mask (B, T) bool
    (True where a step has a target; other steps' targets are ignored; default: every step
    has one). Returns once the work is queued, and the call before it done (so a loop of calls
    keeps host and device busy without queueing without bound); a call uploading more than
    QUEUED_BYTES returns once its work is done, holding nothing of it.

    Default (Grenade's trainRecurrent, sequence after sequence): each sequence runs forward
    from the learned starting states; its error y - target (0 where no target) runs back
    through time, every per-step gradient computed from the weights before the sequence; then
    the per-step gradients are applied one at a time in time order, each a full momentum + L2
    step, and the starting states descend without momentum:
    state' = (1 - rate l2) state - rate dstate.
    `lengths` (B,) ints in [1, T]: sequence b is its first lengths[b] steps (the rest of its
    row is ignored), so windows of many lengths train in one call, in order.
    A small network trains all the sequences in one launch (grenade_py.windows), a larger one
    layer by layer, a launch per layer per sequence; the results are the same to rounding.
    Under Adam or AdamW (`learning`), each per-step gradient is one Adam step (t advancing per
    step), and the starting states take one Adam step per sequence from their summed delta,
    with moments of their own and a step count of their own (`state_steps`).
    `summed=True`: ordinary minibatch BPTT instead: the B sequences run together and one step
    applies the sum of all per-step gradients, averaged over the sequences.
    `loss="cross_entropy"` (a network ending in Softmax): the error p - target at the logits
    instead of Grenade's y - target at the output.
    """
    learning = optimizer(learning, net.device.dtype)
    if mask is None:
        mask = np.ones(np.shape(x)[:2], bool)
    xs, ts, ms = inputs.sequences(net, x, targets, mask)
    chosen = loss_named(loss)
    chosen.check(net)
    chosen.check_targets(ts.reshape(-1, *ts.shape[2:])[ms.reshape(-1) != 0], "targets")
    steps, batch = xs.shape[:2]
    counts = inputs.lengths(lengths, batch, steps)
    if summed and (counts != steps).any():
        raise ValueError("lengths apply to Grenade's order (summed=False); give summed BPTT "
                         "sequences of one length")
    queue = net.device.queue
    pending = net.held.get("pending")
    if pending is not None:  # at most one call's work queued behind this one's
        pending[0].wait()
    # Uploads do not wait: their events (pyopencl waits for a copy's event when it is
    # dropped) are kept until the next call has waited for this one.
    upload: object
    trainer = None if summed else window_trainer(net, learning, chosen)
    if trainer is not None:
        layout = trainer.layout(steps, batch)
        host = layout.pack(xs, ts, ms, counts)
        io, copied = trainer.upload(host)
        trainer(io, layout, counts, learning)
        upload, size = (copied, host), host.nbytes
    elif summed or (batch == 1 and counts[0] == steps):
        p = sequence_steps(net, steps, batch, chosen)
        host = p.host_io(xs, ts, ms)
        upload = cl.enqueue_copy(queue, buffer(p.io), host, is_blocking=False)
        size = host.nbytes
        p.train(learning, ordered=not summed)
    else:  # one upload (a host copy costs ~90 us on PoCL), then a device copy per sequence
        held = [sequence_steps(net, int(n), 1, chosen) for n in counts]
        staged = cl_array.to_device(queue, np.concatenate(
            [p.host_io(*(a[:n, s] for a in (xs, ts, ms)))
             for s, (p, n) in enumerate(zip(held, counts, strict=True))]), async_=True)
        at = 0
        for p in held:
            cl.enqueue_copy(queue, buffer(p.io), buffer(staged), byte_count=p.io.nbytes,
                            src_offset=at)
            at += p.io.nbytes
            p.train(learning, ordered=True)
        upload, size = staged, staged.nbytes  # it holds its upload's event
    marker = cl.enqueue_marker(queue)
    if size > QUEUED_BYTES:  # waited for, as train does: nothing of it is held on the network
        marker.wait()
        net.held.pop("pending", None)
    else:
        net.held["pending"] = (marker, upload)
        queue.flush()


def train_recurrent(net: RecurrentNetwork, learning: Optimizer,
                    examples: Sequence[tuple[np.ndarray, np.ndarray | None]],
                    loss: str | Loss = "squared_error") -> None:
    """Grenade's trainRecurrent: one sequence of (input, target or None) steps, trained as
    `train_sequences` does by default."""
    xs, ts, marks = inputs.recurrent_steps(net, examples)
    train_sequences(net, learning, xs, ts, marks, loss=loss)


@opencl_errors
def run_recurrent(net: RecurrentNetwork, x: np.ndarray, state: RecurrentState | None = None
                  ) -> tuple[np.ndarray, RecurrentState]:
    """Grenade's runRecurrent over whole sequences: the outputs for x (T, *in), or for B
    sequences (B, T, *in), with the recurrent states after the last step. The run starts from
    `state` (from an earlier run over as many sequences) or the learned starting states."""
    xs, single = inputs.run_sequences(net, x)
    steps, batch = xs.shape[:2]
    p = sequence_steps(net, steps, batch)
    queue, layers = net.device.queue, p.cells
    if state is not None and not isinstance(state, RecurrentState):
        raise TypeError(f"state must be a RecurrentState (what run_recurrent returns), got "
                        f"{type(state).__name__}")
    if state is not None:
        inputs.states(net, state.states, batch, layers)
        for s, held in zip(state.states, p.states, strict=True):
            cl.enqueue_copy(queue, buffer(held), buffer(s), byte_count=s.nbytes)
    else:
        enqueue(p.start)
    # Not waited for: the read of the outputs waits for it. (pyopencl waits for a copy whose
    # event is dropped, so the event is kept until then.)
    upload = cl.enqueue_copy(queue, buffer(p.input), xs, is_blocking=False)
    enqueue(p.forward_launches(False))
    after = []
    for (_, layer), held in zip(layers, p.states, strict=True):  # each filled by its copy
        s = cl_array.empty(queue, (batch, layer.state_size), net.device.dtype)
        cl.enqueue_copy(queue, buffer(s), buffer(held), byte_count=s.nbytes,
                        src_offset=steps * s.nbytes)
        after.append(s)
    # One step of one sequence (a generated symbol's) of a small network is polled for
    # (grenade_py.waits): sampling Shakespeare's network, 253 and 248 us a symbol against 303
    # and 288 blocking, taking turns.
    outputs = np.empty(p.acts[-1].shape, p.acts[-1].dtype)
    read(queue, outputs, p.acts[-1], polls(net.device, p.rows, net.parameter_count))
    ys = np.swapaxes(outputs.reshape(steps, batch, *net.output_shape.dims), 0, 1)
    del upload
    return (ys[0] if single else ys), RecurrentState(after)


@dataclass
class Metrics:
    """What training on symbol windows measured over the steps with a target, as the loss
    reports it everywhere (`grenade_py.losses`): the summed loss (cross entropy in nats, or
    squared error), the steps whose largest output was the target, and the steps."""

    loss: float = 0.0
    correct: float = 0.0
    steps: float = 0.0

    def __add__(self, other: Metrics) -> Metrics:
        return Metrics(self.loss + other.loss, self.correct + other.correct,
                       self.steps + other.steps)


class SymbolCorpus:
    """A text as symbol indices, kept on the device, trained on in windows: each window's
    one-hot inputs and targets are made on the device, so a window costs no host copy.

    Parameters:
        net: a RecurrentNetwork D1 n -> D1 n, n the alphabet's size.
        symbols: the text as ints in [0, n).
    """

    def __init__(self, net: RecurrentNetwork, symbols: np.ndarray) -> None:
        n = int(np.prod(net.input_shape.dims))
        if net.input_shape.dims != (n,) or net.output_shape.dims != (n,):
            raise ValueError(f"windows of symbols need a network D1 n -> D1 n, not "
                             f"{net.input_shape!r} -> {net.output_shape!r}")
        codes = np.asarray(symbols)
        if codes.ndim != 1 or len(codes) < 2 or not np.issubdtype(codes.dtype, np.integer) or \
                codes.min() < 0 or codes.max() >= n:
            raise ValueError(f"symbols must be a 1-D array of at least 2 ints in [0, {n})")
        self.net, self.size = net, len(codes)
        self.codes = cl_array.to_device(net.device.queue, codes.astype(np.int32))
        #: For each Step it has filled, the one-hot launch.
        self._fills: weakref.WeakKeyDictionary[Step, Launch] = weakref.WeakKeyDictionary()
        #: For the fused window loop, by (steps, windows): the layout, io buffer and one-hot
        #: launch of a chunk.
        self._window_fills: SymbolFills = {}

    @opencl_errors
    def train(self, learning: Optimizer, offsets: np.ndarray, steps: int,
              every: bool = False, batch: int = 1, loss: str | Loss = "squared_error"
              ) -> Metrics:
        """Train on the windows starting at `offsets`: `steps` inputs each, the target of step t
        the symbol after it, on every step (`every`) or on the last only (Grenade's
        shakespeare.hs). batch 1: Grenade's trainRecurrent per window, in order; batch B:
        summed-gradient BPTT over B windows at a time (a last partial batch is dropped).
        `loss` as in train_sequences. Returns what was measured, read once at the end."""
        learning = optimizer(learning, self.net.device.dtype)
        starts = np.asarray(offsets)
        inputs.count(steps, "steps", 1)
        inputs.count(batch, "batch", 1)
        if starts.ndim != 1 or not np.issubdtype(starts.dtype, np.integer) or (
                len(starts) and (starts.min() < 0 or starts.max() + steps >= self.size)):
            raise ValueError(f"offsets must be ints in [0, {self.size - steps - 1}] for windows "
                             f"of {steps} steps")
        device, queue = self.net.device, self.net.device.queue
        on_device = cl_array.to_device(queue, starts.astype(np.int32))
        trainer = window_trainer(self.net, learning, loss_named(loss)) if batch == 1 else None
        if trainer is not None:
            try:
                sums = train_symbol_windows(trainer, learning, self.codes, on_device,
                                            len(starts), steps, every, self._window_fills)
                return Metrics(*(float(v) for v in sums.get()))  # (waits for the work)
            finally:  # as runner.train does, even after an error
                trainer.release()
        p = sequence_steps(self.net, steps, batch, loss)
        if p not in self._fills:
            self._fills[p] = device.launch(
                "one_hot_sequences", (p.rows,), steps, batch, int(self.net.input_shape.dims[0]),
                0, every, self.codes, on_device, p.input, p.target, p.mask,
                per_call=ONE_HOT_PER_CALL)
        # One sum buffer a network (not a corpus), so a Step keeps one set of its launches.
        fill, sums = self._fills[p], held_sums(self.net, "symbol windows")
        fill.set_all({"every": every, "offsets": on_device})
        sums.fill(0)
        pending: cl.Event | None = None
        for count, first in enumerate(range(0, len(starts) - batch + 1, batch), start=1):
            fill.set("first", first)
            fill()
            p.train(learning, ordered=batch == 1, measure=p.metrics(sums))
            if count % WINDOWS_QUEUED == 0:  # bounded: the device runs while the host enqueues
                if pending is not None:
                    pending.wait()
                pending = cl.enqueue_marker(queue)
        return Metrics(*(float(v) for v in sums.get()))
