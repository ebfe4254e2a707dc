"""Running a network on its device: per batch size, the buffers and launches of a forward pass,
a loss gradient with the backward pass; per network, the one update launch over its flat buffers
and the fused per-example loop.

What is built for a network lives in a `Runtime` kept beside it (weakly, so it goes with the
network) and built on first use. Every launch holds the buffers it uses, so dropping a plan from
the runtime's cache never breaks a launch someone still holds.
"""
from __future__ import annotations

import weakref
from collections import OrderedDict

import numpy as np

from grenade_py.device import Launch
from grenade_py.fused import FusedTrainer, fused_trainer
from grenade_py.learning import LearningParameters
from grenade_py.losses import gradient_launches
from grenade_py.network import Network

#: Batch sizes whose plans a runtime keeps.
MAX_PLANS = 4


class Plan:
    """The device buffers and launches for batches of `n` samples: the input, the output, the
    target, the loss gradient at the output and every layer's per-batch buffers (activations
    and deltas between layers among them). Launches are built on first use."""

    def __init__(self, net: Network, n: int) -> None:
        device = net.device
        self.n = n
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
        self._gradient: dict[str, list[Launch]] = {}

    def forward(self, net: Network, training: bool) -> list[Launch]:
        """The forward pass from `input` to `output`."""
        if training not in self._forward:
            self._forward[training] = net.forward(self.n, self.input, self.output,
                                                  self.buffers, training)
        return self._forward[training]

    def gradient(self, net: Network, loss: str) -> list[Launch]:
        """The loss gradient (averaged over the batch) and the backward pass, after a forward
        pass with `target` in place; leaves the gradients in the network's flat buffer."""
        if loss not in self._gradient:
            self._gradient[loss] = gradient_launches(net, self, loss)
        return self._gradient[loss]

    def loss_scale(self, net: Network, loss: str, scale: float) -> None:
        """Scale the loss gradient by `scale` (1/n unless set: a shard of a larger batch sets
        1/(the batch's size))."""
        self.gradient(net, loss)[0].set_arg(1, net.device.dtype(scale))


class Runtime:
    """What is built to run one network: plans by batch size, the update, the fused loop."""

    def __init__(self) -> None:
        self.plans: OrderedDict[int, Plan] = OrderedDict()
        self.update: Launch | None = None
        self.learning: LearningParameters | None = None
        self.fused: FusedTrainer | None = None
        self.fused_built = False


_runtimes: weakref.WeakKeyDictionary[Network, Runtime] = weakref.WeakKeyDictionary()


def runtime(net: Network) -> Runtime:
    net.check_runnable()
    if net not in _runtimes:
        _runtimes[net] = Runtime()
    return _runtimes[net]


def plan(net: Network, n: int) -> Plan:
    """The plan for batches of `n` (kept for the last MAX_PLANS batch sizes used)."""
    plans = runtime(net).plans
    if n in plans:
        plans.move_to_end(n)
    else:
        if len(plans) >= MAX_PLANS:
            plans.popitem(last=False)
        plans[n] = Plan(net, n)
    return plans[n]


def update(net: Network, learning: LearningParameters) -> Launch:
    """One launch applying Grenade's momentum + L2 step to every parameter of the network,
    from the gradients in its flat buffer."""
    rt = runtime(net)
    device, flat = net.device, net.flat
    if rt.update is None:
        count = flat["parameters"].size
        rt.update = device.launch("sgd_momentum_l2", (count,), count, device.dtype(0),
                                  device.dtype(0), device.dtype(0), flat["parameters"],
                                  flat["momentum"], flat["gradients"])
    if learning != rt.learning:
        for index, value in enumerate((learning.rate, learning.momentum, learning.l2), start=1):
            rt.update.set_arg(index, device.dtype(value))
        rt.learning = learning
    return rt.update


def fused(net: Network) -> FusedTrainer | None:
    """The network's fused per-example loop, or None where a layer has no device-side form."""
    rt = runtime(net)
    if not rt.fused_built:
        rt.fused, rt.fused_built = fused_trainer(net), True
    return rt.fused


def enqueue(launches: list[Launch]) -> None:
    for launch in launches:
        launch()

