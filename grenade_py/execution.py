"""Running a network on its device: the `Step` and the `Update`.

A Step is built once for (network, batch shape, loss) and held by whoever runs it. Its batch is
`batch` sequences of `steps` time steps (steps 1: an ordinary batch of rows), rows time-major
(row t * batch + s): feed-forward layers run over all rows at once, the recurrent layers of a
RecurrentNetwork contribute their scan kernels. It owns the batch's device buffers (input,
targets and mask in one buffer, so that one copy fills them; every boundary's activation and
delta; every layer's own buffers) and its launches: the forward pass, the loss gradient and
backward pass, the optimiser's update. Every value that changes from call to call (the loss
scale, a shard's first row, the optimiser and its step count t) is an argument of the call,
never left on the Step, so a Step shared between callers (`steps`) computes the same whoever
used it last.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import pyopencl as cl
import pyopencl.array as cl_array

from grenade_py.device import Launch, buffer, streaming_size
from grenade_py.fused import FusedTrainer, flat_place, fused_trainer
from grenade_py.gemm import vector_width
from grenade_py.layers import Layer
from grenade_py.layers.base import Buffers, Factor, sub
from grenade_py.losses import SQUARED_ERROR, Loss, loss_named
from grenade_py.network import Network, aligned_offsets, flat_view, pack, view_place
from grenade_py.optimizers import VALUES, Optimizer, take_state, value_slots
from grenade_py.recurrent_network import RecurrentNetwork

#: Batch shapes whose Steps `steps` keeps per network whatever their size (what train, run_net
#: and evaluate reuse from call to call), and per RecurrentNetwork (Grenade's recurrent example
#: trains on 26 sequence lengths); more, up to STEPS_KEPT, while all of them together hold at
#: most STEPS_BYTES of buffers (run_net over 8 batch sizes in turn, each Step built anew when 4
#: were kept: 1.9 ms a call, 0.5 with them held; train_sequences over up to 50 lengths a call:
#: 36-62 ms, 6-8 with them held). A Step's kernel objects take memory besides its buffers: 64
#: Steps of a small MLP, 41 MiB of the process's on PoCL.
MAX_STEPS, MAX_SEQUENCE_STEPS = 4, 32
STEPS_KEPT, STEPS_BYTES = 64, 1 << 28
#: The ints per parameter array in the recurrent update kernels' table (UPDATE_ENTRY in
#: recurrent.cl).
UPDATE_ENTRY = 9


def enqueue(launches: list[Launch]) -> None:
    for launch in launches:
        launch()


class Update:
    """One optimiser step over a network's flat buffers: if the optimiser clips, the
    gradient's clipping factor and the gradient scaled by it; then the optimiser's rule over
    every parameter (a kernel per rule), or over the ranges between the weights that took
    the step in their gradients' GEMMs (`Step.descend`)."""

    def __init__(self, net: Network) -> None:
        self.net, self.device, self.flat = net, net.device, net.flat
        count, gradients = self.flat["parameters"].size, self.flat["gradients"]
        factor = self.device.zeros((1,))
        self.clip = [
            self.device.launch("optimizer_clip_scale", (64,), count, self.device.dtype(0),
                               gradients, factor, local=(64,), per_call={"max_norm": 1}),
            self.device.launch("optimizer_clip", streaming_size(count), count, factor, gradients)]
        self.rules: dict[tuple[str, tuple[int, ...]], list[Launch]] = {}

    def __call__(self, optimizer: Optimizer, stepped: Sequence[Layer] = ()) -> None:
        """Enqueue the network's next step of `optimizer` from the gradients in the flat
        buffer (clipped there first, if the optimiser clips), but for the weights of the
        layers `stepped` (they took this step in their gradients' GEMMs); its step count
        (Adam's t) advances."""
        assert not (stepped and optimizer.clip_norm), "clipping needs every gradient"
        take_state(self.net, optimizer)
        self.net.steps += 1
        key = (optimizer.kernel, tuple(id(layer) for layer in stepped))
        if key not in self.rules:
            self.rules[key] = [self.device.launch(
                f"optimizer_update_{optimizer.kernel}", streaming_size(count), count,
                *(self.device.dtype(0) for _ in VALUES),
                *(flat_view(self.flat[role], start, (count,))
                  for role in ("parameters", "momentum", "second", "gradients")),
                per_call=value_slots(1)) for start, count in self._ranges(stepped)]
        if optimizer.clip_norm is not None:
            self.clip[0].set("max_norm", optimizer.clip_norm)
            enqueue(self.clip)
        values = optimizer.arguments(self.net.steps, self.device.dtype)
        for rule in self.rules[key]:
            rule.set_all(values)
            rule()

    def _ranges(self, stepped: Sequence[Layer]) -> list[tuple[int, int]]:
        """(start, count) of the flat buffer's runs of parameters outside the weights of
        `stepped`, each from an aligned offset (a parameter's: see `aligned_offsets`)."""
        align, ranges, at = self.device.alignment, [], 0
        for start, size in sorted(
                (view_place(w)[1], w.size) for w in (layer.parameters["weights"]
                                                       for layer in stepped)):
            if start > at:
                ranges.append((at, start - at))
            at = -(-(start + size) // align) * align
        total = self.flat["parameters"].size
        return ranges + ([(at, total - at)] if at < total else [])


def update_of(net: Network) -> Update:
    """The network's Update, held on it (its launches are kernel objects: ~0.5 ms each to
    make in pyopencl), for every Step and fit call."""
    if "update" not in net.held:
        net.held["update"] = Update(net)
    return cast(Update, net.held["update"])


class Step:
    """The buffers and launches of one step over `batch` sequences of `steps` of `net`.

    Buffers: `input` (rows, *in), `target` and `output` (rows, *out), `mask` (rows,: which rows
    have a target, for sequences), `acts` and `deltas` (every boundary's, input first; the
    input's delta None unless `input_delta`), `buffers` (all of them by name: a{k}, d{k}, and
    layer i's own as "i.name"; a recurrent Step's all in one allocation, `arena`, where its
    update's table finds them). Launches are built on first use and kept. An `inference` Step
    (run_net, evaluate) has only what the forward pass outside training needs: no deltas
    (None), no training pass.
    """

    def __init__(self, net: Network, batch: int, loss: Loss = SQUARED_ERROR,
                 inference: bool = False, steps: int = 1, input_delta: bool = False) -> None:
        if net.nested:
            raise ValueError("this network is part of another network now; run that one")
        self.recurrent = isinstance(net, RecurrentNetwork)
        if not self.recurrent:
            net.check_runnable()
        loss.check(net)
        device, shapes, last = net.device, net.shapes, len(net.layers)
        self.net, self.loss, self.inference = net, loss, inference
        self.steps, self.batch = steps, batch
        self.rows = rows = steps * batch
        #: The boundary whose delta the loss writes: the output, or the logits.
        self.top = loss.top(net)
        #: The layers whose weights `descend` steps in their gradients' GEMMs, fixed here (the
        #: tuner's later choices are for the Steps built after them).
        self.stepped = [] if self.recurrent or inference else net.update_fused(self.top, rows)
        out = (rows, *shapes[-1].dims)
        wanted = (net.inference_buffers(rows) | {f"a{last}": out} if inference else
                  net.sequence_buffers(steps, batch) | {f"a{last}": out, f"d{last}": out})
        if input_delta:
            wanted["d0"] = (rows, *shapes[0].dims)
        elif not inference and (lowest := net.lowest(self.top)) < self.top:
            for name in net.layers[lowest].delta_buffers():  # (no input delta computed there)
                wanted.pop(f"{lowest}.{name}", None)
        if self.recurrent:
            wanted["ones"] = (rows,)
        # The input, targets and mask: one buffer, so that one copy fills them.
        io = {"a0": (rows, *shapes[0].dims), "target": (rows, *shapes[-1].dims),
              "mask": (rows,)}
        offsets, total = aligned_offsets(device.alignment,
                                         [int(np.prod(shape)) for shape in io.values()])
        self.io_layout = list(zip(io, offsets, io.values(), strict=True))
        what = f"{batch} sequences of {steps} steps" if self.recurrent else f"a batch of {rows}"
        if self.recurrent:  # all in one allocation, io first: the update finds them by offset
            parts = {"input and targets": (total,)} | wanted
            at, whole = aligned_offsets(device.alignment,
                                        [int(np.prod(shape)) for shape in parts.values()])
            self.arena = device.allocate(what, {"all": (whole,)})["all"]
            #: The bytes of device buffers the Step holds.
            self.nbytes = self.arena.nbytes
            self.buffers = {name: flat_view(self.arena, start, shape) for name, start, shape
                            in zip(parts, at, parts.values(), strict=True)}
            self.buffers |= {name: flat_view(self.arena, start, shape)
                             for name, start, shape in self.io_layout}
        else:
            self.buffers = device.allocate(what, wanted | {"input and targets": (total,)})
            self.nbytes = sum(array.nbytes for array in self.buffers.values())
            self.buffers |= {name: flat_view(self.buffers["input and targets"], start, shape)
                             for name, start, shape in self.io_layout}
        self.io = self.buffers.pop("input and targets")
        self.input, self.target, self.mask = (self.buffers[k] for k in ("a0", "target", "mask"))
        self.acts = net.activations(self.input, self.buffers[f"a{last}"], self.buffers)
        self.deltas: list[cl_array.Array | None] = [
            self.buffers.get(f"d{k}") if k in (0, last) or inference else
            net.boundary(self.buffers, "d", k) for k in range(last + 1)]
        self.output, self.delta = self.acts[-1], self.deltas[-1]
        if self.recurrent:
            self.buffers["ones"].fill(1)
        enqueue(net.setup(rows, self.buffers))
        #: The cells (layers with a state of their own), with their paths, and their states
        #: over the steps ((steps + 1) * batch rows of the state size, the starting states first).
        self.cells = net.recurrent_layers() if isinstance(net, RecurrentNetwork) else []
        self.states = [self.own(path)["states"] for path, _ in self.cells]
        self.start = [device.launch("recurrent_start_states", (layer.state_size, batch),
                                    layer.state_size, batch, layer.parameters["state"], states)
                      for (_, layer), states in zip(self.cells, self.states, strict=True)]
        self._forward: dict[bool, list[Launch]] = {}
        self._backward: dict[bool, list[Launch]] = {}
        self._fused: dict[int, FusedTrainer | None] = {}
        self._sequence_update: dict[str, list[Launch]] = {}
        self._clip: dict[bool, list[Launch]] = {}
        self._metrics: dict[int, list[Launch]] = {}
        self._gather: Launch | None = None
        self._factor_list: list[tuple[tuple[Any, ...], Factor, Layer]] | None = None

    def host_io(self, *arrays: np.ndarray) -> np.ndarray:
        """A host array laid out as the `io` buffer, holding `arrays` (the input, then the
        targets, then the mask; those given): one copy fills them."""
        return pack(self.io.size, [at for _, at, _ in self.io_layout[:len(arrays)]], arrays,
                    self.io.dtype)

    def own(self, path: int | str) -> Buffers:
        """The own buffers of layer `path` (its index, or a cell's path through branches)."""
        return sub(self.buffers, str(path))

    def forward_launches(self, training: bool) -> list[Launch]:
        """Every layer (over every step), from the input to the output (built on first use)."""
        if training and self.inference:
            raise RuntimeError("an inference Step has no training pass")
        if training not in self._forward:
            self._forward[training] = self.net.forward_sequence(
                self.steps, self.batch, self.input, self.output, self.buffers, training)
        return self._forward[training]

    def forward(self, training: bool, first_row: int = 0) -> None:
        """Enqueue the forward pass from `input` to `output` (a recurrent network's from its
        learned starting states); `first_row`: the input's first row in the whole batch (a
        shard of a distributed batch), where Dropout draws from."""
        enqueue(self.start)
        for launch in self.forward_launches(training):
            if launch.per_call:
                launch.set("first_row", first_row)
            launch()

    def backward_launches(self, update: bool = False) -> list[Launch]:
        """The loss gradient's launch (its scale set per call), then every layer backwards
        (through time) from the delta the loss writes; with `update`, those of `descend`."""
        if update not in self._backward:
            top_delta = self.deltas[self.top]
            if top_delta is None:
                raise RuntimeError("an inference Step has no backward pass")
            mask = self.mask if self.recurrent else None
            self._backward[update] = [self.loss.gradient(self.net.device, self.output,
                                                         self.target, mask, top_delta)]
            self._backward[update] += self.net.backward_below(
                self.top, self.steps, self.batch, self.input, self.output, top_delta,
                self.deltas[0], self.buffers, gradients=not self.recurrent,
                stepped=self.stepped if update else ())
        return self._backward[update]

    def backward(self, scale: float | None = None, ordered: bool = False,
                 measure: list[Launch] | None = None, update: bool = False) -> None:
        """Enqueue the loss gradient (`target` against the last forward pass), scaled by
        `scale` (default 1 in Grenade's `ordered` form, else 1/batch: the batch's average),
        the `measure` launches (see `metrics`), and the backward pass from it, leaving the
        gradients (summed over the rows) in the network's flat buffer, or a recurrent
        network's per-row factors for `update`. (With `update`: `descend`'s.)"""
        launches = self.backward_launches(update)
        launches[0].set("scale", (1.0 if ordered else 1.0 / self.batch) if scale is None
                        else scale)
        enqueue(launches[:1] + (measure or []) + launches[1:])

    def descend(self, optimizer: Optimizer, scale: float | None = None,
                measure: list[Launch] | None = None, ordered: bool = False) -> None:
        """`backward` then `update` under `optimizer`, the same values in fewer passes over
        memory: the layers `stepped` step their weights where their gradients' GEMMs form the
        gradient (gemm.gemm_outer_update), which is not stored (the flat buffer
        keeps no gradient of theirs), and the update steps the rest. Not in a recurrent Step,
        nor where the optimiser clips (the norm needs the whole gradient first)."""
        stepped = [] if optimizer.clip_norm is not None else self.stepped
        if not stepped:
            self.backward(scale, ordered, measure)
            self.update(optimizer, ordered)
            return
        take_state(self.net, optimizer)
        values = optimizer.arguments(self.net.steps + 1, self.net.device.dtype)
        for launch in self.backward_launches(update=True):
            if "kind" in launch.per_call:
                launch.set_all(values | {"kind": optimizer.kind})
        self.backward(scale, measure=measure, update=True)
        update_of(self.net)(optimizer, stepped)

    def update(self, optimizer: Optimizer, ordered: bool = False) -> None:
        """Enqueue the network's next optimiser step; its step counts (`Network.steps`, Adam's
        t) advance. A recurrent network's applies the per-step gradients: with `ordered`, one
        optimiser step per row in time order (Grenade's), else one from their sum; then the
        starting states' (see `update_launches`)."""
        take_state(self.net, optimizer)
        if not self.recurrent:
            update_of(self.net)(optimizer)
            return
        enqueue(self.update_launches(optimizer, ordered))
        self.net.steps += self.rows if ordered else 1
        self.net.state_steps += 1

    def train(self, optimizer: Optimizer | None, scale: float | None = None,
              ordered: bool = False, measure: list[Launch] | None = None) -> None:
        """Forward (training), `backward` and, with an optimiser, its update (`descend`), for
        data already in `input`, `target` and `mask` (fit runs the parts itself, a distributed
        fit its Allreduce between backward and update)."""
        self.forward(True)
        if optimizer is None:
            self.backward(scale, ordered, measure)
        else:
            self.descend(optimizer, scale, measure, ordered)

    def fused(self, optimizer: Optimizer) -> FusedTrainer | None:
        """The fused per-example loop this one-row Step trains through under `optimizer` and
        its loss, or None: where a layer has no device-side form, or where the optimiser clips
        (the loop computes each update as it goes, never a whole gradient)."""
        if self.rows != 1 or self.recurrent or optimizer.clip_norm is not None:
            return None
        if optimizer.kind not in self._fused:
            self._fused[optimizer.kind] = fused(self.net, optimizer.kind, self.loss)
        return self._fused[optimizer.kind]

    def train_examples(self, optimizer: Optimizer, xs: cl_array.Array, ys: cl_array.Array,
                       start: int, count: int) -> None:
        """Enqueue Grenade's per-example training on examples start .. start + count - 1 of
        the device arrays xs (N, *in) and ys (N, *out), one optimiser step each, in order: one
        launch of the fused loop where `fused` allows (the same layer, loss and optimiser
        functions), else this one-row Step's launches per example: the same results (to the bit
        where `fused.kernels_bits`; else to rounding)."""
        trainer = self.fused(optimizer)
        if trainer is not None:
            trainer(xs, ys, start, count, optimizer)
            return
        queue, x_bytes, y_bytes = self.net.device.queue, self.input.nbytes, self.target.nbytes
        for i in range(start, start + count):
            cl.enqueue_copy(queue, buffer(self.input), buffer(xs), byte_count=x_bytes,
                            src_offset=i * x_bytes)
            cl.enqueue_copy(queue, buffer(self.target), buffer(ys), byte_count=y_bytes,
                            src_offset=i * y_bytes)
            self.train(optimizer)

    def gather(self, order: cl_array.Array | None, xs: cl_array.Array | None,
               ys: cl_array.Array | None) -> Launch:
        """The launch copying rows order[first ..] of xs (N, in) and ys (N, out) into `input`
        and `target` (kernels/data.cl's gather_rows, a work-item per 64 values of a row;
        `first` set per call), made on first use and kept, given these arrays (None lets go
        of them: the Step is held on the network from call to call)."""
        if self._gather is None:
            widths = self.input.size // self.rows, self.target.size // self.rows
            self._gather = self.net.device.launch(
                "gather_rows", (self.rows * sum(-(-w // 64) for w in widths),), self.rows, 0,
                order, widths[0], xs, self.input, widths[1], ys, self.target,
                per_call={"first": 1, "order": 2, "xs": 4, "ys": 7})
        self._gather.set_all({"order": order, "xs": xs, "ys": ys})
        return self._gather

    def metrics(self, acc: cl_array.Array) -> list[Launch]:
        """The launches adding the summed loss of the rows with a target to acc[0], their
        correct rows to acc[1] and their count to acc[2] (after a forward pass with `target`
        in place), made on first use for `acc` and kept."""
        if id(acc) not in self._metrics:  # (the launches hold acc: its id stays its own)
            self._metrics[id(acc)] = self.loss.metrics(
                self.net.device, self.output, self.acts[self.top], self.target, acc,
                self.mask if self.recurrent else None)
        return self._metrics[id(acc)]

    def update_launches(self, optimizer: Optimizer, ordered: bool) -> list[Launch]:
        """The update's launches, given the optimiser's values and the network's next step
        counts: with `ordered`, one optimiser step per row in time order (Grenade's), else one
        step from their sum; then the starting states' update. With the optimiser's
        `clip_norm`, first the clipping (`clip`)."""
        weights, *states = self._update_launches(optimizer.kernel)
        dtype = self.net.device.dtype
        weights.set_all(optimizer.arguments(self.net.steps + 1, dtype) | {"ordered": int(ordered)})
        for launch in states:
            launch.set_all(optimizer.arguments(self.net.state_steps + 1, dtype) |
                           {"kind": optimizer.kind})
        clipping = [] if optimizer.clip_norm is None else self.clip(optimizer.clip_norm, ordered)
        return clipping + [weights, *states]

    def clip(self, max_norm: float, ordered: bool) -> list[Launch]:
        """clip_grad_norm_ before the update: with `ordered`, each step's gradient (over all
        parameters but the starting states) to at most `max_norm`, else their sum; by scaling
        the deltas its factors are formed from, in place."""
        if ordered not in self._clip:
            device, launches = self.net.device, []
            geometry = [g for g, _, _ in self._factors()]
            deltas = {id(f.d if f.deltas == "d" else f.x):
                      (f.d, f.ldd) if f.deltas == "d" else (f.x, f.ldx)
                      for _, f, _ in self._factors()}
            if ordered:
                factor = device.zeros((self.rows,))
                launches = [device.launch("recurrent_row_norms", (self.rows,), self.rows,
                                          *g, int(k > 0), factor)
                            for k, g in enumerate(geometry)]
                launches.append(device.launch("recurrent_row_scales", (self.rows,), self.rows,
                                              device.dtype(0), factor,
                                              per_call={"max_norm": 1}))
            else:
                norms = device.zeros((sum(g[0] for g in geometry),))
                at = 0
                for g in geometry:
                    launches.append(device.launch("recurrent_sum_norms", (g[0],), self.rows,
                                                  *g, at, norms))
                    at += g[0]
                factor = device.zeros((1,))
                launches.append(device.launch("optimizer_clip_scale", (64,), norms.size,
                                              device.dtype(0), norms, factor, local=(64,),
                                              per_call={"max_norm": 1}))
            launches += [device.launch("recurrent_scale_rows", (ld, self.rows), self.rows, ld,
                                       ld, factor, int(ordered), buffer)
                         for buffer, ld in deltas.values()]
            self._clip[ordered] = launches
        launches = self._clip[ordered]
        next(launch for launch in launches if launch.per_call).set("max_norm", max_norm)
        return launches

    def _factors(self) -> list[tuple[tuple[Any, ...], Factor, Layer]]:
        """Every parameter's per-row gradient factors as the update kernels take them, (rows,
        cols, d, ldd, x, ldx) (a vector: one row whose d is all ones, x its deltas), with the
        Factor and its layer."""
        if self._factor_list is None:
            found = []
            for index, layer in enumerate(self.net.layers[:self.top]):
                x, y, own = self.acts[index], self.acts[index + 1], self.own(index)
                dy = self.deltas[index + 1]
                assert dy is not None
                factors = layer.factors(self.steps, self.batch, x, y, dy, own)
                assert factors is not None  # RecurrentNetwork.check_layers refused the others
                for f in factors:
                    shape = layer.parameters[f.name].shape
                    geometry = (1, shape[0], self.buffers["ones"], 1, f.d, f.ldd) if f.x is None \
                        else (shape[0], shape[1], f.d, f.ldd, f.x, f.ldx)
                    found.append((geometry, f, layer))
            self._factor_list = found
        return self._factor_list

    def _offset(self, view: cl_array.Array) -> int:
        """Where one of this recurrent Step's buffers lies in its one allocation, in values."""
        parent, offset = view_place(view)
        assert parent == buffer(self.arena).int_ptr
        return offset

    def _update_launches(self, kernel: str) -> list[Launch]:
        """Every parameter array's update in one launch of the optimiser's kernel (a table of
        the arrays: their factors' places in the Step's allocation, theirs in the flat
        buffers), then each starting state's; the optimiser's values are set per call
        (`update_launches`)."""
        if kernel in self._sequence_update:
            return self._sequence_update[kernel]
        device, zeros = self.net.device, [self.net.device.dtype(0)] * len(VALUES)
        table, items = [], 0
        # Columns per work-item (UPDATE_COLUMNS in recurrent.cl): 4 vectors of 512 bits, or of
        # 8 values on CPUs of 256-bit vectors.
        columns = 4 * (8 if device.narrow else vector_width(device))
        for (rows, cols, d, ldd, x, ldx), f, layer in self._factors():
            at = flat_place(layer, layer.parameters[f.name])[1]
            assert flat_place(layer, layer.momentum[f.name])[1] == at
            table += [items, rows, cols, self._offset(d), ldd, self._offset(x), ldx,
                      int(f.decay), at]
            items += rows * -(-cols // columns)
        flat = self.net.flat
        launches = self._sequence_update[kernel] = [device.launch(
            f"recurrent_update_{kernel}", (items,), self.rows, len(table) // UPDATE_ENTRY,
            cl_array.to_device(device.queue, np.array(table, np.int32)), self.arena, *zeros, 0,
            flat["parameters"], flat["momentum"], flat["second"],
            per_call=value_slots(4) | {"ordered": 11})]
        launches += [device.launch(
            "recurrent_state_update", (layer.state_size,), layer.state_size, self.batch, 0,
            *zeros, self.own(path)["dstate"], layer.parameters["state"], layer.momentum["state"],
            layer.second["state"], per_call=value_slots(3) | {"kind": 2})
            for path, layer in self.cells if int(path.split(".")[0]) < self.top]
        return launches



def fused(net: Network, kind: int = 0, loss: Loss = SQUARED_ERROR) -> FusedTrainer | None:
    """The network's fused per-example loop under optimiser `kind` and `loss`, or None where a
    layer has no device-side form (its program comes from the device's cache after the first
    build)."""
    net.check_runnable()
    return fused_trainer(net, kind, loss)


def steps(net: Network, batch: int, loss: str | Loss = SQUARED_ERROR, inference: bool = False,
          steps: int = 1) -> Step:
    """A Step for `batch` sequences of `steps` of `net` (an ordinary batch of `batch` rows
    when steps is 1), kept on the network for its last MAX_STEPS (a RecurrentNetwork's:
    MAX_SEQUENCE_STEPS) shapes, and more up to STEPS_KEPT while they hold at most STEPS_BYTES:
    the Steps that the functions taking only a network (run_net, train, evaluate,
    train_sequences, ...) hold between calls."""
    recurrent = isinstance(net, RecurrentNetwork)
    if not recurrent:
        net.check_runnable()
    chosen = loss_named(loss)
    key = ("step", steps, batch, chosen.name, inference)
    if next(reversed(net.held), None) == key:  # the most recently used already
        return cast(Step, net.held[key])
    step = net.held.pop(key, None) or Step(net, batch, chosen, inference, steps)
    net.held[key] = step  # the most recently used last
    kept = [k for k in net.held if k[0] == "step"]
    held = sum(net.held[k].nbytes for k in kept)
    for old in kept[:max(0, len(kept) - (MAX_SEQUENCE_STEPS if recurrent else MAX_STEPS))]:
        if len(kept) <= STEPS_KEPT and held <= STEPS_BYTES:
            break
        held -= net.held.pop(old).nbytes  # the least recently used
        kept.remove(old)
    return step


def sequence_steps(net: RecurrentNetwork, steps_: int, batch: int,
                   loss: str | Loss = "squared_error") -> Step:
    """The Step for `batch` sequences of `steps_` of a RecurrentNetwork (kept as `steps`)."""
    if not isinstance(net, RecurrentNetwork):
        raise TypeError(f"expected a RecurrentNetwork, got {type(net).__name__}; feed-forward "
                        "networks run with run_net/train/fit")
    return steps(net, batch, loss, steps=steps_)
