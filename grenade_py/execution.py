"""Running a network on its device: the `Step` and the `Update`.

A Step is built once for (network, rows, loss) and held by whoever runs it. It owns the batch's
device buffers (input, output, target, the loss's delta and every layer's per-batch buffers)
and its launches: the forward pass, the loss gradient and backward pass, the optimiser's
update. Every value that changes from call to call (the loss scale, a shard's first row, the
optimiser and its step count t) is an argument of the call, never left on the Step, so a Step
shared between callers (`steps`) computes the same whoever used it last.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import pyopencl.array as cl_array

from grenade_py.device import Launch
from grenade_py.fused import FusedTrainer, fused_trainer
from grenade_py.losses import SQUARED_ERROR, Loss
from grenade_py.network import Network
from grenade_py.optimizers import Optimizer

#: Row counts whose Steps `steps` keeps per network (the convenience functions' cache).
MAX_STEPS = 4


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
        for index, value in enumerate((*optimizer.kernel_values(), *optimizer.powers(t)),
                                      start=1):
            rule.set_arg(index, real(value))
        rule()


class Step:
    """The buffers and launches of one training or inference step over `n` rows of `net`.

    Buffers: `input` (n, *in), `output` (n, *out), `target` (n, *out), `delta` (the loss's
    gradient at the output), `buffers` (every layer's, by name: activations a{k}, deltas
    d{k}, tapes). Launches are built on first use and kept.
    """

    def __init__(self, net: Network, n: int, loss: Loss = SQUARED_ERROR) -> None:
        net.check_runnable()
        loss.check(net)
        device = net.device
        self.net, self.n, self.loss = net, n, loss
        buffers = net.batch_buffers(n)
        io = {"input": (n, *net.input_shape.dims), "output": (n, *net.output_shape.dims)}
        for name, shape in (io | buffers).items():
            device.check_allocation(f"a batch of {n} ({name})",
                                    int(np.prod(shape)) * np.dtype(device.dtype).itemsize)
        self.input = device.zeros((n, *net.input_shape.dims))
        self.output = device.zeros((n, *net.output_shape.dims))
        self.target = device.zeros((n, *net.output_shape.dims))
        self.delta = device.zeros((n, *net.output_shape.dims))
        self.buffers = {k: device.zeros(s) for k, s in buffers.items()}
        enqueue(net.setup(n, self.buffers))
        self._forward: dict[bool, list[Launch]] = {}
        self._backward: list[Launch] | None = None

    def forward_launches(self, training: bool) -> list[Launch]:
        """The forward pass's launches (built on first use)."""
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
            self._backward = [self.loss.gradient(self.net.device, self.output, self.target,
                                                 None, delta)]
            self._backward += self.net.backward_below(top, self.n, self.input, self.output,
                                                      delta, None, self.buffers)
        return self._backward

    def update(self, optimizer: Optimizer) -> None:
        """Enqueue the network's next optimiser step (see `update`)."""
        update(self.net, optimizer)

    def train(self, optimizer: Optimizer | None, scale: float | None = None,
              first_row: int = 0, between: Callable[[], None] | None = None) -> None:
        """Forward (training), loss gradient, backward, `between()` (fit's Allreduce), and
        with an optimiser its update, for data already in `input` and `target`."""
        self.forward(True, first_row)
        self.backward(scale)
        if between is not None:
            between()
        if optimizer is not None:
            self.update(optimizer)

    def _logits(self) -> tuple[cl_array.Array, cl_array.Array]:
        """The buffers where the loss starts: (value, its delta)."""
        top = self.loss.top(self.net)
        if top == len(self.net.layers):
            return self.output, self.delta
        return self.buffers[f"a{top}"], self.buffers[f"d{top}"]

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


def steps(net: Network, n: int, loss: Loss = SQUARED_ERROR) -> Step:
    """A Step for `n` rows of `net`, kept on the network for the last MAX_STEPS row counts
    (what `train`, `run_net` and `evaluate` reuse from call to call)."""
    net.check_runnable()
    kept: OrderedDict[tuple[int, str], Step] = net.__dict__.setdefault("_steps", OrderedDict())
    key = (n, loss.name)
    if key in kept:
        kept.move_to_end(key)
    else:
        if len(kept) >= MAX_STEPS:
            kept.popitem(last=False)
        kept[key] = Step(net, n, loss)
    return kept[key]


def fused(net: Network, kind: int = 0) -> FusedTrainer | None:
    """The network's fused per-example loop under optimiser `kind`, or None where a layer has
    no device-side form (kept on the network: its build costs ~0.5 s)."""
    net.check_runnable()
    kept: dict[int, FusedTrainer | None] = net.__dict__.setdefault("_fused", {})
    if kind not in kept:
        kept[kind] = fused_trainer(net, kind)
    return kept[kind]
