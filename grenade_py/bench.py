"""`python -m grenade_py.bench`: grenade_py against numpy and PyTorch on the same work, in one run.

1. Grenade's feedforward example trained per example (batch 1): microseconds per example.
2. One epoch of MNIST 784-512-10 (Relu, Softmax, cross-entropy, momentum SGD) at batch 32, 64,
   128 and 256 over 24,000 examples: seconds per epoch, grenade_py's GFLOP/s; at batch 64 also an
   Adam epoch (its cost against SGD's: the optimiser's share of a step). Then the same network's
   output for one sample (run_net): microseconds, a served model's latency; for a batch of 1,000
   (milliseconds); and a training step on one example from the host (train, as a Python loop
   over examples makes them).
3. LeNet (Grenade's README network) for one MNIST epoch at batch 64, and its convolutions;
   a training step of a convnet whose planes are smaller than a vector (3x3 and 5x5 outputs).
4. The FullyConnected GEMMs alone at 64x784x512 and 128x784x512, and 1024^3, against numpy's
   sgemm on the same products.
5. Grenade's Shakespeare network (LSTM 40 80, LSTM 80 40, FC 40 40, Logit) on windows of 50
   symbols: characters per second with Grenade's training semantics, and the same cell in a few
   lines of PyTorch (autograd, summed-gradient BPTT) on the same windows.
6. The mnist CLI's `bn` recipe (BatchNorm, AdamW, cosine schedule) against the same recipe in
   PyTorch: training seconds until 99% on the 10k test set.

Every figure is the median of several runs after a warm-up. PyTorch (CPU) is timed when it is
installed (`pip install torch`); it is never a dependency. Real MNIST is used when --data points
at it; otherwise random data of the same shape (timings do not depend on the values).
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import click
import numpy as np
import pyopencl as cl
import pyopencl.array as cl_array

from grenade_py import blocks
from grenade_py.cli import user_errors
from grenade_py.datasets import load_mnist
from grenade_py.device import Device, Launch
from grenade_py.execution import enqueue, sequence_steps
from grenade_py.feedforward import feedforward_network, sample
from grenade_py.gemm import gemm_forward, gemm_outer, k_splits, panel_size, vector_width
from grenade_py.layers import LSTM, Convolution, FullyConnected, Logit, Pooling, Relu, Reshape
from grenade_py.losses import CROSS_ENTROPY
from grenade_py.many import train_many
from grenade_py.mnist import mnist_network
from grenade_py.network import Network
from grenade_py.numpy_reference import NumpyNetwork
from grenade_py.optimizers import Adam, AdamW, LearningParameters, Optimizer
from grenade_py.platforms import device_spec as spec_of
from grenade_py.recurrent_network import RecurrentNetwork
from grenade_py.recurrent_runner import SymbolCorpus
from grenade_py.runner import fit, run_net, train
from grenade_py.shapes import D1, D2, D3

FF_KINDS = ["FullyConnected", "Tanh", "FullyConnected", "Relu", "FullyConnected", "Logit"]
MLP_KINDS = ["FullyConnected", "Relu", "FullyConnected", "Softmax"]
FF_LP = LearningParameters(0.01, 0.9, 0.0005)
MLP_LP = LearningParameters(0.05, 0.9, 0.0001)
MLP_FLOPS_PER_EXAMPLE = 2 * (2 * 784 * 512 + 3 * 512 * 10)  # forward + dW (+ dX of layer 2)


def median_time(run: Callable[[], object], repeats: int) -> float:
    """Median wall seconds of `run` over `repeats` calls, after one warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _torch():
    try:
        import torch
    except ImportError:
        return None
    # Denormals flushed to zero, as our float32 kernels do (-cl-denorms-are-zero): without it
    # some PyTorch epochs ran 10-30x slower, on sigmoids' saturated deltas.
    torch.set_flush_denormal(True)
    return torch


def _torch_net(torch, sizes_and_acts, params):
    """A torch.nn.Sequential with the given grenade_py parameters (float32)."""
    layers = []
    for kind, p in zip(sizes_and_acts, params, strict=True):
        if kind == "FullyConnected":
            linear = torch.nn.Linear(p["weights"].shape[1], p["weights"].shape[0])
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(p["weights"].astype(np.float32)))
                linear.bias.copy_(torch.from_numpy(p["bias"].astype(np.float32)))
            layers.append(linear)
        else:
            layers.append({"Tanh": torch.nn.Tanh, "Relu": torch.nn.ReLU,
                           "Logit": torch.nn.Sigmoid, "Softmax": torch.nn.Identity}[kind]())
    return torch.nn.Sequential(*layers)


def _torch_descend(torch, model, momenta, lp):
    """Grenade's rule on every parameter: m' = mu m - rate g; w' = w + m' - rate l2 w."""
    with torch.no_grad():
        for p, m in zip(model.parameters(), momenta, strict=True):
            m.mul_(lp.momentum).add_(p.grad, alpha=-lp.rate)
            p.mul_(1 - lp.rate * lp.l2).add_(m)
            p.grad = None


def bench_feedforward(device: Device, examples: int, repeats: int) -> list[tuple[str, float]]:
    """Microseconds per example of per-example training of the feedforward network."""
    xs, ys = sample(examples, np.random.default_rng(0))
    net = feedforward_network(device, seed=1)

    def ours() -> None:
        train(net, FF_LP, xs, ys, per_example=True)
        device.queue.finish()

    rows = [("grenade_py (fused loop)", median_time(ours, repeats) / examples * 1e6)]
    few = min(examples, 3000)
    reference = NumpyNetwork(FF_KINDS, net.get_parameters(), dtype=np.float32)
    rows.append(("numpy", median_time(
        lambda: reference.train_per_example(xs[:few], ys[:few], FF_LP), 3) / few * 1e6))
    torch = _torch()
    if torch is not None:
        model = _torch_net(torch, FF_KINDS, net.get_parameters())
        momenta = [torch.zeros_like(p) for p in model.parameters()]
        tx, ty = torch.from_numpy(xs[:few].astype(np.float32)), torch.from_numpy(
            ys[:few].astype(np.float32))

        def torch_run() -> None:
            for i in range(few):
                out = model(tx[i])
                out.backward(out.detach() - ty[i])
                _torch_descend(torch, model, momenta, FF_LP)

        rows.append(("pytorch", median_time(torch_run, 3) / few * 1e6))
    return rows


def bench_many(device: Device, examples: int, repeats: int) -> list[tuple[str, float]]:
    """Per-example training of 1 and of as many feedforward networks as the device has compute
    units in one launch (train_many), timed interleaved: microseconds per example per
    network."""
    xs, ys = sample(examples, np.random.default_rng(0))
    counts = [1, max(2, device.cl_device.max_compute_units)]
    nets = {k: [feedforward_network(device, seed=s) for s in range(k)] for k in counts}
    timings: dict[int, list[float]] = {k: [] for k in counts}
    for _ in range(repeats + 1):  # the first of each: the warm-up
        for k in counts:
            start = time.perf_counter()
            train_many(nets[k], FF_LP, xs, ys)
            timings[k].append(time.perf_counter() - start)
    return [(f"grenade_py, {k} network{'s' if k > 1 else ''} at once",
             statistics.median(timings[k][1:]) / (k * examples) * 1e6) for k in counts]


def _torch_epoch(torch, model, x: np.ndarray, y: np.ndarray, batch: int,
                 lp: LearningParameters) -> Callable[[], None]:
    """One epoch of `model` in PyTorch over (x, y) (prepared as tensors once, outside the
    timing, as fit uploads its dataset once) in shuffled minibatches, cross entropy,
    Grenade's momentum rule."""
    momenta = [torch.zeros_like(p) for p in model.parameters()]
    tx, ty = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.argmax(axis=1))
    loss_fn = torch.nn.CrossEntropyLoss()

    def epoch() -> None:
        order = torch.randperm(len(tx))
        for start in range(0, len(tx), batch):
            idx = order[start:start + batch]
            loss_fn(model(tx[idx]), ty[idx]).backward()
            _torch_descend(torch, model, momenta, lp)

    return epoch


#: How long `interleaved(settle=True)` pauses before each run, then runs it untimed: numpy's
#: OpenBLAS keeps its threads spinning for ~0.1 s after a product (2**28 cycles), taking both
#: cores from PoCL's threads, and the cores come back slowly from the pause. Measured here,
#: gemm_dot's 50 launches straight after 50 numpy products: 85-95 GFLOP/s at 128x784x512,
#: against 161-171 alone; at 64x784x512 after the pause and one untimed run (20 ms) 92-101,
#: after the pause and SETTLE_S of untimed runs 144-148 (numpy's 98-129 either way).
SETTLE_S = 0.15


def interleaved(runs: dict[str, Callable[[], float | None]], repeats: int,
                settle: bool = False, ratios: dict[str, float] | None = None
                ) -> list[tuple[str, float]]:
    """Median seconds of each run over `repeats` rounds after a warm-up round, the runs taking
    turns within a round (the machine's noise falls on all alike), each round starting one run
    further on (on a 2-core EPYC, of four alike MLP epochs at batch 64 taking turns in a fixed
    order, the first took 1.13-1.23x as long as the others). A run returning a number
    gives its own time (fit's epoch, from its history); else its wall time counts. With
    `settle` (runs of milliseconds: the GEMMs), each timed run follows a pause of SETTLE_S and
    SETTLE_S of untimed runs of itself, so that neither times the other's spinning threads or
    the cores waking. `ratios`, if given, gets the median over the rounds of the first run's
    time over each other's in the same round, by the other's name: a phase of the machine's
    noise that slows a round's runs alike divides out."""
    timings: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for turn in range(repeats + 1):  # the first round: the warm-up
        for name in names[turn % len(names):] + names[:turn % len(names)]:
            run = runs[name]
            if settle:
                time.sleep(SETTLE_S)
                woken = time.perf_counter() + SETTLE_S
                run()
                while time.perf_counter() < woken:
                    run()
            start = time.perf_counter()
            own = run()
            timings[name].append(own if own is not None else time.perf_counter() - start)
    if ratios is not None:
        ratios.update({name: statistics.median(
            a / b for a, b in zip(timings[names[0]][1:], timings[name][1:], strict=True))
            for name in names[1:]})
    return [(name, statistics.median(times[1:])) for name, times in timings.items()]


def _fit_epoch(net: Network, lp: Optimizer, x: np.ndarray, y: np.ndarray, batch: int
               ) -> Callable[[], float]:
    """A run of one epoch of fit at `batch`, giving the epoch's seconds as fit reports them
    (its shuffle, steps and metrics; not the call's upload of the dataset, which PyTorch's
    epochs leave out too and a fit of many epochs pays once)."""
    return lambda: fit(net, lp, x, y, batch_size=batch, epochs=1, seed=1,
                       loss="cross_entropy")[0]["seconds"]


def bench_mnist(device: Device, data: tuple[np.ndarray, np.ndarray], batch: int,
                repeats: int) -> list[tuple[str, float]]:
    """Seconds per epoch of MNIST-MLP minibatch training, grenade_py's (at batch 64 also
    under Adam) interleaved with PyTorch's; numpy's."""
    x, y = data[0].astype(np.float32), data[1].astype(np.float32)
    net, adam_net = mnist_network("mlp", device, seed=1), mnist_network("mlp", device, seed=1)
    runs: dict[str, Callable[[], float | None]] = {"grenade_py": _fit_epoch(net, MLP_LP, x, y,
                                                                            batch)}
    if batch == 64:
        runs["grenade_py, Adam"] = _fit_epoch(adam_net, Adam(1e-3), x, y, batch)
    torch = _torch()
    if torch is not None:
        runs["pytorch"] = _torch_epoch(torch, _torch_net(torch, MLP_KINDS, net.get_parameters()),
                                       x, y, batch, MLP_LP)
    ratios: dict[str, float] = {}
    rows = interleaved(runs, repeats, ratios=ratios)
    if "pytorch" in ratios:
        rows.append(("grenade_py / pytorch, by round", ratios["pytorch"]))
    if "grenade_py, Adam" in ratios:
        rows.append(("Adam / SGD, by round", 1 / ratios["grenade_py, Adam"]))
    reference = NumpyNetwork(MLP_KINDS, net.get_parameters(), dtype=np.float32)

    def numpy_epoch() -> None:
        order = np.random.default_rng(1).permutation(len(x))
        for start in range(0, len(x), batch):
            idx = order[start:start + batch]
            reference.train(x[idx], y[idx], MLP_LP, loss="cross_entropy")

    return rows + [("numpy", median_time(numpy_epoch, max(1, repeats // 2)))]


#: run_net calls per timed run of `bench_run_net` on one sample, and on a batch of RUN_NET_ROWS.
ONE_SAMPLE_CALLS, BATCH_CALLS = 200, 10
RUN_NET_ROWS = 1000


def bench_run_net(device: Device, repeats: int, rows: int = 1) -> list[tuple[str, float]]:
    """Microseconds for the MNIST MLP's output for one sample (rows 1) or a batch of `rows`
    from the host: run_net, interleaved with PyTorch's forward pass (no_grad, softmax
    included). A batch's runs settle first (`interleaved`'s settle): after each forward
    PyTorch's OpenMP threads spin for milliseconds on both cores: a run_net of 1,000 rows
    straight after a forward took 1.2-2.2x as long as after a pause of 10 ms (2-core EPYC)."""
    net = mnist_network("mlp", device, seed=1)
    x = np.random.default_rng(0).random((rows, 784) if rows > 1 else 784, dtype=np.float32)
    calls = ONE_SAMPLE_CALLS if rows == 1 else BATCH_CALLS

    def ours() -> None:
        for _ in range(calls):
            run_net(net, x)

    runs: dict[str, Callable[[], float | None]] = {"grenade_py": ours}
    torch = _torch()
    if torch is not None:
        model = _torch_net(torch, MLP_KINDS, net.get_parameters())
        xt = torch.from_numpy(x.reshape(-1, 784))

        def theirs() -> None:
            with torch.no_grad():
                for _ in range(calls):
                    model(xt).softmax(-1).numpy()

        runs["pytorch"] = theirs
    return [(name, seconds / calls * 1e6)
            for name, seconds in interleaved(runs, repeats, settle=rows > 1)]


def bench_one_example(device: Device, repeats: int) -> list[tuple[str, float]]:
    """Microseconds for one training step of the MNIST MLP on one example from the host, as a
    Python loop over examples (Grenade's fold of train) makes them: train, interleaved with
    PyTorch's forward, cross entropy, backward and Grenade's momentum rule."""
    net = mnist_network("mlp", device, seed=1)
    rng = np.random.default_rng(0)
    xs = rng.random((ONE_SAMPLE_CALLS, 784), dtype=np.float32)
    labels = rng.integers(0, 10, ONE_SAMPLE_CALLS)
    ys = np.eye(10, dtype=np.float32)[labels]

    def ours() -> None:
        for x, y in zip(xs, ys, strict=True):
            train(net, MLP_LP, x, y, loss="cross_entropy")
        net.device.queue.finish()

    runs: dict[str, Callable[[], float | None]] = {"grenade_py": ours}
    torch = _torch()
    if torch is not None:
        model = _torch_net(torch, MLP_KINDS, net.get_parameters())
        momenta = [torch.zeros_like(p) for p in model.parameters()]
        loss_fn = torch.nn.CrossEntropyLoss()
        tx, ty = torch.from_numpy(xs[:, None]), torch.from_numpy(labels[:, None])

        def theirs() -> None:
            for x, y in zip(tx, ty, strict=True):
                loss_fn(model(x), y).backward()
                _torch_descend(torch, model, momenta, MLP_LP)

        runs["pytorch"] = theirs
    return [(name, seconds / ONE_SAMPLE_CALLS * 1e6)
            for name, seconds in interleaved(runs, repeats)]


#: LeNet's convolutions' flops per example: forward and kernel gradient of both, the input delta
#: of the second (the first has none to compute).
LENET_FLOPS_PER_EXAMPLE = 2 * (2 * 24 * 24 * 10 * 25 + 3 * 8 * 8 * 16 * 250)


def bench_lenet(device: Device, data: tuple[np.ndarray, np.ndarray],
                repeats: int) -> list[tuple[str, float]]:
    """Seconds per LeNet epoch at batch 64: grenade_py's, interleaved with PyTorch's on the
    same architecture (Grenade's momentum rule, cross-entropy) when it is installed."""
    x, y = data[0].reshape(-1, 28, 28).astype(np.float32), data[1].astype(np.float32)
    net = mnist_network("lenet", device, seed=1)
    runs: dict[str, Callable[[], float | None]] = {"grenade_py": _fit_epoch(net, MLP_LP, x, y,
                                                                            64)}
    torch = _torch()
    if torch is not None:
        nn = torch.nn
        model = nn.Sequential(nn.Conv2d(1, 10, 5, bias=False), nn.MaxPool2d(2), nn.ReLU(),
                              nn.Conv2d(10, 16, 5, bias=False), nn.MaxPool2d(2), nn.Flatten(),
                              nn.ReLU(), nn.Linear(256, 80), nn.Sigmoid(), nn.Linear(80, 10))
        runs["pytorch"] = _torch_epoch(torch, model, x[:, None], y, 64, MLP_LP)
    return interleaved(runs, repeats)


def _is_convolution(launch: Launch) -> bool:
    """Whether a launch of a LeNet step is a convolution's: its own kernels (conv_*), or a
    GEMM over a batch of products (only convolutions run those: the input delta's)."""
    name = launch.kernel.function_name
    return name.startswith("conv_") or (name.startswith("gemm_") and
                                         len(launch.global_size) == 3 and
                                         launch.global_size[2] > 1)


def bench_convolutions(device: Device, repeats: int) -> list[tuple[str, float, str]]:
    """LeNet's training step at batch 64, and its convolutions' part of it: the step's time less
    the time of the same step without the convolutions' launches, the two taking turns
    (GFLOP/s of the multiply-adds the convolutions stand for); each convolution GEMM's rate at
    its default and tuned block (the median of the tuner's rounds); per-example training of a
    small convnet (us/example)."""
    from grenade_py import execution

    net = mnist_network("lenet", device, seed=1)
    lenet = execution.steps(net, 64, CROSS_ENTROPY)
    lenet.input.set(np.random.default_rng(0).uniform(size=lenet.input.shape).astype(
        device.dtype))
    update = execution.Update(net)
    step = lenet.forward_launches(True) + lenet.backward_launches()
    parts = {"step": step, "others": [launch for launch in step if not _is_convolution(launch)]}
    times: dict[str, list[float]] = {name: [] for name in parts}
    for _ in range(max(5, repeats) + 1):  # the parts take turns; the first round warms up
        for name, launches in parts.items():
            start = time.perf_counter()
            for _ in range(CONV_STEPS):  # back to back, as fit runs them
                for launch in launches:
                    launch()
                update(MLP_LP)
            device.queue.finish()
            times[name].append((time.perf_counter() - start) / CONV_STEPS)
    whole, without = (statistics.median(times[name][1:]) for name in parts)
    rows = [("LeNet step at batch 64 (all layers)", whole * 1e3, "ms"),
            ("  its convolutions (the step less the step without them), GFLOP/s",
             64 * LENET_FLOPS_PER_EXAMPLE / (whole - without) / 1e9, "GFLOP/s")]
    untuned = []  # the launches of no register block (conv_scatter_delta), with their shapes
    with blocks.recording() as sites:  # LeNet's convolutions, the second's input delta too
        for conv, layers, inputs in ((Convolution(1, 10, 5, 5, 1, 1), [], D2(28, 28)),
                                     (Convolution(10, 16, 5, 5, 1, 1), [Relu()], D3(12, 12, 10))):
            alone = execution.steps(Network(layers + [conv], input=inputs, device=device,
                                            seed=1), 64)
            alone.forward_launches(True)
            c, _, _, f, kh, kw, _, _, oh, ow = conv.geometry()
            untuned += [(launch, (64, c * kh * kw, oh * ow, f))
                        for launch in alone.backward_launches()
                        if launch.kernel.function_name == "conv_scatter_delta"]
    for t in blocks.tune_sites(device, sites, repeats, keep=False):  # each GEMM: median runs
        flops = 2 * int(np.prod(t.shape[:4]))  # (n, R, F, P) or (m, n, k, batches)
        for label, block, seconds in (("untuned", t.default, t.default_s),
                                      ("tuned", t.best, t.best_s)):
            rows.append((f"    {blocks.label(t.form, block)} "
                         f"{','.join(map(str, t.shape[:4]))} {label}", flops / seconds / 1e9,
                         "GFLOP/s"))
    for launch, dims in untuned:  # timed as the tuner times its candidates
        rows.append((f"    {launch.kernel.function_name} {','.join(map(str, dims))}",
                     2 * int(np.prod(dims)) / statistics.median(
                         blocks.seconds(device, launch) for _ in range(repeats)) / 1e9,
                     "GFLOP/s"))
    small = Network([Convolution(1, 4, 3, 3, 1, 1), Pooling(2, 2, 2, 2), Relu(), Reshape(),
                     FullyConnected(100, 10), Logit()], input=D2(12, 12), device=device, seed=1)
    rng = np.random.default_rng(0)
    xs, ys = rng.uniform(size=(500, 12, 12)), rng.uniform(size=(500, 10))
    def per_example() -> None:
        train(small, FF_LP, xs, ys, per_example=True)
        device.queue.finish()

    seconds = median_time(per_example, repeats)
    rows.append(("small convnet, per-example training", seconds / len(xs) * 1e6, "us/example"))
    return rows


def _steps_against_torch(device: Device, net: Network, x: np.ndarray, y: np.ndarray,
                         loss: str, model: Callable[[Any], Any] | None, repeats: int
                         ) -> list[tuple[str, float]]:
    """Microseconds per training step (train on the batch (x, y), Grenade's momentum rule
    MLP_LP, `loss`: "squared_error", the half squared error averaged over the batch, or
    "cross_entropy" at the logits), interleaved with PyTorch's on the same architecture,
    `model(torch)` (without the Softmax), where PyTorch is installed."""
    def ours() -> None:
        for _ in range(BATCH_STEPS):
            train(net, MLP_LP, x, y, loss=loss)
        device.queue.finish()

    runs: dict[str, Callable[[], float | None]] = {"grenade_py": ours}
    torch = _torch()
    if torch is not None and model is not None:
        built = model(torch)
        momenta = [torch.zeros_like(p) for p in built.parameters()]
        tx, ty = torch.from_numpy(x).reshape(len(x), -1, *x.shape[-2:]), torch.from_numpy(y)

        def measured(out):
            if loss == "cross_entropy":
                return torch.nn.functional.cross_entropy(out, ty.argmax(1))
            return 0.5 * ((out - ty) ** 2).sum() / len(tx)

        def theirs() -> None:
            for _ in range(BATCH_STEPS):
                measured(built(tx)).backward()
                _torch_descend(torch, built, momenta, MLP_LP)

        runs["pytorch"] = theirs
    return [(name, seconds / BATCH_STEPS * 1e6) for name, seconds in interleaved(runs, repeats)]


def bench_small_planes(device: Device, repeats: int) -> list[tuple[str, float]]:
    """Microseconds per training step at batch 64 (`_steps_against_torch`, squared error) of a
    convnet whose planes are smaller than a vector (7 x 7 x 16 in, 3 x 3 convolutions to 5 x 5
    x 32 and 3 x 3 x 64, then FullyConnected 576 10: outputs of fewer than 16 positions)."""
    net = Network([Convolution(16, 32, 3, 3, 1, 1), Relu(), Convolution(32, 64, 3, 3, 1, 1),
                   Relu(), Reshape(D1(576)), FullyConnected(576, 10)], input=D3(7, 7, 16),
                  device=device, seed=1)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(64, 16, 7, 7)).astype(np.float32)
    y = rng.uniform(size=(64, 10)).astype(np.float32)

    def model(torch):
        nn = torch.nn
        return nn.Sequential(nn.Conv2d(16, 32, 3, bias=False), nn.ReLU(),
                             nn.Conv2d(32, 64, 3, bias=False), nn.ReLU(), nn.Flatten(),
                             nn.Linear(576, 10))

    return _steps_against_torch(device, net, x, y, "squared_error", model, repeats)


def bench_inception(device: Device, repeats: int) -> list[tuple[str, float]]:
    """Microseconds per training step at batch 64 (`_steps_against_torch`, cross-entropy) of
    the network of Grenade's mnist.hs (`mnist_network("inception")`: two Concats of padded
    3 x 3 and 5 x 5 convolutions, pooling, two FullyConnected layers) on 28 x 28 images."""
    net = mnist_network("inception", device, seed=1)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(64, 28, 28)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 64)]

    def model(torch):
        nn = torch.nn

        class Concat(nn.Module):
            def __init__(self, *branches):
                super().__init__()
                self.branches = nn.ModuleList(branches)

            def forward(self, x):
                return torch.cat([branch(x) for branch in self.branches], 1)

        def mini(channels: int, chx: int, chy: int):
            return Concat(nn.Conv2d(channels, chx, 3, padding=1, bias=False),
                          nn.Conv2d(channels, chy, 5, padding=2, bias=False))

        return nn.Sequential(Concat(nn.Identity(), mini(1, 5, 9)), nn.MaxPool2d(2), nn.ReLU(),
                             Concat(nn.Conv2d(15, 3, 1, bias=False), mini(15, 5, 10)),
                             nn.ZeroPad2d(-1), nn.MaxPool2d(3), nn.ReLU(), nn.Flatten(),
                             nn.Linear(288, 80), nn.Sigmoid(), nn.Linear(80, 10))

    return _steps_against_torch(device, net, x, y, "cross_entropy", model, repeats)


#: Training steps per timing of bench_small_planes and bench_inception.
BATCH_STEPS = 20
#: LeNet steps per timing of bench_convolutions.
CONV_STEPS = 10
#: Launches of peak_fma per timing (~3 ms each here).
PEAK_CALLS = 4


def measured_peak(device: Device, repeats: int) -> float:
    """GFLOP/s of chained vector FMAs (peak_fma_6 and peak_fma_8 in kernels/gemm.cl: 6 or 8
    independent chains per work-item, whichever is faster), the device's multiply-add rate as
    our own kernel reaches it in the fastest of several runs (clpeak is not reliable on PoCL)."""
    # On a CPU, work-groups of 8: eight per compute unit, whatever size the driver would pick
    # (PoCL once ran all 64 x units in one group, on one core: half the peak). On a GPU, 2048
    # work-items per compute unit in groups of 256: every warp's lanes busy, and enough warps
    # to hide each FMA's latency.
    per_unit, group, iterations = (2048, 256, 2000) if device.gpu else (64, 8, 20000)
    items = device.cl_device.max_compute_units * per_unit
    out = device.zeros((items,))
    rates = []
    for chains in (6, 8):
        launch = device.launch(f"peak_fma_{chains}", (items,), items, iterations,
                               device.dtype(0.999), device.dtype(0.001), out, local=(group,))
        launch()
        device.queue.finish()  # the build, and a warm-up
        times = []
        for _ in range(max(5, repeats)):  # a peak: the fastest run (the first ones ran at half)
            start = time.perf_counter()
            for _ in range(PEAK_CALLS):  # back to back, as the GEMMs are timed
                launch()
            device.queue.finish()
            times.append((time.perf_counter() - start) / PEAK_CALLS)
        rates.append(items * iterations * chains * vector_width(device) * 2 / min(times) / 1e9)
    return max(rates)


def peak_gflops(device: Device) -> tuple[float, str]:
    """An estimate of the device's FP32 peak from what OpenCL reports, and how it was made:
    clock x compute units x FP32 lanes per unit x 2 (a fused multiply-add is two flops); 0
    where the driver reports no clock (Intel's CPU runtime reports 0 MHz)."""
    d = device.cl_device
    clock, units, vendor = d.max_clock_frequency / 1e3, d.max_compute_units, d.vendor.lower()
    if clock <= 0:
        return 0.0, f"{d.name.strip()} reports no clock"
    if not device.gpu:  # a core: native vector lanes on each of two FMA ports
        lanes, how = 2 * d.native_vector_width_float, "2 FMA ports x native vector width"
    elif "nvidia" in vendor:
        lanes, how = 128, "128 FP32 lanes per SM (Ampere and later)"
    elif "advanced micro" in vendor or "amd" in vendor:
        lanes, how = 64, "64 lanes per CU"
    else:
        lanes, how = 8, "8 lanes per unit (Intel EU)"
    return clock * units * lanes * 2, (f"{clock:.2f} GHz x {units} units x {lanes} lanes x 2 "
                                       f"({how}; clocks as OpenCL reports them)")


#: The GEMM rows time up to this many products back to back, ours and numpy's alike: the
#: sustained rate. (One launch of ours, enqueued and waited for, adds ~0.3 ms of PoCL's thread
#: wake-up and wait to the 64x784x512 product's ~0.3 ms: a step's launches follow one another
#: unwaited.) Fewer where one takes long: about GEMM_SECONDS of products per timing (the tiled
#: form's 1024^3 product takes 0.3 s on a CPU).
GEMM_CALLS = 50
GEMM_SECONDS = 0.25


def _products(a: np.ndarray, b: np.ndarray, calls: int) -> None:
    """numpy's sgemm a @ b, `calls` times."""
    for _ in range(calls):
        a @ b


#: The FullyConnected GEMMs timed: MNIST 784-512-10's first layer at these batch sizes.
GEMM_BATCHES = (64, 128)


def _forward(device: Device, m: int, n: int, k: int, a: cl_array.Array, b: cl_array.Array,
             bias: cl_array.Array) -> Callable[[], None]:
    """C (m, n) = A (m, k) B (n, k)^T + bias as FullyConnected's forward launches it
    (`gemm.gemm_forward`: on a GPU, k in parts where `gemm.k_splits` says so; on a CPU, from
    panels of B where `gemm.panel_size` says so, packing them included)."""
    splits, panels = k_splits(device, m, n, k), panel_size(device, m, n, k)
    launches = gemm_forward(device, m, n, k, a, b, bias, device.zeros((m, n)), splits,
                            device.zeros((splits * m * n,)) if splits > 1 else None,
                            panels=device.zeros((panels,)) if panels else None)
    return lambda: enqueue(launches)


def bench_gemm(device: Device, repeats: int) -> list[tuple[str, float]]:
    """GFLOP/s of the FullyConnected GEMMs at Bx784x512 (B in GEMM_BATCHES) in both of
    grenade_py's forms (register-blocked for CPUs, tiled for GPUs) and at 1024^3 (the
    forward's products as the layer launches them: `_forward`), and of
    numpy's sgemm on the same products, each taking turns with the device's own form
    (`interleaved`: the machine's noise falls on both alike); the register form also
    at the block this device's launches take (tuned or the default) and at the fastest block
    for the shape, timed now. The products as launched are medians ("median"), the blocks'
    rows the median of the tuner's rounds ("median run")."""
    i, o = 784, 512
    rng = np.random.default_rng(0)
    big = rng.normal(size=(1024, 1024)).astype(np.float32)
    w, b = (rng.normal(size=s).astype(np.float32) for s in [(o, i), (o,)])
    data = {n: (rng.normal(size=(n, i)).astype(np.float32),
                rng.normal(size=(n, o)).astype(np.float32)) for n in GEMM_BATCHES}
    rows = []
    for form in (device.gemm, "tiled" if device.gemm == "registers" else "registers"):
        dev = device if form == device.gemm else Device(spec_of(device.cl_device), gemm=form)
        wd, bd, bigd = map(dev.to_device, (w, b, big))
        # (name, its launch's maker, flops, numpy's same product)
        products: list[tuple[str, Callable[[], Callable[[], object]], int,
                             tuple[str, np.ndarray, np.ndarray]]] = []
        for n, (x, dy) in data.items():
            xd, dytd = dev.to_device(x), dev.to_device(dy.T.copy())
            products += [
                (f"forward {form} {n}x{i}x{o} (y = x W^T + b)",
                 partial(_forward, dev, n, o, i, xd, wd, bd), 2 * n * i * o,
                 (f"{n}x{i}x{o} x @ W.T", x, w.T)),
                (f"gemm_outer {form} {n}x{i}x{o} (dW = dy^T x, dy^T stored as "
                 "FullyConnected's dy_t)",
                 partial(gemm_outer, dev, o, i, n, dytd, n, 1, xd, dev.zeros((o, i))),
                 2 * n * i * o, (f"{n}x{i}x{o} dy.T @ x", dy.T, x))]
        products.append((f"forward {form} 1024^3", partial(
            _forward, dev, 1024, 1024, 1024, bigd, bigd, dev.zeros((1024,))), 2 * 1024**3,
            ("1024^3 (host peak)", big, big)))
        for name, make, flops, (theirs, left, right) in products:
            launch = make()
            for _ in range(2):  # the build; then a measure of one product
                start = time.perf_counter()
                launch()
                dev.queue.finish()
            calls = max(1, min(GEMM_CALLS, int(GEMM_SECONDS / (time.perf_counter() - start))))

            def run(launch=launch, dev=dev, calls=calls) -> None:
                for _ in range(calls):
                    launch()
                dev.queue.finish()

            runs: dict[str, Callable[[], float | None]] = {f"grenade_py {name}": run}
            if form == device.gemm:
                runs[f"numpy sgemm {theirs}"] = partial(_products, left, right, calls)
            ratios: dict[str, float] = {}
            rows += [(f"{what}, median", calls * flops / seconds / 1e9) for what, seconds
                     in interleaved(runs, repeats, settle=len(runs) > 1, ratios=ratios)]
            if ratios:  # our time over numpy's, round by round: its inverse, rate over rate
                rows.append((f"by round: grenade_py {name} / numpy",
                             1 / next(iter(ratios.values()))))
            if form == device.gemm:  # the fastest candidate for the shape, timed now
                with blocks.recording() as sites:
                    make()
                for t in blocks.tune_sites(dev, sites, repeats, keep=False):  # median runs
                    for label, block, seconds in (("untuned", t.default, t.default_s),
                                                  ("tuned", t.best, t.best_s)):
                        rows.append((f"grenade_py {name}, {label} "
                                     f"({blocks.label(t.form, block)}), median run",
                                     flops / seconds / 1e9))
    return rows


SHAKESPEARE_LP = LearningParameters(0.01, 0.95, 0.000001)


def _torch_lstm_trainer(torch, net, lp: LearningParameters) -> Callable[[np.ndarray], None]:
    """Grenade's Shakespeare cell written in a few lines of PyTorch (autograd, CPU), with the
    network's parameters: one call trains on one window of one-hot rows (T + 1, n), target on
    the last step, summed-gradient BPTT and momentum SGD with weight decay."""
    values = net.get_parameters()
    params = [{k: torch.tensor(v, requires_grad=True) for k, v in p.items()} for p in values]
    flat = [t for p in params for t in p.values()]
    opt = torch.optim.SGD(flat, lr=lp.rate, momentum=lp.momentum, weight_decay=lp.l2)
    lstm1, lstm2, fc = params[0], params[1], params[2]

    def cell(p, c, x):
        o = c.shape[0]
        z, r = p["b"] + x @ p["w"], c @ p["u"]  # grenade_py stores W^T and U^T
        f, i = torch.sigmoid(z[:o] + r[:o]), torch.sigmoid(z[o:2 * o] + r[o:2 * o])
        og, g = torch.sigmoid(z[2 * o:3 * o] + r[2 * o:]), torch.tanh(z[3 * o:])
        c = f * c + i * g
        return c, og * c

    def train_window(rows: np.ndarray) -> None:
        xs = torch.from_numpy(rows.astype(np.float32))  # as the device's float32 parameters
        c1, c2 = lstm1["state"], lstm2["state"]
        for x in xs[:-1]:
            c1, h = cell(lstm1, c1, x)
            c2, h = cell(lstm2, c2, h)
        y = torch.sigmoid(fc["weights"] @ h + fc["bias"])
        loss = 0.5 * ((y - xs[-1]) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return train_window


def bench_recurrent(device: Device, windows: int, repeats: int
                    ) -> tuple[list[tuple[str, float]], str]:
    """Characters per second on the Shakespeare network, and where grenade_py's time goes."""
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 40, size=200_000)
    steps = 49  # a window of 50 symbols: 49 inputs, the target after the last
    net = RecurrentNetwork([LSTM(40, 80), LSTM(80, 40), FullyConnected(40, 40), Logit()],
                           input=D1(40), device=device, seed=1, init="grenade")
    corpus = SymbolCorpus(net, codes)
    offsets = rng.integers(0, len(codes) - 60, size=windows)
    rows = []
    for name, every, batch in (("grenade_py, Grenade's semantics", False, 1),
                               ("grenade_py, targets on every step", True, 1),
                               ("grenade_py, summed BPTT, batch 16", True, 16)):
        def ours(every: bool = every, batch: int = batch) -> None:
            corpus.train(SHAKESPEARE_LP, offsets, steps, every=every, batch=batch)
        seconds = median_time(ours, repeats)
        rows.append((name, windows * steps / seconds))
    p = sequence_steps(net, steps, 1)
    queue = device.queue
    parts = []
    for part, launches in (("forward", p.start + p.forward_launches(True)),
                           ("backward", p.backward_launches()),
                           ("update", p.update_launches(SHAKESPEARE_LP, True))):
        def run(launches=launches) -> None:
            for _ in range(20):
                for launch in launches:
                    launch()
            queue.finish()
        parts.append(f"{part} {median_time(run, repeats) / 20 * 1e6:.0f} us")
    torch = _torch()
    if torch is not None:
        eye = np.eye(40)
        train_window = _torch_lstm_trainer(torch, net, SHAKESPEARE_LP)
        some = offsets[:max(1, windows // 20)]

        def torch_run() -> None:
            for o in some:
                train_window(eye[codes[o:o + steps + 1]])
        rows.append(("pytorch, summed BPTT, one window", len(some) * steps /
                     median_time(torch_run, max(1, repeats // 2))))
    return rows, "per window of Grenade's semantics: " + ", ".join(parts)


RECIPE_EPOCHS = 6


def bench_recipe(device: Device, directory: str | None, examples: int
                 ) -> list[tuple[str, float, float, float]]:
    """The mnist CLI's `bn` recipe (LeNet's shape with BatchNorm, AdamW 0.003 with weight
    decay 1e-4, a cosine schedule over RECIPE_EPOCHS epochs, batch 64) in grenade_py and the
    same in PyTorch: (name, training seconds until the test accuracy first reaches 99% (nan if
    it does not), the best test accuracy, training seconds for all epochs). Only training is
    timed; the test set is scored after each epoch."""
    folder = directory or str(Path("..") / "shared" / "data" / "mnist")
    if Path(folder).is_dir():
        tx, ty, vx, vy = load_mnist(folder)
    else:
        rng = np.random.default_rng(0)
        tx, vx = rng.uniform(size=(24000, 784)), rng.uniform(size=(2000, 784))
        ty, vy = (np.eye(10)[rng.integers(0, 10, n)] for n in (24000, 2000))
    examples = max(64, examples // 64 * 64)  # whole batches: BatchNorm1d takes no batch of 1
    tx, ty = tx[:examples].reshape(-1, 28, 28), ty[:examples]
    vx = vx.reshape(-1, 28, 28)

    def summary(name: str, seconds: list[float], accuracy: list[float]
                ) -> tuple[str, float, float, float]:
        reached = [t for t, a in zip(np.cumsum(seconds), accuracy, strict=True) if a >= 0.99]
        return name, reached[0] if reached else float("nan"), max(accuracy), sum(seconds)

    net = mnist_network("bn", device, seed=1)
    history = fit(net, AdamW(0.003, weight_decay=1e-4), tx, ty, batch_size=64,
                  epochs=RECIPE_EPOCHS, seed=1, loss="cross_entropy", schedule="cosine",
                  validation=(vx, vy))
    rows = [summary("grenade_py", [r["seconds"] for r in history],
                    [r["val_accuracy"] for r in history])]
    torch = _torch()
    if torch is None:
        return rows
    nn = torch.nn
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 12, 5), nn.BatchNorm2d(12), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(12, 24, 5), nn.BatchNorm2d(24), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(384, 96), nn.BatchNorm1d(96), nn.ReLU(),
                          nn.Linear(96, 10))
    optimiser = torch.optim.AdamW(model.parameters(), lr=0.003, weight_decay=1e-4)
    x_t = torch.from_numpy(tx[:, None].astype(np.float32))
    y_t = torch.from_numpy(ty.argmax(axis=1))
    v_t = torch.from_numpy(vx[:, None].astype(np.float32))
    loss_fn = nn.CrossEntropyLoss()
    seconds, accuracy = [], []
    for epoch in range(RECIPE_EPOCHS):
        for group in optimiser.param_groups:
            group["lr"] = 0.003 * (1 + np.cos(np.pi * epoch / RECIPE_EPOCHS)) / 2
        model.train()
        start = time.perf_counter()
        order = torch.randperm(len(x_t))
        for first in range(0, len(x_t) - 1, 64):  # (a last batch of one row: BatchNorm1d)
            idx = order[first:first + 64]
            if len(idx) < 2:
                continue
            optimiser.zero_grad()
            loss_fn(model(x_t[idx]), y_t[idx]).backward()
            optimiser.step()
        seconds.append(time.perf_counter() - start)
        model.eval()
        with torch.no_grad():
            guess = model(v_t).argmax(dim=1).numpy()
        accuracy.append(float(np.mean(guess == vy.argmax(axis=1))))
    rows.append(summary("pytorch", seconds, accuracy))
    return rows


def mnist_data(directory: str | None) -> tuple[tuple[np.ndarray, np.ndarray], str]:
    """MNIST's training set from `directory` (DataError if it is not an MNIST folder), else
    from ../shared/data/mnist where there is one, else random data of its shapes."""
    folder = directory or str(Path("..") / "shared" / "data" / "mnist")
    if directory or Path(folder).is_dir():
        train_x, train_y, _, _ = load_mnist(folder)
        return (train_x, train_y), f"MNIST, 24k-train subset ({folder})"
    rng = np.random.default_rng(0)
    return ((rng.uniform(size=(24000, 784)), np.eye(10)[rng.integers(0, 10, 24000)]),
            f"random data shaped as MNIST (no --data given, and no {folder})")


#: Haskell Grenade's own per-unit costs, from issue 17 (upstream 83cb4e4 built with GHC 9.0.2,
#: measured on this project's 2-core machine type, float64): what section 7 compares against.
GRENADE = {"feedforward": "11.4-11.9 us/example", "shakespeare": "17.7 ms/window",
           "mnist": "2.8-3.0 ms/example", "gan-mnist": "2.6-2.8 ms/example",
           "recurrent": "12.6-12.8 s"}


def marginal(run: Callable[[int], object], small: int, large: int, repeats: int) -> float:
    """Seconds per unit of `run(units)`: the median difference between a large and a small
    run, divided by their difference in units (start-up costs cancel), interleaved."""
    run(small)  # warm-up: builds, caches
    differences = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        run(small)
        middle = time.perf_counter()
        run(large)
        differences.append((time.perf_counter() - middle) - (middle - start))
    return statistics.median(differences) / (large - small)


def bench_grenade_examples(device: Device, repeats: int, windows: int
                           ) -> list[tuple[str, float, str]]:
    """Each of Grenade's five examples as grenade_py runs them with Grenade's semantics (one
    example or window per step), per unit of work: (example, value, unit)."""
    rows = []
    xs, ys = sample(20_000, np.random.default_rng(0))
    ff = feedforward_network(device, seed=1)

    def feedforward(n: int) -> None:
        train(ff, FF_LP, xs[:n], ys[:n], per_example=True)
        device.queue.finish()

    rows.append(("feedforward", marginal(feedforward, 2_000, 20_000, repeats) * 1e6,
                 "us/example"))
    net = RecurrentNetwork([LSTM(40, 80), LSTM(80, 40), FullyConnected(40, 40), Logit()],
                           input=D1(40), device=device, seed=1, init="grenade")
    codes = np.random.default_rng(0).integers(0, 40, size=50_000)
    corpus = SymbolCorpus(net, codes)
    offsets = np.random.default_rng(1).integers(0, len(codes) - 60, size=200)
    rows.append(("shakespeare", marginal(lambda n: corpus.train(SHAKESPEARE_LP, offsets[:n], 49),
                                         20, 200, repeats) * 1e3, "ms/window"))
    inception = mnist_network("inception", device, seed=1)
    images = np.random.default_rng(2).uniform(size=(100, 28, 28))
    labels = np.eye(10)[np.random.default_rng(3).integers(0, 10, 100)]

    def mnist(n: int) -> None:
        train(inception, MLP_LP, images[:n], labels[:n], per_example=True, loss="cross_entropy")
        device.queue.finish()

    rows.append(("mnist (InceptionMini)", marginal(mnist, 10, 100, repeats) * 1e3,
                 "ms/example"))
    gan = Path(__file__).resolve().parent.parent / "examples" / "gan_mnist.py"
    if gan.exists():  # a source checkout
        import importlib.util

        spec = importlib.util.spec_from_file_location("gan_mnist", gan)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        d_seed, g_seed, noise = module.streams(1)
        discriminator, generator = module.networks(d_seed, g_seed, device)
        lp = LearningParameters(0.01, 0.9, 0.0005)
        exchange = module.Exchange(discriminator, generator)  # as the example runs batch 1
        on_device = device.to_device(np.random.default_rng(4).uniform(size=(1000, 28, 28)))
        noises = device.to_device(noise.uniform(-1, 1, size=(1000, 80)))
        verdicts = device.zeros((1000,))

        def gan_steps(n: int) -> None:
            exchange(on_device, noises, verdicts, 0, n, module.stronger(lp), lp)
            device.queue.finish()

        rows.append(("gan-mnist", marginal(gan_steps, 100, 1000, repeats) * 1e3, "ms/example"))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "grenade_py.recurrent", "-e", str(windows),
                    "--seed", "1"], check=True, capture_output=True)
    rows.append(("recurrent", time.perf_counter() - start, f"s, whole process, {windows:,} "
                                                             "windows"))
    return rows


def environment(device: Device, torch: object, data: str) -> list[str]:
    """What a table's figures were measured on: machine, device, driver, versions and the
    MNIST rows' data (`mnist_data`'s label: random data where no MNIST folder was found)."""
    import platform
    import sys

    import pyopencl

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text(
        ).splitlines() if line.startswith("model name")), platform.processor()) \
        if Path("/proc/cpuinfo").exists() else platform.processor()
    d = device.cl_device
    return [f"machine: {cpu}, {len(os.sched_getaffinity(0))} cores available",
            f"device: {device.name}; {d.platform.version.strip()}, driver "
            f"{d.driver_version.strip()}",
            f"versions: Python {sys.version.split()[0]}, numpy {np.__version__}, pyopencl "
            f"{pyopencl.VERSION_TEXT}, PyTorch "
            f"{getattr(torch, '__version__', 'not installed')}",
            f"data: {data}", f"date: {time.strftime('%Y-%m-%d')}"]


class Table:
    """The figures of a run, one row per measure: grenade_py, numpy, PyTorch (as text)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, what: str, rows: list[tuple[str, float]], form: str,
            ours: str = "grenade_py") -> None:
        """A row from a section's (name, value) pairs: ours (by name), numpy's, PyTorch's."""
        def find(prefix: str) -> str:
            return next((form.format(v) for name, v in rows if name.startswith(prefix)), "—")
        self.rows.append((what, find(ours), find("numpy"), find("pytorch")))

    def markdown(self, header: list[str]) -> str:
        lines = [f"- {line}" for line in header] + [
            "", "| | grenade_py | numpy | PyTorch (CPU) |", "| --- | --- | --- | --- |"]
        return "\n".join(lines + [f"| {' | '.join(row)} |" for row in self.rows])


@click.command()
@click.option("--data", "data_dir", default=None,
              help="MNIST folder  [default: ../shared/data/mnist if it exists]")
@click.option("--device", "device_spec", default=None, help="PLATFORM:DEVICE.")
@click.option("--examples", default=100_000, show_default=True, type=click.IntRange(min=1),
              help="Examples per per-example training run.")
@click.option("--epoch-examples", default=24_000, show_default=True,
              type=click.IntRange(min=1), help="Examples per MNIST epoch.")
@click.option("--windows", default=400, show_default=True, type=click.IntRange(min=1),
              help="Windows of 50 symbols per recurrent run (pytorch: 1/20 of them).")
@click.option("--repeats", default=5, show_default=True, type=click.IntRange(min=1),
              help="Timed runs per figure.")
@click.option("--gemm-only", is_flag=True, help="Only the GEMMs against the device's peak.")
@click.option("--recurrent-windows", default=40_000, show_default=True,
              type=click.IntRange(min=1),
              help="Windows of Grenade's recurrent example, timed as a whole process.")
@click.option("--markdown", is_flag=True,
              help="Print one Markdown table of the main figures (with the machine, device and "
                   "versions) instead of the sections.")
def main(data_dir: str | None, device_spec: str | None, examples: int, epoch_examples: int,
         windows: int, repeats: int, gemm_only: bool, recurrent_windows: int,
         markdown: bool) -> None:
    """Time grenade_py, numpy and PyTorch on the same work; print one table."""
    with user_errors():
        run_all(data_dir, device_spec, examples, epoch_examples, windows, repeats, gemm_only,
                recurrent_windows, markdown)


def run_all(data_dir: str | None, device_spec: str | None, examples: int, epoch_examples: int,
            windows: int, repeats: int, gemm_only: bool, recurrent_windows: int,
            markdown: bool) -> None:
    """`main`'s work (its options as arguments)."""
    device = Device(device_spec)
    (x, y), label = mnist_data(data_dir)  # a bad --data says so before anything is timed
    torch = _torch()
    table = Table()

    def say(text: str) -> None:
        if not markdown:
            click.echo(text)

    say(f"device: {device.name}")
    threads = f" ({torch.get_num_threads()} threads)" if torch else ""
    say(f"pytorch: {torch.__version__ if torch else 'not installed'}{threads}")
    if gemm_only:
        report_gemms(device, repeats)
        return

    say(f"\n1. feedforward 2-40-10-1, per-example training, {examples:,} examples "
        "(numpy, pytorch: 3,000)")
    ff = bench_feedforward(device, examples, repeats)
    table.add("feedforward 2-40-10-1, per-example training (µs/example)", ff, "{:.2f}")
    ours = ff[0][1]
    say(f"   {'':32s} {'us/example':>10s} {'x grenade_py':>13s}")
    for name, us in ff:
        say(f"   {name:32s} {us:10.3f} {us / ours:13.1f}")
    say("   (Grenade itself, native Haskell, ~10 us/example on this machine per the "
        "project's notes; not run here)")
    many = bench_many(device, examples, repeats)
    for name, us in many:
        say(f"   {name:32s} {us:10.3f}  per example per network "
            f"({many[0][1] / us:.2f}x the examples/s of one)")
    table.add(f"  {many[-1][0][12:]}, train_many (µs/example each)", many[-1:], "{:.2f}")

    data = (x[:epoch_examples], y[:epoch_examples])
    say(f"\n2. MNIST 784-512-10, one epoch of {len(data[0]):,} examples; {label}; grenade_py's "
        "and PyTorch's epochs taking turns, each with its dataset already on its device")
    say(f"   {'batch':>5s} {'':12s} {'s/epoch':>9s} {'x grenade_py':>13s} {'GFLOP/s':>8s}")
    by_round = []
    for batch in (32, 64, 128, 256):
        rows = bench_mnist(device, data, batch, repeats)
        table.add(f"MNIST 784-512-10 epoch of {len(data[0]):,}, batch {batch} (s)", rows,
                  "{:.3f}")
        if batch == 64:
            table.add("  the same under Adam (s)", [r for r in rows if "Adam" in r[0]], "{:.3f}",
                      "grenade_py, Adam")
        ours = rows[0][1]
        for name, seconds in rows:
            if name == "Adam / SGD, by round":
                table.rows.append(("  Adam's epoch / SGD's, median over the rounds",
                                   f"{seconds:.2f}", "—", "—"))
                say(f"   {batch:5d} grenade_py's Adam epoch / its SGD epoch in the same round: "
                    f"{seconds:.2f} (median of the rounds)")
                continue
            if name.endswith("by round"):
                by_round.append(f"{seconds:.2f}")
                say(f"   {batch:5d} grenade_py's epoch / PyTorch's in the same round: "
                    f"{seconds:.2f} (median of the rounds)")
                continue
            gflops = len(data[0]) * MLP_FLOPS_PER_EXAMPLE / seconds / 1e9
            say(f"   {batch:5d} {name:12s} {seconds:9.3f} {seconds / ours:13.2f} "
                f"{gflops:8.1f}")
    if by_round:
        table.rows.append(("  grenade_py's epoch / PyTorch's in the same round, batch 32, 64, "
                           "128, 256 (median of the rounds)", ", ".join(by_round), "—", "—"))
    one = bench_run_net(device, repeats)
    table.add("  its output for one sample, run_net (µs)", one, "{:.0f}")
    say("   one sample's output (run_net; PyTorch's forward, no_grad): " + ", ".join(
        f"{name} {us:.0f} us" for name, us in one))
    batch_out = [(name, us / 1e3) for name, us in bench_run_net(device, repeats, RUN_NET_ROWS)]
    table.add(f"  its output for {RUN_NET_ROWS:,} samples, run_net (ms)", batch_out, "{:.2f}")
    say(f"   {RUN_NET_ROWS:,} samples' output (run_net; PyTorch's forward, no_grad): "
        + ", ".join(f"{name} {ms:.2f} ms" for name, ms in batch_out))
    step = bench_one_example(device, repeats)
    table.add("  a training step on one example, train (µs)", step, "{:.0f}")
    say("   a training step on one example (train; PyTorch's forward, backward and update): "
        + ", ".join(f"{name} {us:.0f} us" for name, us in step))

    say(f"\n3. LeNet (Grenade's README network, Softmax head), one epoch of "
        f"{len(data[0]):,} examples at batch 64, float32")
    lenet = bench_lenet(device, data, max(1, repeats // 2))
    table.add("LeNet epoch, batch 64 (s)", lenet, "{:.3f}")
    for name, seconds in lenet:
        say(f"   {name:32s} {seconds:9.3f} s/epoch {seconds / lenet[0][1]:6.2f}x")
    convolutions = bench_convolutions(device, repeats)
    for name, value, unit in convolutions:
        say(f"   {name:42s} {value:9.1f} {unit}")
    conv_rate = next(v for name, v, _ in convolutions if name.startswith("  its convolutions"))
    table.add("  LeNet's convolutions in its step (GFLOP/s)", [("grenade_py", conv_rate)],
              "{:.0f}")
    planes = bench_small_planes(device, repeats)
    table.add("a convnet of 3x3 and 5x5 planes, training step at batch 64 (µs)", planes,
              "{:.0f}")
    say("   a convnet of planes under 16 positions (7x7x16 -> 5x5x32 -> 3x3x64), a training "
        "step at batch 64: " + ", ".join(f"{name} {us:.0f} us" for name, us in planes))
    inception = bench_inception(device, repeats)
    table.add("Grenade's mnist.hs network (Inception blocks), training step at batch 64 (µs)",
              inception, "{:.0f}")
    say("   the network of Grenade's mnist.hs, a training step at batch 64: " +
        ", ".join(f"{name} {us:.0f} us" for name, us in inception))

    gemms = report_gemms(device, repeats, say)
    gemm_rate = next(v for name, v in gemms if name.startswith(
        f"grenade_py forward {device.gemm} 64x784x512"))
    peak = dict(gemms)["grenade_py measured FMA peak"]
    kernels = [value / peak for name, value, unit in convolutions
               if unit == "GFLOP/s" and name.startswith("    ")]
    say(f"   LeNet's convolutions in its step: {conv_rate:.0f} GFLOP/s, "
        f"{conv_rate / gemm_rate:.0%} of the rate of gemm_dot at 64x784x512 in this run "
        f"({gemm_rate:.0f}), {conv_rate / peak:.0%} of the measured peak (their kernels alone, "
        f"untuned and tuned: {min(kernels):.0%}-{max(kernels):.0%})")
    for what, shape in [(f"{n}×784×512, y = x Wᵀ + b", f"{n}x784x512") for n in GEMM_BATCHES
                        ] + [("1024³", "1024^3")]:
        mine = [(n, v) for n, v in gemms if shape in n and "dW" not in n and "dy.T" not in n]
        table.add(f"GEMM {what} (GFLOP/s)", mine, "{:.0f}", f"grenade_py forward {device.gemm}")
        table.add("  the fastest block and work-group shape (GFLOP/s; python -m "
                  "grenade_py.tune)", [(n, v) for n, v in mine if n.startswith(
                      f"grenade_py forward {device.gemm}") and ", tuned (" in n], "{:.0f}")
    table.add("  the device's measured FMA peak (GFLOP/s)",
              [(n, v) for n, v in gemms if n.endswith("measured FMA peak")], "{:.0f}",
              "grenade_py measured")
    paired = [v for n, v in gemms if n.startswith(f"by round: grenade_py forward {device.gemm} ")]
    if paired:
        table.rows.append(("  grenade_py's rate / numpy's in the same round, 64×784×512, "
                           "128×784×512, 1024³ (median of the rounds)",
                           ", ".join(f"{v:.2f}" for v in paired), "—", "—"))

    say(f"\n5. Shakespeare LSTM 40-80-40-40, {windows:,} windows of 50 random symbols, "
        "float32")
    recurrent, limits = bench_recurrent(device, windows, repeats)
    table.add("Shakespeare LSTM, Grenade's semantics (chars/s)", recurrent, "{:,.0f}")
    table.add("  summed BPTT over 16 windows (chars/s)", recurrent, "{:,.0f}",
              "grenade_py, summed")
    ours = recurrent[0][1]
    say(f"   {'':36s} {'chars/s':>9s} {'/ pytorch':>10s}")
    torch_rate = recurrent[-1][1] if recurrent[-1][0].startswith("pytorch") else None
    for name, rate in recurrent:
        ratio = f"{rate / torch_rate:10.1f}" if torch_rate else ""
        say(f"   {name:36s} {rate:9.0f} {ratio}")
    say(f"   ({limits}; Grenade's semantics: {ours:.0f} chars/s)")

    say(f"\n6. MNIST's `bn` recipe (mnist --arch bn), {RECIPE_EPOCHS} epochs of "
        f"{len(data[0]):,} examples, training time to 99% test accuracy, float32")
    say(f"   {'':14s} {'s to 99%':>9s} {'best test acc':>14s} {'s, all epochs':>14s}")
    recipe = bench_recipe(device, data_dir, len(data[0]))
    table.add("the bn recipe, training time to 99% test accuracy (s)",
              [(name, to_99) for name, to_99, _, _ in recipe], "{:.1f}")
    for name, to_99, best, total in recipe:
        say(f"   {name:14s} {to_99:9.1f} {best:14.4f} {total:14.1f}")
    if not markdown:
        click.echo("\n7. Grenade's examples, per unit of work (a short and a long run "
                   "subtracted: start-up cancels), Grenade's semantics, float32; Haskell "
                   "Grenade's figures from issue 17")
        click.echo(f"   {'':24s} {'grenade_py':>11s} {'':30s} {'Grenade':>22s}")
        for name, value, unit in bench_grenade_examples(device, repeats, recurrent_windows):
            click.echo(f"   {name:24s} {value:11.3f} {unit:30s} "
                       f"{GRENADE[name.split()[0]]:>22s}")
    if markdown:
        click.echo(table.markdown(environment(device, torch, label)))
        return
    others = [f"{p}:{d}" for p, platform in enumerate(cl.get_platforms())
              for d, gpu in enumerate(platform.get_devices())
              if gpu.type & cl.device_type.GPU and gpu != device.cl_device]
    for spec in others:  # a smoke run on every GPU present
        report_gemms(Device(spec), 1)


def report_gemms(device: Device, repeats: int,
                 say: Callable[[str], None] = click.echo) -> list[tuple[str, float]]:
    """Section 4: the GEMMs and numpy's sgemm against the measured FMA peak; the rows, the
    measured peak among them. The peak is the faster of a measurement before the GEMMs and one
    after: a single one, taken while another process held a core, once came out at half
    (98 GFLOP/s against 197-203 in the runs beside it) and put the GEMMs at 160% "of peak"."""
    estimate, how = peak_gflops(device)
    before = measured_peak(device, repeats)
    rows = bench_gemm(device, repeats)
    peak = max(before, measured_peak(device, repeats))
    clocks = f"estimated from clocks: {estimate:.0f} = {how}" if estimate else \
        f"no estimate from clocks: {how}"
    say(f"\n4. GEMMs, float32, on {device.name}: measured FMA peak {peak:.0f} GFLOP/s "
        f"(chained vector FMAs, the faster of two measurements around the GEMMs; {clocks})")
    for name, gflops in rows:
        if not name.startswith("by round"):
            say(f"   {name:64s} {gflops:7.1f} GFLOP/s {gflops / peak:6.1%} of peak")
    say(f"   as launched, against numpy's sgemm on the same product (the median of the rounds' "
        f"ratios): {gemm_ratios(rows, device)}")
    return rows + [("grenade_py measured FMA peak", peak)]


def gemm_ratios(rows: list[tuple[str, float]], device: Device) -> str:
    """Each product's rate as the device's launches run it over numpy's sgemm: the median of
    the rounds' ratios (`interleaved`; bench_gemm's "by round" rows)."""
    ratios = []
    for what, ours in [
            (f"{n}x784x512 {what}", f"grenade_py {form} {device.gemm} {n}x784x512 ({mine}")
            for n in GEMM_BATCHES
            for what, form, mine in (("y = x W^T", "forward", "y"), ("dW", "gemm_outer", "dW"))
    ] + [("1024^3", f"grenade_py forward {device.gemm} 1024^3")]:
        paired = next((v for name, v in rows if name.startswith(f"by round: {ours}")), None)
        if paired is not None:
            ratios.append(f"{what} {paired:.2f}x")
    return ", ".join(ratios)


if __name__ == "__main__":
    main()
