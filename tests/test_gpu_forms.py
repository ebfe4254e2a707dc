"""The GPU forms of the training paths, run on the CPU device, against its CPU forms.

A Device told it is a GPU (`gpu`, with the tiled GEMMs, full-width vectors and sub-buffer
alignment a GPU gets) runs what only a GPU would otherwise run: the tiled GEMMs inside
networks, the GPU work-group shapes, the fused loops' many lanes (coalesced sums, the window
loop's lanes), a convolution's GPU path and the recurrent step kernels' GPU lanes. A GPU runs
them only where one is lent (.ci/gpu-check); here, on every machine, they must compute what the
CPU forms do, to float64 rounding. Oclgrind checks the same
forms for races (tests/oclgrind_workload.py); this checks their values.
"""
from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from conftest import ORDER_TOLERANCE, get_device

import grenade_py as g
from grenade_py import fused, gemm
from grenade_py.errors import GrenadeError

_gpu_forms: dict[str, g.Device] = {}


class GPUForm(g.Device):
    """A Device on the CPU that runs the GPU forms, its sub-buffers aligned to 4,096 bits as
    many GPUs' are (PoCL's: 1,024), so that every layout of parts of one buffer (a Step's io
    and arena, the flat buffers, the window loop's io) is laid out as there."""

    @property
    def alignment(self) -> int:
        return 4 * super().alignment


def device(gpu: bool, precision: str = "float64") -> g.Device:
    """The session's Device on the CPU (conftest's), or one of its own told it is a GPU."""
    if not gpu:
        return get_device(precision)
    if precision not in _gpu_forms:
        d = g.Device(precision=precision)
        d.__class__ = GPUForm
        d.gpu, d.narrow, d.gemm = True, False, "tiled"
        _gpu_forms[precision] = d
    return _gpu_forms[precision]


@pytest.fixture(params=["float64", "float32"])
def precision(request: pytest.FixtureRequest) -> str:
    """Both precisions: float32's GPU forms take vectors of 16 lanes, float64's of 8."""
    return str(request.param)


def both(run: Callable[[g.Device], list[np.ndarray]], precision: str = "float64") -> None:
    """`run` on the CPU form and on the GPU form: every array it returns equal to rounding
    (ORDER_TOLERANCE), and the run changing something (so that equal results are not two
    untrained networks)."""
    cpu, gpu = run(device(False, precision)), run(device(True, precision))
    assert len(cpu) == len(gpu)
    for a, b in zip(cpu, gpu, strict=True):
        np.testing.assert_allclose(b, a, **ORDER_TOLERANCE[precision])


def parameters(net: Any) -> np.ndarray:
    return np.concatenate([v.ravel() for layer in net.get_parameters() for v in layer.values()])


def data(rows: int, x: tuple[int, ...], classes: int, seed: int = 1
         ) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, *x)), np.eye(classes)[rng.integers(0, classes, rows)]


def trained(net: Any, start: np.ndarray, *outputs: np.ndarray) -> list[np.ndarray]:
    """The network's parameters (which must have moved from `start`) and `outputs`."""
    now = parameters(net)
    assert np.abs(now - start).max() > 1e-4
    return [now, *outputs]


def test_minibatches_of_a_network_with_batch_norm_and_dropout(precision):
    """AdamW in float64; SGD in float32, where AdamW turns the rounding of near-zero gradients
    into whole steps (both forms end 0.025 from float64's parameters; under SGD 2e-7)."""
    opt = g.AdamW(0.01, clip_norm=1.0) if precision == "float64" else g.SGD(0.05, clip_norm=1.0)

    def run(d: g.Device) -> list[np.ndarray]:
        net = g.Network([g.FullyConnected(7, 33), g.BatchNorm(33), g.Gelu(), g.Dropout(0.3),
                         g.FullyConnected(33, 3), g.Softmax()], input=g.D1(7), device=d, seed=1)
        start, (x, y) = parameters(net), data(37, (7,), 3)
        history = g.fit(net, opt, x, y, batch_size=8, epochs=2, loss="cross_entropy", seed=3,
                        schedule="cosine")
        scores = g.evaluate(net, x, y, loss="cross_entropy")
        return trained(net, start, g.run_net(net, x),
                       np.array([history[-1]["loss"], scores["loss"]]))

    both(run, precision)


@pytest.mark.parametrize("splits", [3, 17, 51])
def test_the_forward_in_parts_of_the_inputs(monkeypatch, splits, precision):
    """FullyConnected's forward on a GPU with k in parts (gemm.k_splits, forced: the 51 inputs
    in 3, 17 or 51 parts), in a fit and run_net, against the CPU form."""
    from grenade_py.layers import fully_connected

    def run(d: g.Device) -> list[np.ndarray]:
        if d.gpu:
            monkeypatch.setattr(fully_connected, "k_splits", lambda device, m, n, k: splits
                                if k == 51 and device.gpu and m > 1 else 1)
        net = g.Network([g.FullyConnected(51, 13), g.Tanh(), g.FullyConnected(13, 3)],
                        input=g.D1(51), device=d, seed=1)
        start, (x, y) = parameters(net), data(23, (51,), 3)
        g.fit(net, g.SGD(0.05), x, y, batch_size=9, epochs=2, seed=3)
        monkeypatch.undo()
        return trained(net, start, g.run_net(net, x))

    both(run, precision)


def test_the_parts_of_k_on_a_gpu(monkeypatch):
    """k_splits: MNIST's forward on a GPU of 132 compute units in parts of k that give each
    unit a 64 x 64 tile (64 x 512 x 784: 16 of 49; 128 rows: 14 of 56; 256: 7 of 112); where
    those fill it but 128 x 128 tiles do not, parts that give each one of those (1024^3: 4 of
    256, 1023 inputs: 3 of 341); none where either fills it (2048^2 x 1024), or k is under two
    parts of SPLIT_DEPTH or prime; CPUs and a GPU's register-blocked form none."""
    device = get_device("float32")
    monkeypatch.setattr(device, "gpu", False)
    assert gemm.k_splits(device, 64, 512, 784) == 1
    limits = type("Limits", (), {"max_compute_units": 132, "max_work_group_size": 1024,
                                 "local_mem_size": 49152})
    monkeypatch.setattr(device, "cl_device", limits)
    monkeypatch.setattr(device, "gpu", True)
    monkeypatch.setattr(device, "gemm", "registers")
    assert gemm.k_splits(device, 64, 512, 784) == 1
    monkeypatch.setattr(device, "gemm", "tiled")
    cases = {(64, 512, 784): 16, (128, 512, 784): 14, (256, 512, 784): 7, (64, 10, 512): 16,
             (1024, 1024, 1024): 4, (1024, 1024, 1023): 3, (2048, 2048, 1024): 1,
             (64, 512, 63): 1, (64, 512, 997): 1}
    assert {shape: gemm.k_splits(device, *shape) for shape in cases} == cases


def test_minibatches_and_examples_of_a_convolutional_network(precision):
    def run(d: g.Device) -> list[np.ndarray]:
        net = g.Network([g.Convolution(1, 3, 3, 3, 1, 1), g.Relu(), g.Pooling(2, 2, 2, 2),
                         g.Convolution(3, 2, 2, 2, 1, 1), g.Deconvolution(2, 2, 2, 2, 1, 1),
                         g.Reshape(), g.FullyConnected(24, 4), g.Logit()],
                        input=g.D2(10, 8), device=d, seed=1)
        start, (x, y) = parameters(net), data(21, (10, 8), 4)
        g.fit(net, g.SGD(0.05), x, y, batch_size=8, epochs=2, seed=3)
        g.train(net, g.Adam(0.01), x[:5], y[:5], per_example=True)
        return trained(net, start, g.run_net(net, x))

    both(run, precision)


def test_strided_col2im_in_blocks_of_8_columns(precision):
    """A GPU's conv_col2im, a work-item per 8 columns of a row's phase (rows of 19 at column
    stride 2: two blocks each), under a stride-2 Deconvolution's forward pass and a stride-2
    Convolution's input delta."""
    def run(d: g.Device) -> list[np.ndarray]:
        net = g.Network([g.Deconvolution(1, 2, 2, 3, 2, 2), g.Tanh(),
                         g.Convolution(2, 2, 2, 3, 2, 2), g.Reshape(), g.FullyConnected(54, 3),
                         g.Logit()], input=g.D2(3, 9), device=d, seed=1)
        start, (x, y) = parameters(net), data(12, (3, 9), 3)
        g.fit(net, g.SGD(0.05), x, y, batch_size=4, epochs=2, seed=3)
        return trained(net, start, g.run_net(net, x))

    both(run, precision)


@pytest.mark.parametrize("loss", ["squared_error", "cross_entropy"])
def test_the_fused_per_example_loop_with_branches(loss, precision):
    def run(d: g.Device) -> list[np.ndarray]:
        net = g.Network([g.FullyConnected(5, 40), g.Tanh(),
                         g.Concat(g.FullyConnected(40, 6), g.Merge(g.FullyConnected(40, 3),
                                                                   g.FullyConnected(40, 3))),
                         g.Relu(), g.FullyConnected(9, 3), g.Softmax()],
                        input=g.D1(5), device=d, seed=1)
        start, (x, y) = parameters(net), data(40, (5,), 3)
        g.train(net, g.LearningParameters(0.05, 0.9, 0.0005), x, y, per_example=True, loss=loss)
        g.fit(net, g.Adam(0.01), x, y, batch_size=1, epochs=1, loss=loss, seed=2)
        for k in range(20):  # one example a call
            g.train(net, g.SGD(0.05), x[k], y[k], loss=loss)
        return trained(net, start, g.run_net(net, x[0]))

    both(run, precision)


def test_a_layer_of_one_weight_in_the_fused_loops(precision):
    """FullyConnected(1, 1) trained per example and in the window loop: the lanes' loop over
    its one weight (PoCL 3.1 ran the per-example loop's, `for (size_t at = lid; at < 1; at +=
    nl)` after a barrier, on no lane of a work-group of 16 or more; 6.0 and 7.1 on lane 0)."""
    def run(d: g.Device) -> list[np.ndarray]:
        net = g.Network([g.FullyConnected(1, 1), g.Tanh(), g.FullyConnected(1, 2)],
                        input=g.D1(1), device=d, seed=1)
        start, (x, y) = parameters(net), data(20, (1,), 2)
        g.train(net, g.SGD(0.05), x, y, per_example=True)
        recurrent = g.RecurrentNetwork([g.LSTM(1, 2), g.FullyConnected(2, 1),
                                        g.FullyConnected(1, 1)], input=g.D1(1), device=d, seed=1)
        begin, rng = parameters(recurrent), np.random.default_rng(3)
        g.train_sequences(recurrent, g.SGD(0.05), rng.normal(size=(3, 5, 1)),
                          rng.normal(size=(3, 5, 1)))
        return trained(net, start, g.run_net(net, x)) + trained(recurrent, begin)

    both(run, precision)


def test_grenade_passes_by_hand_on_device_arrays(precision):
    """run_network and run_gradient on device arrays and apply_update (the GAN example's
    layer-by-layer exchange), and back_propagate."""
    def run(d: g.Device) -> list[np.ndarray]:
        net = g.Network([g.FullyConnected(6, 20), g.Relu(), g.FullyConnected(20, 4), g.Logit()],
                        input=g.D1(6), device=d, seed=1)
        start, (x, y) = parameters(net), data(9, (6,), 4)
        xs = d.to_device(x)
        deltas = []
        for k in range(3):
            tapes, out = g.run_network(net, xs[3 * k:3 * k + 3])
            gradients, dx = g.run_gradient(net, tapes, out - d.to_device(y[3 * k:3 * k + 3]))
            g.apply_update(net, g.SGD(0.5), gradients)
            deltas.append(dx.get())
        g.back_propagate(net, x, y)
        g.apply_update(net, g.Adam(0.01))
        return trained(net, start, *deltas)

    both(run, precision)


def test_many_networks_in_one_launch(precision):
    def run(d: g.Device) -> list[np.ndarray]:
        nets = [g.Network([g.FullyConnected(4, 9), g.Relu(), g.FullyConnected(9, 2)],
                          input=g.D1(4), device=d, seed=s) for s in (1, 2, 3)]
        start, (x, y) = [parameters(n) for n in nets], data(30, (4,), 2)
        g.train_many(nets, g.Adam(0.01), x, y)
        return [out for n, s in zip(nets, start, strict=True) for out in trained(n, s)]

    both(run, precision)


# LSTM 3 -> 1 and 3 -> 5: fewer units than the window loop's lanes (PoCL miscompiled that
# form, see LSTM.window_form); 3 -> 43 (with ConcatRecurrent) trains layer by layer.
RECURRENT: list[Callable[[], list[Any]]] = [
    lambda: [g.LSTM(3, 1), g.FullyConnected(1, 3), g.Logit()],
    lambda: [g.LSTM(3, 5), g.BasicRecurrent(5, 4), g.FullyConnected(4, 3), g.Softmax()],
    lambda: [g.LSTM(3, 43), g.ConcatRecurrent(g.BasicRecurrent(43, 2), g.FullyConnected(43, 1)),
             g.FullyConnected(3, 3), g.Softmax()],
]


@pytest.mark.parametrize("layers", RECURRENT, ids=["lstm1", "lstm5", "lstm43"])
@pytest.mark.parametrize("opt", [g.LearningParameters(0.05, 0.9, 0.0005), g.Adam(0.01),
                                 g.SGD(0.05, clip_norm=0.1)], ids=["sgd", "adam", "clipped"])
def test_sequences(layers, opt, precision):
    def run(d: g.Device) -> list[np.ndarray]:
        net = g.RecurrentNetwork(layers(), input=g.D1(3), device=d, seed=1)
        loss = "cross_entropy" if isinstance(net.layers[-1], g.Softmax) else "squared_error"
        rng = np.random.default_rng(2)
        x, mask = rng.normal(size=(4, 9, 3)), rng.uniform(size=(4, 9)) < 0.6
        t = np.eye(3)[rng.integers(0, 3, (4, 9))]
        start = parameters(net)
        for kwargs in ({}, {"summed": True}, {"lengths": np.array([5, 9, 7, 3])}):
            g.train_sequences(net, opt, x, t, mask, loss=loss, **kwargs)  # type: ignore[arg-type]
        g.SymbolCorpus(net, rng.integers(0, 3, 40)).train(opt, np.array([0, 11, 23]), 6,
                                                          loss=loss)
        return trained(net, start, g.run_recurrent(net, x[0])[0])

    both(run, precision)


def test_what_a_gpu_takes_of_a_loops_arguments():
    """At most 255 arguments (OpenCL 3.0), of at most max_parameter_size bytes: pointers of
    address_bits, REALs of the precision, ints of 4 bytes. PoCL's CPU device is not checked;
    another platform's CPU device is."""
    def fits(gpu: bool, declared: list[str], dtype: type = np.float32,
             platform: str = "NVIDIA CUDA") -> bool:
        stub = SimpleNamespace(gpu=gpu, dtype=dtype, cl_device=SimpleNamespace(
            address_bits=64, max_parameter_size=1024, platform=SimpleNamespace(name=platform)))
        return fused.arguments_fit(stub, f"kernel void k({', '.join(declared)}) {{}}", "k")

    pointers = [f"global REAL *restrict p{i}" for i in range(126)]
    assert fits(True, pointers + ["int a", "REAL b", "REAL c"])  # 1008 + 4 + 8 bytes
    assert not fits(True, pointers + ["int a", "REAL b", "REAL c"], np.float64)  # 1028
    assert not fits(True, pointers + ["global const REAL *q", "int a", "int b", "int c"])  # 1028
    assert not fits(True, ["int a"] * 256)  # 1024 bytes, 256 arguments
    assert fits(False, pointers * 3, platform="Portable Computing Language")
    assert not fits(False, pointers * 3, platform="Intel(R) OpenCL")


def test_loops_whose_arguments_a_gpu_refuses_run_layer_by_layer(monkeypatch):
    """Where a GPU would refuse a loop's kernel, per-example training and the window loop
    train layer by layer instead, with the same results, and train_many says why it cannot."""
    def run(d: g.Device) -> list[np.ndarray]:
        net = g.Network([g.FullyConnected(5, 8), g.Tanh(), g.FullyConnected(8, 3)],
                        input=g.D1(5), device=d, seed=1)
        x, y = data(20, (5,), 3)
        g.train(net, g.Adam(0.01), x, y, per_example=True)
        rnn = g.RecurrentNetwork(RECURRENT[0](), input=g.D1(3), device=d, seed=1)
        rng = np.random.default_rng(2)
        g.train_sequences(rnn, g.SGD(0.05), rng.normal(size=(3, 5, 3)),
                          rng.uniform(size=(3, 5, 3)))
        return [parameters(net), parameters(rnn)]

    d = device(True)
    loops = run(d)
    monkeypatch.setattr(fused, "MAX_ARGUMENTS", 20)
    nets = [g.Network([g.FullyConnected(5, 8), g.Tanh(), g.FullyConnected(8, 3)],
                      input=g.D1(5), device=d, seed=s) for s in (1, 2)]
    assert fused.fused_trainer(nets[0]) is None
    for a, b in zip(loops, run(d), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-8, atol=1e-10)
    with pytest.raises(GrenadeError, match="more arguments than"):
        g.train_many(nets, g.SGD(0.01), *data(4, (5,), 3))
