"""Running a network on its device: the `Step` (and its form with time steps, the
`SequenceStep`) and the `Update`.

A Step is built once for (network, batch shape, loss) and held by whoever runs it. It owns the
batch's device buffers (input, output, target, the loss's delta and every layer's per-batch
buffers) and its launches: the forward pass, the loss gradient and backward pass, the
optimiser's update. Every value that changes from call to call (the loss scale, a shard's first
row, the optimiser and its step count t) is an argument of the call, never left on the Step, so
a Step shared between callers (`steps`, `sequence_steps`) computes the same whoever used it
last. A SequenceStep's batch is steps x sequences of a RecurrentNetwork: feed-forward layers
run over all its rows, recurrent layers contribute their scan kernels, and the update applies
the per-step gradients in Grenade's order or summed.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import pyopencl as cl
import pyopencl.array as cl_array

from grenade_py.device import Launch, buffer
from grenade_py.fused import FusedTrainer, fused_trainer
from grenade_py.layers import Layer, RecurrentLayer
from grenade_py.layers.base import Buffers, Factor
from grenade_py.losses import SQUARED_ERROR, Loss, loss_named
from grenade_py.network import Network, flat_view
from grenade_py.optimizers import SGD, Optimizer
from grenade_py.recurrent_network import RecurrentNetwork

#: Row counts whose Steps `steps` keeps per network (the convenience functions' cache).
MAX_STEPS = 4
#: Sequence shapes (steps, batch) whose SequenceSteps `sequence_steps` keeps per network.
MAX_SEQUENCE_STEPS = 32


def enqueue(launches: list[Launch]) -> None:
    for launch in launches:
        launch()


class Update:
    """One optimiser step over a network's flat buffers: if the optimiser clips, the
    gradient's clipping factor and the gradient scaled by it; then the optimiser's rule over
    every parameter (a kernel per rule)."""

    def __init__(self, net: Network) -> None:
        self.device, self.flat = net.device, net.flat
        count, gradients = self.flat["parameters"].size, self.flat["gradients"]
        factor = self.device.zeros((1,))
        self.clip = [
            self.device.launch("optimizer_clip_scale", (64,), count, self.device.dtype(0),
                               gradients, factor, local=(64,)),
            self.device.launch("optimizer_clip", (count,), count, factor, gradients)]
        self.rules: dict[str, Launch] = {}
        self.last: Optimizer | None = None

    def __call__(self, optimizer: Optimizer, t: int) -> None:
        """Enqueue step t (1 for the first) of `optimizer` from the gradients in the flat
        buffer (clipped there first, if the optimiser clips)."""
        real, flat = self.device.dtype, self.flat
        if optimizer.kernel not in self.rules:
            count = flat["parameters"].size
            self.rules[optimizer.kernel] = self.device.launch(
                f"optimizer_update_{optimizer.kernel}", (count,), count,
                *(real(0) for _ in range(7)), flat["parameters"], flat["momentum"],
                flat["second"], flat["gradients"])
        if optimizer.clip_norm is not None:
            self.clip[0].set_arg(1, real(optimizer.clip_norm))
            enqueue(self.clip)
        rule = self.rules[optimizer.kernel]
        if optimizer != self.last:  # SGD's arguments stay set from step to step
            for index, value in enumerate(optimizer.kernel_values(), start=1):
                rule.set_arg(index, real(value))
            self.last = optimizer
        if optimizer.kind != SGD.kind:
            for index, value in enumerate(optimizer.powers(t), start=6):
                rule.set_arg(index, real(value))
        rule()


class Step:
    """The buffers and launches of one training or inference step over `n` rows of `net`.

    Buffers: `input` (n, *in), `output` (n, *out), `target` (n, *out), `delta` (the loss's
    gradient at the output), `buffers` (every layer's, by name: activations a{k}, deltas
    d{k}, tapes). Launches are built on first use and kept. An `inference` Step (run_net,
    evaluate) has only what the forward pass outside training needs: no deltas (None), no
    training pass.
    """

    def __init__(self, net: Network, n: int, loss: Loss = SQUARED_ERROR,
                 inference: bool = False) -> None:
        net.check_runnable()
        loss.check(net)
        device = net.device
        self.net, self.n, self.loss, self.inference = net, n, loss, inference
        out = (n, *net.output_shape.dims)
        ends = {"input": (n, *net.input_shape.dims), "output": out, "target": out}
        self.buffers = device.allocate(f"a batch of {n}", (
            ends | net.inference_buffers(n) if inference
            else ends | {"delta": out} | net.batch_buffers(n)))
        self.input, self.output, self.target = (
            self.buffers.pop(name) for name in ("input", "output", "target"))
        self.delta: cl_array.Array | None = None if inference else self.buffers.pop("delta")
        enqueue(net.setup(n, self.buffers))
        self._forward: dict[bool, list[Launch]] = {}
        self._backward: list[Launch] | None = None

    def forward_launches(self, training: bool) -> list[Launch]:
        """The forward pass's launches (built on first use)."""
        if training and self.inference:
            raise RuntimeError("an inference Step has no training pass")
        if training not in self._forward:
            self._forward[training] = self.net.forward(self.n, self.input, self.output,
                                                       self.buffers, training)
        return self._forward[training]

    def forward(self, training: bool, first_row: int = 0) -> None:
        """Enqueue the forward pass from `input` to `output`; `first_row`: the input's first
        row in the whole batch (a shard of a distributed batch), where Dropout draws from."""
        for launch in self.forward_launches(training):
            if launch.per_call:
                launch.set("first_row", first_row)
            launch()

    def backward(self, scale: float | None = None) -> None:
        """Enqueue the loss gradient (`target` against the last forward pass), scaled by
        `scale` (default 1/n: the batch's average), and the backward pass from it, leaving
        the gradients, summed over the rows, in the network's flat buffer."""
        launches = self.backward_launches()
        launches[0].set("scale", 1.0 / self.n if scale is None else scale)
        enqueue(launches)

    def backward_launches(self) -> list[Launch]:
        """The loss gradient's launch (its scale set per call), then the backward pass's."""
        if self._backward is None:
            top, delta = self.loss.top(self.net), self._logits()[1]
            if delta is None:
                raise RuntimeError("an inference Step has no backward pass")
            self._backward = [self.loss.gradient(self.net.device, self.output, self.target,
                                                 None, delta)]
            self._backward += self.net.backward_below(top, self.n, self.input, self.output,
                                                      delta, None, self.buffers)
        return self._backward

    def update(self, optimizer: Optimizer) -> None:
        """Enqueue the network's next optimiser step (see `update`)."""
        update(self.net, optimizer)

    def train(self, optimizer: Optimizer | None, scale: float | None = None) -> None:
        """Forward (training), loss gradient, backward and, with an optimiser, its update,
        for data already in `input` and `target` (fit runs the parts itself, its Allreduce
        between backward and update)."""
        self.forward(True)
        self.backward(scale)
        if optimizer is not None:
            self.update(optimizer)

    def fused(self, optimizer: Optimizer) -> FusedTrainer | None:
        """The fused per-example loop this one-row Step trains through under `optimizer`, or
        None: where a layer has no device-side form, under cross entropy, or where the
        optimiser clips (the loop computes each update as it goes, never a whole gradient)."""
        if self.n != 1 or self.loss is not SQUARED_ERROR or optimizer.clip_norm is not None:
            return None
        return fused(self.net, optimizer.kind)

    def train_examples(self, optimizer: Optimizer, xs: cl_array.Array, ys: cl_array.Array,
                       start: int, count: int) -> None:
        """Enqueue Grenade's per-example training on examples start .. start + count - 1 of
        the device arrays xs (N, *in) and ys (N, *out), one optimiser step each, in order: one
        launch of the fused loop where `fused` allows (the same layer, loss and optimiser
        functions), else this one-row Step's launches per example, with identical results."""
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

    def _logits(self) -> tuple[cl_array.Array, cl_array.Array | None]:
        """The buffers where the loss starts: (value, its delta)."""
        top = self.loss.top(self.net)
        if top == len(self.net.layers):
            return self.output, self.delta
        return self.buffers[f"a{top}"], self.buffers.get(f"d{top}")

    def metrics(self, acc: cl_array.Array) -> list[Launch]:
        """New launches adding the batch's summed loss to acc[0], its correct rows to acc[1]
        and its rows to acc[2] (after a forward pass with `target` in place); the caller keeps
        them."""
        return self.loss.metrics(self.net.device, self.output, self._logits()[0], self.target,
                                 acc)


def update(net: Network, optimizer: Optimizer) -> None:
    """Enqueue the network's next optimiser step from the gradients in its flat buffer; its
    step count (`Network.steps`, Adam's t) advances. The Update is kept on the network."""
    net.check_runnable()
    kept = net.__dict__.get("_update")
    if kept is None:
        kept = net.__dict__["_update"] = Update(net)
    net.steps += 1
    kept(optimizer, net.steps)


def steps(net: Network, n: int, loss: Loss = SQUARED_ERROR, inference: bool = False) -> Step:
    """A Step for `n` rows of `net` (an inference one: see Step), kept on the network for the
    last MAX_STEPS shapes (what `train`, `run_net` and `evaluate` reuse from call to call)."""
    net.check_runnable()
    kept: OrderedDict[tuple[int, str, bool], Step] = net.__dict__.setdefault("_steps",
                                                                            OrderedDict())
    key = (n, loss.name, inference)
    if key in kept:
        kept.move_to_end(key)
    else:
        if len(kept) >= MAX_STEPS:
            kept.popitem(last=False)
        kept[key] = Step(net, n, loss, inference)
    return kept[key]


def fused(net: Network, kind: int = 0) -> FusedTrainer | None:
    """The network's fused per-example loop under optimiser `kind`, or None where a layer has
    no device-side form (kept on the network: its build costs ~0.5 s)."""
    net.check_runnable()
    kept: dict[int, FusedTrainer | None] = net.__dict__.setdefault("_fused", {})
    if kind not in kept:
        kept[kind] = fused_trainer(net, kind)
    return kept[kind]


class SequenceStep:
    """A Step whose batch shape has time steps: `batch` sequences of `steps` of a
    RecurrentNetwork, rows time-major (row t * batch + s), as every layer sees them.
    Feed-forward layers run over all rows at once; recurrent layers contribute their scan
    kernels (forward_sequence, backward_sequence). The loss's error is masked to the steps with
    a target; the update applies the per-step gradients (see `update_launches`). The input,
    targets and mask share one buffer (`io`, laid out as `io_layout`), so one copy fills
    them."""

    def __init__(self, net: RecurrentNetwork, steps: int, batch: int, loss: Loss) -> None:
        device, shapes = net.device, net.shapes
        self.net, self.steps, self.batch = net, steps, batch
        #: The boundary whose delta the error writes: the output, or the logits.
        self.top = loss.top(net)
        self.rows = rows = steps * batch
        layers = net.layers
        wanted = {f"a{k}": (rows, *shapes[k].dims) for k in range(1, len(shapes))}
        wanted |= {f"d{k}": (rows, *shapes[k].dims) for k in range(1, len(shapes))}
        wanted["ones"] = (rows,)
        for index, layer in enumerate(layers):
            own = (layer.sequence_buffers(steps, batch) if isinstance(layer, RecurrentLayer)
                   else layer.batch_buffers(rows))
            wanted |= {f"{index}.{name}": shape for name, shape in own.items()}
        # The input, targets and mask: one buffer, so that one copy fills them.
        itemsize = np.dtype(device.dtype).itemsize
        align = max(1, device.cl_device.mem_base_addr_align // 8 // itemsize)
        self.io_layout: list[tuple[str, int, tuple[int, ...]]] = []
        total = 0
        for name, shape in (("a0", (rows, *shapes[0].dims)), ("target", (rows, *shapes[-1].dims)),
                            ("mask", (rows,))):
            self.io_layout.append((name, total, shape))
            total += -(-int(np.prod(shape)) // align) * align
        self.buffers = device.allocate(f"{batch} sequences of {steps} steps",
                                       wanted | {"input and targets": (total,)})
        self.io = self.buffers.pop("input and targets")
        self.buffers |= {name: flat_view(self.io, at, shape)
                         for name, at, shape in self.io_layout}
        self.buffers["ones"].fill(1)
        self.acts = [self.buffers[f"a{k}"] for k in range(len(shapes))]
        self.deltas: list[cl_array.Array | None] = [None] + [
            self.buffers[f"d{k}"] for k in range(1, len(shapes))]
        self.metrics = device.zeros((3,))
        enqueue([launch for index, layer in enumerate(layers)
                 for launch in layer.setup(rows, self.own(index))])
        self.start = [device.launch("recurrent_start_states", (layer.state_size, batch),
                                    layer.state_size, batch, layer.parameters["state"],
                                    self.own(path)["states"])
                      for path, layer in net.recurrent_layers()]
        top_delta = self.deltas[self.top]
        assert top_delta is not None
        self.error = loss.gradient(device, self.acts[-1], self.buffers["target"],
                                   self.buffers["mask"], top_delta)
        logits = self.acts[self.top]
        self.measure = loss.metrics(device, self.acts[-1], logits, self.buffers["target"],
                                    self.metrics, self.buffers["mask"])
        self._forward: dict[bool, list[Launch]] = {}
        self._backward: list[Launch] | None = None
        self._update: dict[str, list[tuple[Launch, bool]]] = {}
        self._clip: dict[bool, list[Launch]] = {}
        self._factor_list: list[tuple[tuple[Any, ...], Factor, Layer]] | None = None

    def own(self, path: int | str) -> Buffers:
        """The own buffers of layer `path` (its index, or a cell's path through branches)."""
        prefix = f"{path}."
        return {k[len(prefix):]: v for k, v in self.buffers.items() if k.startswith(prefix)}

    def forward_launches(self, training: bool) -> list[Launch]:
        """Every layer over every step, from a0 (the input) to the output."""
        if training not in self._forward:
            launches = []
            for index, layer in enumerate(self.net.layers):
                x, y, own = self.acts[index], self.acts[index + 1], self.own(index)
                if isinstance(layer, RecurrentLayer):
                    launches += layer.forward_sequence(self.steps, self.batch, x, y, own,
                                                       training)
                else:
                    launches += layer.forward(self.rows, x, y, own, training)
            self._forward[training] = launches
        return self._forward[training]

    def backward_launches(self) -> list[Launch]:
        """Every layer backwards through time from the output's delta."""
        if self._backward is None:
            launches = []
            for index in reversed(range(self.top)):
                layer, own = self.net.layers[index], self.own(index)
                x, y, dx = self.acts[index], self.acts[index + 1], self.deltas[index]
                dy = self.deltas[index + 1]
                assert dy is not None
                if isinstance(layer, RecurrentLayer):
                    launches += layer.backward_sequence(self.steps, self.batch, x, y, dy, dx,
                                                        own)
                else:
                    launches += layer.backward(self.rows, x, y, dy, dx, own)
            self._backward = launches
        return self._backward

    def update_launches(self, optimizer: Optimizer, ordered: bool) -> list[Launch]:
        """The update's launches, given the optimiser's values and the network's next step
        counts: with `ordered`, one optimiser step per row in time order (Grenade's), else one
        step from their sum; then the starting states' update. With the optimiser's
        `clip_norm`, first the clipping (`clip`)."""
        real = self.net.device.dtype
        rate, beta1, beta2, eps, decay = optimizer.kernel_values()
        weights = (*optimizer.powers(self.net.steps + 1), int(ordered))
        states = optimizer.powers(self.net.state_steps + 1)
        launches = self._update_launches(optimizer.kernel)
        for launch, decays in launches:
            values = (rate, beta1, beta2, eps, decay if decays else 0.0)
            if launch.kernel.function_name == "recurrent_state_update":
                launch.set_arg(2, optimizer.kind)
                for index, value in enumerate((*values, *states), start=3):
                    launch.set_arg(index, real(value))
            else:
                for index, value in enumerate((*values, *weights), start=7):
                    launch.set_arg(index, real(value) if index < 14 else value)
        clipping = [] if optimizer.clip_norm is None else self.clip(optimizer.clip_norm, ordered)
        return clipping + [launch for launch, _ in launches]

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
                                              device.dtype(0), factor))
            else:
                norms = device.zeros((sum(g[0] for g in geometry),))
                at = 0
                for g in geometry:
                    launches.append(device.launch("recurrent_sum_norms", (g[0],), self.rows,
                                                  *g, at, norms))
                    at += g[0]
                factor = device.zeros((1,))
                launches.append(device.launch("optimizer_clip_scale", (64,), norms.size,
                                              device.dtype(0), norms, factor, local=(64,)))
            launches += [device.launch("recurrent_scale_rows", (ld, self.rows), self.rows, ld,
                                       ld, factor, int(ordered), buffer)
                         for buffer, ld in deltas.values()]
            self._clip[ordered] = launches
        launches = self._clip[ordered]
        scale = next(launch for launch in launches if launch.kernel.function_name in
                     ("recurrent_row_scales", "optimizer_clip_scale"))
        scale.set_arg(1, self.net.device.dtype(max_norm))
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

    def _update_launches(self, kernel: str) -> list[tuple[Launch, bool]]:
        """Each parameter array's update (by the optimiser's kernel) and each starting state's,
        with whether it decays; the optimiser's values are set per call (`update`)."""
        if kernel in self._update:
            return self._update[kernel]
        device, zeros = self.net.device, [self.net.device.dtype(0)] * 7
        launches = self._update[kernel] = []
        for (rows, cols, *geometry), f, layer in self._factors():
            launch = device.launch(
                f"recurrent_update_{kernel}", (rows, -(-cols // 8)), self.rows, rows, cols,
                *geometry, *zeros, 0, layer.parameters[f.name], layer.momentum[f.name],
                layer.second[f.name])
            launches.append((launch, f.decay))
        for path, layer in self.net.recurrent_layers():
            if int(path.split(".")[0]) >= self.top:
                continue
            launch = device.launch(
                "recurrent_state_update", (layer.state_size,), layer.state_size,
                self.batch, 0, *zeros, self.own(path)["dstate"], layer.parameters["state"],
                layer.momentum["state"], layer.second["state"])
            launches.append((launch, True))
        return launches

    def train(self, optimizer: Optimizer, ordered: bool, measure: bool = False) -> None:
        """Enqueue one training step over the sequences in place (a0, target, mask): from the
        learned starting states, forward, the error (scaled by 1 in Grenade's `ordered` form,
        else 1/batch: the sequences' average), (the metrics into `metrics`), backward, and the
        update (`update_launches`). The network's step counts advance."""
        enqueue(self.start + self.forward_launches(True))
        self.error.set("scale", 1 if ordered else 1 / self.batch)
        self.error()
        if measure:
            enqueue(self.measure)
        enqueue(self.backward_launches() + self.update_launches(optimizer, ordered))
        self.net.steps += self.rows if ordered else 1
        self.net.state_steps += 1


def sequence_steps(net: RecurrentNetwork, steps: int, batch: int,
                   loss: str | Loss = "squared_error") -> SequenceStep:
    """A SequenceStep for `batch` sequences of `steps`, kept on the network for the last
    MAX_SEQUENCE_STEPS shapes (Grenade's recurrent example trains on 26 lengths)."""
    if not isinstance(net, RecurrentNetwork):
        raise TypeError(f"expected a RecurrentNetwork, got {type(net).__name__}; feed-forward "
                        "networks run with run_net/train/fit")
    if net.nested:
        raise ValueError("this network is part of another network now; run that one")
    chosen = loss_named(loss)
    chosen.check(net)
    plans: dict[tuple[int, int, str], SequenceStep] = net.__dict__.setdefault("_plans", {})
    key = (steps, batch, chosen.name)
    if key in plans:
        plans[key] = plans.pop(key)  # the most recently used last
    else:
        if len(plans) >= MAX_SEQUENCE_STEPS:
            del plans[next(iter(plans))]
        plans[key] = SequenceStep(net, steps, batch, chosen)
    return plans[key]
