"""Recurrent networks: Grenade's LSTM and BasicRecurrent, run and trained over sequences, against
a step-by-step numpy transcription of Grenade's recurrent runner, finite differences, and a
hand-written float64 torch transcription of Grenade's cell."""
from __future__ import annotations

import contextlib
import json

import numpy as np
import pyopencl as cl
import pytest
from click.testing import CliRunner
from conftest import get_device, numeric_gradients, tolerance

import grenade_py as g
from grenade_py import windows
from grenade_py.device import streaming_size
from grenade_py.errors import ModelFileError, ShapeError
from grenade_py.network_file import read_metadata
from grenade_py.numpy_recurrent import NumpyRecurrent, decays, is_state, state_deltas
from grenade_py.recurrent import is_cycle
from grenade_py.recurrent import main as recurrent_main
from grenade_py.recurrent_runner import SymbolCorpus

LP = g.LearningParameters(0.05, 0.9, 0.01)


def nets(device: g.Device, i: int, o: int, seed: int = 3) -> list[g.RecurrentNetwork]:
    """Recurrent networks D1 i -> D1 ..., covering each layer kind and their mixtures."""
    return [
        g.RecurrentNetwork([g.LSTM(i, o)], input=g.D1(i), device=device, seed=seed,
                           init="grenade"),
        g.RecurrentNetwork([g.BasicRecurrent(i, o), g.Tanh()], input=g.D1(i), device=device,
                           seed=seed),
        g.RecurrentNetwork([g.LSTM(i, o), g.LSTM(o, 3), g.FullyConnected(3, 2), g.Logit()],
                           input=g.D1(i), device=device, seed=seed),
        g.RecurrentNetwork([g.FullyConnected(i, o), g.Relu(), g.BasicRecurrent(o, 2),
                            g.LSTM(2, o)], input=g.D1(i), device=device, seed=seed),
        # Grenade's ConcatRecurrent in its three forms (Left, Right, Both), and nested.
        g.RecurrentNetwork([g.ConcatRecurrent(g.LSTM(i, o), g.FullyConnected(i, 2)),
                            g.FullyConnected(o + 2, 3)], input=g.D1(i), device=device, seed=seed),
        g.RecurrentNetwork([g.ConcatRecurrent([g.FullyConnected(i, 3), g.Tanh()],
                                              g.BasicRecurrent(i, o)), g.Logit()],
                           input=g.D1(i), device=device, seed=seed),
        g.RecurrentNetwork([g.FullyConnected(i, 4), g.ConcatRecurrent(
            g.ConcatRecurrent(g.BasicRecurrent(4, 2), g.Tanh()), g.LSTM(4, o)),
            g.LSTM(o + 6, 2)], input=g.D1(i), device=device, seed=seed),
    ]


def with_states(net: g.RecurrentNetwork, rng: np.random.Generator) -> None:
    """Give every recurrent layer a nonzero starting state."""
    params = net.get_parameters()
    for p in params:
        for name in p:
            if is_state(name):
                p[name] = rng.normal(size=p[name].shape)
    net.set_parameters(params)


def sequence(net: g.RecurrentNetwork, steps: int, rng: np.random.Generator,
             every: int = 3) -> tuple[np.ndarray, list[np.ndarray | None]]:
    xs = rng.normal(size=(steps, *net.input_shape.dims))
    targets: list[np.ndarray | None] = [
        rng.uniform(size=net.output_shape.dims) if (t % every == 0 or t == steps - 1) else None
        for t in range(steps)]
    return xs, targets


def assert_same(net: g.RecurrentNetwork, ref: NumpyRecurrent, **tol: float) -> None:
    for role, got, want in (("parameters", net.get_parameters(), ref.parameters),
                            ("momentum", net.get_momentum(), ref.momentum)):
        for index, (a, b) in enumerate(zip(got, want, strict=True)):
            for name in a:
                if role == "momentum" and is_state(name):
                    continue  # starting states descend without momentum
                np.testing.assert_allclose(a[name], b[name], err_msg=f"{role} {index} {name}",
                                           **tol)


@pytest.mark.parametrize(("i", "o"), [(1, 1), (3, 17), (17, 3)])
def test_run_matches_grenade_transcription(device: g.Device, i: int, o: int) -> None:
    rng = np.random.default_rng(i * 100 + o)
    for net in nets(device, i, o):
        with_states(net, rng)
        ref = NumpyRecurrent([layer.spec() for layer in net.layers], net.get_parameters())
        xs = rng.normal(size=(7, i))
        ys, _ = g.run_recurrent(net, xs)
        np.testing.assert_allclose(ys, ref.run(xs), **tolerance(device, 4 * o))


@pytest.mark.parametrize("steps", [1, 2, 7])
def test_ordered_updates_match_grenade_transcription(device64: g.Device, steps: int) -> None:
    """trainRecurrent: per-step gradients from the weights before the sequence, applied one at
    a time in time order as full momentum + L2 steps; the starting states by plain descent."""
    rng = np.random.default_rng(steps)
    for net in nets(device64, 3, 5):
        with_states(net, rng)
        ref = NumpyRecurrent([layer.spec() for layer in net.layers], net.get_parameters())
        for _ in range(3):  # momentum carries across sequences
            xs, targets = sequence(net, steps, rng)
            g.train_recurrent(net, LP, list(zip(xs, targets, strict=True)))
            ref.train(xs, targets, LP)
        assert_same(net, ref, rtol=1e-10, atol=1e-12)


def test_ordered_updates_differ_from_one_summed_step(device64: g.Device) -> None:
    """The ordered default is not ordinary BPTT: over 7 steps the two end apart."""
    rng = np.random.default_rng(5)
    net = nets(device64, 3, 5)[0]
    xs, targets = sequence(net, 7, rng, every=1)
    summed = NumpyRecurrent([layer.spec() for layer in net.layers], net.get_parameters())
    summed.train(xs, targets, LP, summed=True)
    g.train_recurrent(net, LP, list(zip(xs, targets, strict=True)))
    gap = np.abs(net.get_parameters()[0]["w"] - summed.parameters[0]["w"]).max()
    assert gap > 1e-3


def test_summed_batches_match_transcription(device: g.Device) -> None:
    """train_sequences(summed=True): B sequences together, one step from the per-step gradients
    summed over steps and averaged over sequences."""
    rng = np.random.default_rng(9)
    batch, steps = 3, 5
    for net in nets(device, 4, 6):
        with_states(net, rng)
        ref = NumpyRecurrent([layer.spec() for layer in net.layers], net.get_parameters())
        xs = rng.normal(size=(batch, steps, 4))
        ts = rng.uniform(size=(batch, steps, *net.output_shape.dims))
        mask = rng.uniform(size=(batch, steps)) < 0.5
        g.train_sequences(net, LP, xs, ts, mask, summed=True)
        grads, sides = zip(*(ref.gradients(xs[s], [ts[s, t] if mask[s, t] else None
                                                   for t in range(steps)])
                             for s in range(batch)), strict=True)
        for k, (spec, p, m) in enumerate(zip(ref.specs, ref.parameters, ref.momentum,
                                             strict=True)):
            for sequence_sides in zip(*(state_deltas(spec, side[k]) for side in sides),
                                      strict=True):
                name = sequence_sides[0][0]
                delta = sum(d for _, d in sequence_sides) / batch
                p[name] = (1 - LP.rate * LP.l2) * p[name] - LP.rate * delta
            for name in p:
                if is_state(name):
                    continue
                total = sum(per[t][k][name] for per in grads for t in range(steps)) / batch
                step = LP if decays(spec, name) else \
                    g.LearningParameters(LP.rate, LP.momentum, 0.0)
                m2 = step.momentum * m[name] - step.rate * total
                p[name], m[name] = p[name] + m2 - step.rate * step.l2 * p[name], m2
        assert_same(net, ref, **tolerance(device, 64))


def test_many_sequences_train_in_order(device64: g.Device) -> None:
    """train_sequences without summed: Grenade's trainRecurrent sequence after sequence."""
    rng = np.random.default_rng(11)
    a, b = nets(device64, 2, 3, seed=4)[2], nets(device64, 2, 3, seed=4)[2]
    xs = rng.normal(size=(4, 6, 2))
    ts = rng.uniform(size=(4, 6, 2))
    mask = rng.uniform(size=(4, 6)) < 0.5
    g.train_sequences(a, LP, xs, ts, mask)
    for s in range(4):
        g.train_recurrent(b, LP, [(xs[s, t], ts[s, t] if mask[s, t] else None)
                                  for t in range(6)])
    for pa, pb in zip(a.get_parameters(), b.get_parameters(), strict=True):
        for name in pa:
            np.testing.assert_array_equal(pa[name], pb[name])


# Every test network under SGD; Adam and AdamW (each a build of its own) on the one that has
# every layer kind with a window form.
@pytest.mark.parametrize(("learning", "which"), [
    (LP, range(7)), (g.Adam(0.01), [3]), (g.AdamW(0.01, weight_decay=0.1), [3])])
def test_window_loop_trains_as_layer_by_layer(device64: g.Device, learning: g.Optimizer,
                                              which: range | list[int],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The fused window loop (grenade_py.windows), chosen for small networks whose layers all
    have a window form, trains sequences of many lengths as the layer-by-layer Steps do, to
    rounding, step counts included; networks with ConcatRecurrent keep the layer-by-layer
    form."""
    rng = np.random.default_rng(12)
    batch, steps = 5, 7
    xs = rng.normal(size=(batch, steps, 3))
    mask = rng.uniform(size=(batch, steps)) < 0.4
    lengths = np.array([7, 1, 4, 6, 2])
    default = windows.WINDOW_PARAMETERS
    for index, (fused, layered) in enumerate(zip(nets(device64, 3, 5), nets(device64, 3, 5),
                                                 strict=True)):
        if index not in which:
            continue
        ts = rng.uniform(size=(batch, steps, *fused.output_shape.dims))
        for net, limit in ((fused, default), (layered, 0)):
            monkeypatch.setattr(windows, "WINDOW_PARAMETERS", limit)
            with_states(net, np.random.default_rng(index))
            for _ in range(2):
                g.train_sequences(net, learning, xs, ts, mask, lengths=lengths)
        key = ("windows", learning.kind, "squared_error")
        assert (fused.held[key] is not None) == (index < 4), fused  # not ConcatRecurrent
        assert layered.held[key] is None
        assert (fused.steps, fused.state_steps) == (layered.steps, layered.state_steps) == (
            2 * lengths.sum(), 2 * batch)
        for role in ("get_parameters", "get_momentum", "get_second"):
            for a, b in zip(getattr(fused, role)(), getattr(layered, role)(), strict=True):
                for name in a:
                    np.testing.assert_allclose(a[name], b[name], rtol=1e-12, atol=1e-14,
                                               err_msg=f"{index} {role} {name}")


@pytest.mark.parametrize("loss", ["cross_entropy", "squared_error"])
def test_window_loop_trains_softmax_as_layer_by_layer(
        device64: g.Device, monkeypatch: pytest.MonkeyPatch, loss: str) -> None:
    """A small network ending in Softmax trains in the window loop as layer by layer, to
    rounding: under cross entropy (p - t at the logits, the Softmax's backward pass skipped)
    and under squared error (through it)."""
    rng = np.random.default_rng(14)
    xs = rng.normal(size=(4, 6, 3))
    ts = np.eye(4)[rng.integers(0, 4, (4, 6))]
    mask = rng.uniform(size=(4, 6)) < 0.5
    trained = []
    for limit in (windows.WINDOW_PARAMETERS, 0):
        monkeypatch.setattr(windows, "WINDOW_PARAMETERS", limit)
        net = g.RecurrentNetwork([g.LSTM(3, 5), g.FullyConnected(5, 4), g.Softmax()],
                                 input=g.D1(3), device=device64, seed=5)
        g.train_sequences(net, LP, xs, ts, mask, loss=loss, lengths=np.array([6, 3, 1, 5]))
        assert (net.held[("windows", LP.kind, loss)] is None) == (limit == 0)
        trained.append(net.get_parameters())
    for a, b in zip(*trained, strict=True):
        for name in a:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-12, atol=1e-14)


def test_window_loop_with_many_lanes(device64: g.Device, monkeypatch: pytest.MonkeyPatch
                                     ) -> None:
    """The window loop's GPU form (its loops shared by lanes, barriers between the phases), run
    on PoCL: each value is still computed by one lane from the same functions, so the results
    are the one-lane loop's exactly. Three lanes: more than some layers' rows (the LSTM's 2),
    fewer than others' (4), splitting neither evenly (each lane count costs PoCL a compile of
    ~12 s)."""
    lanes = 3
    rng = np.random.default_rng(16)
    xs, ts = rng.normal(size=(3, 5, 3)), rng.uniform(size=(3, 5, 2))
    mask = rng.uniform(size=(3, 5)) < 0.6
    trained = []
    for count in (1, lanes):
        monkeypatch.setattr("grenade_py.fused.lanes", lambda device, count=count: count)
        net = g.RecurrentNetwork([g.FullyConnected(3, 4), g.Tanh(), g.BasicRecurrent(4, 3),
                                  g.LSTM(3, 2)], input=g.D1(3), device=device64, seed=6)
        g.train_sequences(net, g.Adam(0.01), xs, ts, mask, lengths=np.array([5, 2, 4]))
        assert net.held[("windows", 1, "squared_error")].launch.local_size == (count,)
        trained.append(net.get_parameters())
    for a, b in zip(*trained, strict=True):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])


def test_lengths_train_each_sequence_on_its_steps(device64: g.Device,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Sequence b of train_sequences(..., lengths) is its first lengths[b] steps: the same as
    training each shortened sequence alone, whatever the rest of its row holds; bad lengths
    are refused."""
    monkeypatch.setattr(windows, "WINDOW_PARAMETERS", 0)  # the window loop: the test above
    rng = np.random.default_rng(13)
    a, b = nets(device64, 2, 3, seed=4)[1], nets(device64, 2, 3, seed=4)[1]
    xs, ts = rng.normal(size=(3, 6, 2)), rng.uniform(size=(3, 6, 3))
    mask = rng.uniform(size=(3, 6)) < 0.6
    lengths = np.array([2, 6, 3])
    g.train_sequences(a, LP, xs, ts, mask, lengths=lengths)
    for s, n in enumerate(lengths):
        g.train_sequences(b, LP, xs[s:s + 1, :n], ts[s:s + 1, :n], mask[s:s + 1, :n])
    for pa, pb in zip(a.get_parameters(), b.get_parameters(), strict=True):
        for name in pa:
            np.testing.assert_array_equal(pa[name], pb[name])
    for bad in ([2, 7, 3], [0, 1, 1], [1.5, 2, 2], [1, 2]):
        with pytest.raises(ValueError, match="lengths must be 3 ints in"):
            g.train_sequences(a, LP, xs, ts, mask, lengths=np.array(bad))
    with pytest.raises(ValueError, match="summed=False"):
        g.train_sequences(a, LP, xs, ts, mask, summed=True, lengths=lengths)


def half_squared_error(net: g.RecurrentNetwork, xs: np.ndarray,
                       targets: list[np.ndarray | None]) -> float:
    ys, _ = g.run_recurrent(net, xs)
    return sum(0.5 * float(np.sum((y - t) ** 2)) for y, t in zip(ys, targets, strict=True)
               if t is not None)


def device_gradients(net: g.RecurrentNetwork, xs: np.ndarray, targets: list[np.ndarray | None],
                     loss: str = "squared_error") -> list[dict[str, np.ndarray]]:
    """The summed BPTT gradient the device computes: one summed step at rate 1 without
    momentum or L2 moves every parameter by minus its gradient."""
    before = net.get_parameters()
    mask = np.array([t is not None for t in targets])
    ts = np.array([np.zeros(net.output_shape.dims) if t is None else t for t in targets])
    g.train_sequences(net, g.LearningParameters(1.0, 0.0, 0.0), xs[None], ts[None], mask[None],
                      summed=True, loss=loss)
    after = net.get_parameters()
    net.set_parameters(before)
    net.set_momentum([{k: np.zeros_like(v) for k, v in p.items()} for p in before])
    return [{k: b[k] - a[k] for k in b} for b, a in zip(before, after, strict=True)]


def test_backward_matches_finite_differences(device64: g.Device) -> None:
    rng = np.random.default_rng(21)
    for net in nets(device64, 2, 3):
        with_states(net, rng)
        xs, targets = sequence(net, 5, rng, every=2)
        got = device_gradients(net, xs, targets)
        want = numeric_gradients(
            net, lambda n, xs=xs, targets=targets: half_squared_error(n, xs, targets))
        for index, (a, b) in enumerate(zip(got, want, strict=True)):
            for name in a:
                np.testing.assert_allclose(a[name], b[name], rtol=1e-6, atol=1e-8,
                                           err_msg=f"layer {index} {name}")


def check_against_torch(net: g.RecurrentNetwork, xs: np.ndarray,
                        targets: list[np.ndarray | None], step) -> None:
    """Outputs, final state and every gradient of the one-layer `net` against `step(p, state,
    x) -> (state, output)`, the layer's maths in float64 torch with autograd, run over xs with
    the half squared error at the targets."""
    torch = pytest.importorskip("torch", reason="PyTorch is the oracle here "
                                                "(pip install '.[test]')")
    p = {k: torch.tensor(v, requires_grad=True) for k, v in net.get_parameters()[0].items()}
    state, loss, outputs = p["state"], torch.zeros((), dtype=torch.float64), []
    for x, target in zip(torch.tensor(xs), targets, strict=True):
        state, y = step(torch, p, state, x)
        outputs.append(y)
        if target is not None:
            loss = loss + 0.5 * ((y - torch.tensor(target)) ** 2).sum()
    loss.backward()
    ys, after = g.run_recurrent(net, xs)
    np.testing.assert_allclose(ys, torch.stack(outputs).detach().numpy(), rtol=1e-12,
                               atol=1e-14)
    np.testing.assert_allclose(after.get()[0][0], state.detach().numpy(), rtol=1e-12)
    got = device_gradients(net, xs, targets)[0]
    for name, tensor in p.items():
        assert tensor.grad is not None
        np.testing.assert_allclose(got[name], tensor.grad.numpy(), rtol=1e-10, atol=1e-13,
                                   err_msg=name)


@pytest.mark.parametrize("o", [6, 45])
def test_lstm_matches_torch_transcription_of_grenade_cell(device64: g.Device, o: int) -> None:
    """LSTM 4 o over 9 steps against Grenade's cell written in torch (torch's nn.LSTM is
    another cell). 45 units: the step kernels' vectors of 8 four to a lane, a lane with fewer,
    and units past the last whole vector (6: those alone)."""
    rng = np.random.default_rng(8)
    net = g.RecurrentNetwork([g.LSTM(4, o)], input=g.D1(4), device=device64, seed=1,
                             init="grenade")
    with_states(net, rng)
    xs, targets = sequence(net, 9, rng, every=2)

    def cell(torch, p, c, x):
        z = p["b"] + p["w"].T @ x  # stored transposed
        r = p["u"].T @ c
        f, i = torch.sigmoid(z[:o] + r[:o]), torch.sigmoid(z[o:2 * o] + r[o:2 * o])
        og, gate = torch.sigmoid(z[2 * o:3 * o] + r[2 * o:]), torch.tanh(z[3 * o:])
        c = f * c + i * gate
        return c, og * c

    check_against_torch(net, xs, targets, cell)


def test_basic_recurrent_matches_torch_transcription(device64: g.Device) -> None:
    """BasicRecurrent 3 5 over 8 steps against y = b + W [x; y-] in torch."""
    rng = np.random.default_rng(12)
    net = g.RecurrentNetwork([g.BasicRecurrent(3, 5)], input=g.D1(3), device=device64, seed=1,
                             init="grenade")
    with_states(net, rng)
    xs, targets = sequence(net, 8, rng, every=3)

    def step(torch, p, y, x):
        y = p["b"] + p["w"] @ torch.cat([x, y])
        return y, y

    check_against_torch(net, xs, targets, step)


def test_lstm_initialisation_is_grenades(device64: g.Device) -> None:
    net = g.RecurrentNetwork([g.LSTM(5, 7)], input=g.D1(5), device=device64, seed=1,
                             init="grenade")
    p = net.get_parameters()[0]
    assert {k: v.shape for k, v in p.items()} == {"w": (5, 28), "u": (7, 21), "b": (28,),
                                                   "state": (7,)}
    assert sum(v.size for k, v in p.items() if k != "state") == 4 * 7 * 5 + 3 * 49 + 4 * 7
    np.testing.assert_array_equal(p["b"][:7], 1.0)  # forget gates open
    np.testing.assert_array_equal(p["state"], 0.0)
    for name in ("w", "u"):
        assert np.abs(p[name]).max() <= 1 and np.abs(p[name]).max() > 0.9


@pytest.mark.parametrize("index", [2, 6])  # 6: cells in (nested) ConcatRecurrent branches
def test_state_carries_across_runs(device: g.Device, index: int) -> None:
    rng = np.random.default_rng(3)
    net = nets(device, 3, 4)[index]
    assert len(net.recurrent_layers()) == {2: 2, 6: 3}[index]
    xs = rng.normal(size=(2, 8, 3))  # two sequences at once
    whole, end = g.run_recurrent(net, xs)
    first, middle = g.run_recurrent(net, xs[:, :5])
    second, end2 = g.run_recurrent(net, xs[:, 5:], middle)
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), whole,
                               **tolerance(device, 16))
    for a, b in zip(end.get(), end2.get(), strict=True):
        np.testing.assert_allclose(a, b, **tolerance(device, 16))
    with pytest.raises(ValueError, match="state holds"):
        g.run_recurrent(net, xs[:1], middle)


def test_symbol_corpus_trains_as_host_sequences(device64: g.Device,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows made on the device train exactly as the same windows passed as arrays, both
    layer by layer (test_symbol_corpus_trains_in_the_window_loop: both in the loop)."""
    monkeypatch.setattr(windows, "WINDOW_PARAMETERS", 0)
    rng = np.random.default_rng(4)
    codes = rng.integers(0, 5, size=200)
    a = g.RecurrentNetwork([g.LSTM(5, 4), g.FullyConnected(4, 5), g.Logit()], input=g.D1(5),
                           device=device64, seed=2)
    b = g.RecurrentNetwork([g.LSTM(5, 4), g.FullyConnected(4, 5), g.Logit()], input=g.D1(5),
                           device=device64, seed=2)
    offsets = rng.integers(0, 180, size=6)
    for every in (False, True):
        metrics = SymbolCorpus(a, codes).train(LP, offsets, 9, every=every)
        eye = np.eye(5)
        xs = np.stack([eye[codes[o:o + 9]] for o in offsets])
        ts = np.stack([eye[codes[o + 1:o + 10]] for o in offsets])
        mask = np.ones((6, 9), bool) if every else np.arange(9)[None].repeat(6, 0) == 8
        g.train_sequences(b, LP, xs, ts, mask)
        assert metrics.steps == mask.sum()
        for pa, pb in zip(a.get_parameters(), b.get_parameters(), strict=True):
            for name in pa:
                np.testing.assert_array_equal(pa[name], pb[name])


@pytest.mark.parametrize("every", [False, True])
def test_symbol_corpus_trains_in_the_window_loop(device64: g.Device, every: bool,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A small network's windows train in the fused window loop, chunk by chunk (a last
    partial chunk included), as the same windows passed to train_sequences, and measure what
    the layer-by-layer Steps measure, to rounding."""
    monkeypatch.setattr(windows, "WINDOW_CHUNK", 4)
    rng = np.random.default_rng(15)
    codes = rng.integers(0, 5, size=200)
    offsets = rng.integers(0, 180, size=10)
    eye = np.eye(5)
    xs = np.stack([eye[codes[o:o + 9]] for o in offsets])
    ts = np.stack([eye[codes[o + 1:o + 10]] for o in offsets])
    mask = np.ones((10, 9), bool) if every else np.arange(9)[None].repeat(10, 0) == 8
    nets = [g.RecurrentNetwork([g.LSTM(5, 4), g.FullyConnected(4, 5), g.Logit()],
                               input=g.D1(5), device=device64, seed=2) for _ in range(3)]
    fused = SymbolCorpus(nets[0], codes).train(LP, offsets, 9, every=every)
    g.train_sequences(nets[1], LP, xs, ts, mask)
    monkeypatch.setattr(windows, "WINDOW_PARAMETERS", 0)
    layered = SymbolCorpus(nets[2], codes).train(LP, offsets, 9, every=every)
    assert nets[0].held[("windows", LP.kind, "squared_error")] is not None
    assert nets[2].held[("windows", LP.kind, "squared_error")] is None
    np.testing.assert_allclose([fused.loss, fused.correct, fused.steps],
                               [layered.loss, layered.correct, layered.steps], rtol=1e-12)
    assert fused.steps == mask.sum()
    for a, b, c in zip(*(net.get_parameters() for net in nets), strict=True):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])
            np.testing.assert_allclose(a[name], c[name], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("batch", [1, 8])
def test_symbol_corpus_learns_beyond_symbol_frequencies(device: g.Device, batch: int) -> None:
    """A text of four words in random order, so that most next symbols follow from the ones
    before: after training (Grenade's ordered updates, or summed BPTT over 8 windows), the
    network names the next symbol far more often than naming the most frequent one would."""
    rng = np.random.default_rng(6)
    words = ["abcd", "efg", "hij", "kl"]
    text = "".join(words[k] for k in rng.integers(0, 4, size=3000))
    alphabet = sorted(set(text))
    codes = np.array([alphabet.index(c) for c in text])
    n = len(alphabet)
    net = g.RecurrentNetwork([g.LSTM(n, 16), g.FullyConnected(16, n), g.Softmax()],
                             input=g.D1(n), device=device, seed=1)
    corpus = SymbolCorpus(net, codes)
    learning = g.LearningParameters(0.01 if batch > 1 else 0.002, 0.9, 1e-6)
    for _ in range(10):
        corpus.train(learning, rng.integers(0, len(codes) - 12, size=64), 10, every=True,
                     batch=batch, loss="cross_entropy")
    measured = corpus.train(learning, rng.integers(0, len(codes) - 12, size=64), 10,
                            every=True, batch=batch, loss="cross_entropy")
    most_frequent = np.bincount(codes).max() / len(codes)
    assert measured.correct / measured.steps > most_frequent + 0.3


def test_cross_entropy_backward_matches_finite_differences(device64: g.Device) -> None:
    rng = np.random.default_rng(22)
    net = g.RecurrentNetwork([g.LSTM(3, 4), g.FullyConnected(4, 3), g.Softmax()],
                             input=g.D1(3), device=device64, seed=1)
    with_states(net, rng)
    xs = rng.normal(size=(5, 3))
    targets = [np.eye(3)[t % 3] if t % 2 == 0 else None for t in range(5)]

    def cross_entropy(n: g.RecurrentNetwork) -> float:
        ys, _ = g.run_recurrent(n, xs)
        return -sum(float(np.log(y) @ t) for y, t in zip(ys, targets, strict=True)
                    if t is not None)

    got = device_gradients(net, xs, targets, loss="cross_entropy")
    want = numeric_gradients(net, cross_entropy)
    for a, b in zip(got, want, strict=True):
        for name in a:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-6, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("index", [3, 6])
def test_model_file_keeps_states_and_metadata(device: g.Device, tmp_path, index: int) -> None:
    rng = np.random.default_rng(2)
    net = nets(device, 3, 4)[index]
    with_states(net, rng)
    xs, targets = sequence(net, 4, rng)
    g.train_recurrent(net, LP, list(zip(xs, targets, strict=True)))
    path = tmp_path / "rnn.gpy"
    net.save(path, {"alphabet": ["a", "b"]})
    loaded = g.RecurrentNetwork.load(path, device=device)
    assert repr(loaded) == repr(net)
    for got, want in ((loaded.get_parameters(), net.get_parameters()),
                      (loaded.get_momentum(), net.get_momentum())):
        for a, b in zip(got, want, strict=True):
            for name in a:
                np.testing.assert_array_equal(a[name], b[name])
    np.testing.assert_array_equal(g.run_recurrent(loaded, xs)[0], g.run_recurrent(net, xs)[0])
    rebuilt = g.RecurrentNetwork.from_spec(json.loads(json.dumps(net.spec())), device=device)
    assert repr(rebuilt) == repr(net)
    assert read_metadata(path) == {"alphabet": ["a", "b"]}
    with pytest.raises(ModelFileError, match="metadata must be a dict of JSON values"):
        net.save(tmp_path / "other.gpy", {"bad": np.float32(1)})
    with pytest.raises(ModelFileError, match="got list, not a dict; nothing was written"):
        net.save(tmp_path / "other.gpy", ["a", "b"])  # saved, then refused by read_metadata
    assert not (tmp_path / "other.gpy").exists()
    with pytest.raises(ModelFileError, match="holds a RecurrentNetwork: read it with"):
        g.Network.load(path)


def test_shapes_and_misuse_are_refused(device: g.Device) -> None:
    with pytest.raises(ShapeError, match=r"layer 0 \(LSTM 2 3\) is recurrent: build a "
                                         "RecurrentNetwork"):
        g.Network([g.LSTM(2, 3)], input=g.D1(2), device=device)
    with pytest.raises(ShapeError, match=r"layer 1 \(LSTM 4 3\) takes D1 4, but its input is "
                                         "D1 3"):
        g.RecurrentNetwork([g.LSTM(2, 3), g.LSTM(4, 3)], input=g.D1(2), device=device)
    with pytest.raises(ShapeError, match=r"layer 0.a \(LSTM 2 2\) is recurrent inside Merge; "
                                         "a RecurrentNetwork takes recurrent layers at its top "
                                         "level or as branches of ConcatRecurrent"):
        g.RecurrentNetwork([g.Merge(g.LSTM(2, 2), g.Trivial())], input=g.D1(2), device=device)
    with pytest.raises(ShapeError, match=r"layer 0.b.0 \(LSTM 2 2\) is recurrent inside Series"):
        g.RecurrentNetwork([g.ConcatRecurrent(g.LSTM(2, 2), [g.LSTM(2, 2)])], input=g.D1(2),
                           device=device)
    with pytest.raises(ShapeError, match=r"layer 0 \(ConcatRecurrent.*\) is recurrent: build a "
                                         "RecurrentNetwork"):
        g.Network([g.ConcatRecurrent(g.LSTM(2, 2), g.Trivial())], input=g.D1(2), device=device)
    with pytest.raises(ValueError, match="ConcatRecurrent needs a recurrent branch"):
        g.ConcatRecurrent(g.Tanh(), g.Trivial())
    with pytest.raises(ShapeError, match=r"layer 0 \(ConcatRecurrent\) joins two D1 outputs, "
                                         "but branch a gives D1 2 and branch b D2 1 2"):
        g.RecurrentNetwork([g.ConcatRecurrent(g.LSTM(2, 2), g.Reshape(g.D2(1, 2)))],
                           input=g.D1(2), device=device)
    with pytest.raises(ShapeError, match=r"layer 0.b \(BatchNorm.*no per-step gradient"):
        g.RecurrentNetwork([g.ConcatRecurrent(g.LSTM(2, 2), g.BatchNorm(2))], input=g.D1(2),
                           device=device)
    with pytest.raises(ShapeError, match=r"layer 1 \(Convolution.*no per-step gradient"):
        g.RecurrentNetwork([g.Reshape(g.D2(1, 4)), g.Convolution(1, 1, 1, 1, 1, 1),
                            g.Reshape(g.D1(4)), g.LSTM(4, 2)], input=g.D1(4), device=device)
    net = g.RecurrentNetwork([g.LSTM(2, 3)], input=g.D1(2), device=device)
    with pytest.raises(TypeError, match="run_recurrent"):
        g.run_net(net, np.zeros((1, 2)))
    with pytest.raises(TypeError, match="RecurrentNetwork"):
        g.run_recurrent(g.Network([g.Tanh()], input=g.D1(2), device=device), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="mask must be a bool array"):
        g.train_sequences(net, LP, np.zeros((1, 4, 2)), np.zeros((1, 4, 3)), np.ones((1, 4)))
    with pytest.raises(ValueError, match="NaN"):
        g.train_recurrent(net, LP, [(np.array([np.nan, 0.0]), np.zeros(3))])
    with pytest.raises(ValueError, match="x has shape"):
        g.train_sequences(net, LP, np.zeros((4, 2)), np.zeros((4, 3)), np.ones(4, bool))
    # Said in the sequences' own shapes, not flattened ones
    with pytest.raises(ValueError, match=r"targets has shape \(1, 4, 2\): pass B >= 1 sequences "
                                         r"of T >= 1 steps, \(B, T, 3\) for D1 3"):
        g.train_sequences(net, LP, np.zeros((1, 4, 2)), np.zeros((1, 4, 2)), np.ones((1, 4), bool))
    with pytest.raises(ValueError, match=r"x has shape \(1, 0, 2\): pass B >= 1"):
        g.train_sequences(net, LP, np.zeros((1, 0, 2)), np.zeros((1, 0, 3)), np.ones((1, 0), bool))
    with pytest.raises(ValueError, match=r"x has shape \(5,\): pass one sequence of T steps "
                       r"\(T, 2\) or B sequences \(B, T, 2\) for D1 2"):
        g.run_recurrent(net, np.zeros(5))
    with pytest.raises(ValueError, match=r"x has shape \(1, 3, 5\): pass B >= 1 sequences"):
        g.run_recurrent(net, np.zeros((1, 3, 5)))
    with pytest.raises(ValueError, match="the number of steps must be an int >= 1, got 0"):
        g.run_recurrent(net, np.zeros((0, 2)))
    with pytest.raises(ValueError, match=r"x holds NaN or Inf in float\d\d \(first in sequence "
                       r"1, step 2\)"):
        g.run_recurrent(net, np.where(np.arange(12).reshape(2, 3, 2) == 10, np.nan, 0.0))
    with pytest.raises(ValueError, match=r"step 1's input has shape \(3,\), but the network "
                       r"takes D1 2: give it shape \(2,\)"):
        g.train_recurrent(net, LP, [(np.zeros(2), None), (np.zeros(3), np.zeros(3))])
    with pytest.raises(ValueError, match=r"step 0's target has shape \(\), but the network "
                       r"outputs D1 3"):
        g.train_recurrent(net, LP, [(np.zeros(2), 0.5)])
    with pytest.raises(ValueError, match=r"step 0 is array\(\[0\., 0\.\]\): each step is a "
                       r"pair \(input, target or None\)"):
        g.train_recurrent(net, LP, [np.zeros(2)])
    with pytest.raises(ValueError, match="offsets must be ints"):
        SymbolCorpus(g.RecurrentNetwork([g.LSTM(3, 3)], input=g.D1(3), device=device),
                     np.zeros(10, int)).train(LP, np.array([5]), 5)


@pytest.mark.parametrize("summed", [False, True])
def test_targets_of_unmarked_steps_are_ignored_even_nan(device: g.Device, summed: bool) -> None:
    """The steps without a mark may hold any target, NaN placeholders too (they were refused):
    training is that of zeros there. A NaN on a marked step is refused, named by its sequence
    and step."""
    rng = np.random.default_rng(3)
    x, targets = rng.normal(size=(3, 5, 2)), rng.normal(size=(3, 5, 2))
    mask = rng.random((3, 5)) < 0.5
    placeholders, zeros = targets.copy(), targets.copy()
    placeholders[~mask], zeros[~mask] = np.nan, 0.0
    trained = []
    for given in (placeholders, zeros):
        net = g.RecurrentNetwork([g.LSTM(2, 4), g.FullyConnected(4, 2)], input=g.D1(2),
                                 device=device, seed=5)
        g.train_sequences(net, LP, x, given, mask, summed=summed)
        trained.append(net.get_parameters())
    for got, want in zip(*trained, strict=True):
        for name in want:
            assert np.isfinite(got[name]).all()
            np.testing.assert_array_equal(got[name], want[name])
    marked = targets.copy()
    marked[2, 3] = np.nan
    mask[2, 3] = True
    with pytest.raises(ValueError, match=r"targets holds NaN or Inf in \w+ \(first in "
                                         r"sequence 2, step 3\)"):
        g.train_sequences(net, LP, x, marked, mask, summed=summed)


def test_recurrent_example_learns_the_cycle() -> None:
    """Grenade's recurrent.hs: trained, the LSTM generates 0, 0, 1 repeated; untrained (the
    baseline) it does not."""
    runner = CliRunner()
    untrained = runner.invoke(recurrent_main, ["--seed", "1", "-e", "0"])
    trained = runner.invoke(recurrent_main, ["--seed", "1", "-e", "3000"])
    assert untrained.exit_code == 0 and trained.exit_code == 0, trained.output
    assert "not learned" in untrained.output
    values = eval(trained.output.splitlines()[-2])  # the printed list of 50 values
    assert len(values) == 50 and is_cycle(values) and set(values) == {0, 1}
    assert "learned" in trained.output.splitlines()[-1]


def test_the_recurrent_example_with_fewer_windows_than_ten() -> None:
    """-e below 10, whose first tenths round to 0 windows, trains each window once (it drew
    an empty batch and failed)."""
    result = CliRunner().invoke(recurrent_main, ["--seed", "1", "-e", "7"])
    assert result.exit_code == 0, result.output
    assert "the cycle 0, 0, 1:" in result.output
    from grenade_py.recurrent import cycle_network, train_cycle

    net, fresh = (cycle_network(get_device("float64"), seed=2) for _ in range(2))
    done: list[int] = []
    train_cycle(net, LP, 7, np.random.default_rng(3), progress=False, on_round=done.append)
    assert done == [1, 2, 3, 4, 5, 6, 7]
    assert net.get_parameters()[0]["w"].tolist() != \
        fresh.get_parameters()[0]["w"].tolist()


def test_is_cycle() -> None:
    assert is_cycle([0, 1, 0, 0, 1]) and is_cycle([1, 0, 0, 1])
    assert not is_cycle([0, 0, 0, 0]) and not is_cycle([0, 1, 1])


def test_float32_and_float64_agree() -> None:
    xs = np.random.default_rng(1).normal(size=(6, 3))
    ys = [g.run_recurrent(nets(get_device(precision), 3, 5)[2], xs)[0]
          for precision in ("float32", "float64")]
    np.testing.assert_allclose(ys[0], ys[1], rtol=1e-5, atol=1e-6)



def test_a_trained_network_is_collected(device64: g.Device) -> None:
    """What is built to train a network lives on it: dropping the network frees it (a
    module-level registry kept every network ever trained alive, with its plans)."""
    import gc
    import weakref

    net = nets(device64, 3, 5)[0]
    xs, targets = sequence(net, 3, np.random.default_rng(1))
    g.train_recurrent(net, LP, list(zip(xs, targets, strict=True)))
    g.run_recurrent(net, xs)
    gone = weakref.ref(net)
    del net
    gc.collect()
    assert gone() is None


@pytest.mark.parametrize("batch", [1, 3])
def test_train_sequences_does_not_wait_for_queued_work(device64: g.Device, batch: int) -> None:
    """Its uploads are non-blocking in fact, not just in name (pyopencl waits for a copy whose
    event is dropped): it returns while work queued before it still runs."""
    net = nets(device64, 3, 5)[0]
    xs, ts = np.zeros((batch, 4, 3)), np.zeros((batch, 4, 5))
    g.train_sequences(net, LP, xs, ts, np.ones((batch, 4), bool))  # builds, waits once
    device64.queue.finish()
    big = device64.zeros((1 << 22,))
    busy = device64.launch("optimizer_update_sgd", streaming_size(big.size), big.size,
                           *(np.float64(0) for _ in range(7)), big, big, big, big)
    for _ in range(40):  # ~0.1 s of work on a CPU device
        busy()
    queued = cl.enqueue_marker(device64.queue)
    g.train_sequences(net, LP, xs, ts, np.ones((batch, 4), bool))
    assert queued.command_execution_status != cl.command_execution_status.COMPLETE
    device64.queue.finish()


def test_run_recurrent_names_a_state_of_the_wrong_type(device64: g.Device) -> None:
    """Or of another device (OpenCL's INVALID_CONTEXT before)."""
    net = nets(device64, 3, 5)[0]
    with pytest.raises(TypeError, match="state must be a RecurrentState .*got str"):
        g.run_recurrent(net, np.zeros((2, 3)), state="abc")  # type: ignore[arg-type]
    twin = g.RecurrentNetwork.from_spec(net.spec(), device=g.Device(precision="float64"))
    _, state = g.run_recurrent(twin, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="another Device object holds state, not the network's"):
        g.run_recurrent(net, np.zeros((2, 3)), state)


def test_ctrl_c_in_the_recurrent_example_saves_what_was_trained(tmp_path) -> None:
    """SIGINT during a long run ends it within seconds with status 130, the windows trained so
    far in --save (it printed 'Aborted!' and saved nothing)."""
    import signal
    import subprocess
    import sys
    import time

    model = tmp_path / "cycle.gnpy"
    process = subprocess.Popen([sys.executable, "-m", "grenade_py.recurrent", "-e",
                                "100000000", "--seed", "1", "--save", str(model)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdout.readline()  # "Training network...": training starts
    time.sleep(1.0)
    assert process.poll() is None
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130 and time.monotonic() - sent < 5, err
    assert f"interrupted: saved what was trained to {model}" in err
    assert g.RecurrentNetwork.load(model).steps > 0


def test_without_a_mask_every_step_has_a_target(device: g.Device, rng) -> None:
    x, t = rng.normal(size=(3, 5, 2)), rng.normal(size=(3, 5, 3))
    nets = [g.RecurrentNetwork([g.LSTM(2, 3)], input=g.D1(2), device=device, seed=6)
            for _ in range(3)]
    g.train_sequences(nets[0], LP, x, t, np.ones((3, 5), bool))
    g.train_sequences(nets[1], LP, x, t)
    for a, b in zip(nets[0].get_parameters(), nets[1].get_parameters(), strict=True):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(nets[1].get_parameters()[0]["state"],
                              nets[2].get_parameters()[0]["state"])  # it trained


def test_a_large_call_holds_nothing_on_the_network(device: g.Device, monkeypatch) -> None:
    """train_sequences returns with the call before it done, its own upload held on the
    network until the next call (a loop of calls keeps the device busy); a call uploading more
    than QUEUED_BYTES waits for its work instead and holds nothing of it: the window loop, summed
    BPTT, and sequences of several lengths layer by layer (a network over WINDOW_PARAMETERS)."""
    x, t = np.zeros((2, 4, 2)), np.zeros((2, 4, 3))
    small = g.RecurrentNetwork([g.LSTM(2, 3)], input=g.D1(2), device=device, seed=1)
    g.train_sequences(small, LP, x, t)
    assert "pending" in small.held
    monkeypatch.setattr("grenade_py.recurrent_runner.QUEUED_BYTES", 0)
    large = g.RecurrentNetwork([g.LSTM(2, 30), g.FullyConnected(30, 3)], input=g.D1(2),
                               device=device, seed=1)
    for net, options in ((small, {}), (small, {"summed": True}),
                         (large, {"lengths": np.array([4, 2])})):
        g.train_sequences(net, LP, x, t, **options)
        assert "pending" not in net.held, options


@pytest.mark.parametrize("fails", [False, True])
def test_the_held_window_loop_lets_go_of_a_corpus(device: g.Device, monkeypatch,
                                                   fails: bool) -> None:
    """The fused window loop is held on the network; once SymbolCorpus.train returns, its
    arguments hold none of the corpus's buffers (its windows' io, the call's sums), so a
    corpus dropped after training is freed; also when the call ends in an error after its
    windows were queued (as Ctrl-C while it waits would), which left them held."""
    import pyopencl.array as cl_array

    from grenade_py import recurrent_runner

    if fails:
        queue_windows = recurrent_runner.train_symbol_windows

        def interrupted(*args):
            queue_windows(*args)
            raise KeyboardInterrupt

        monkeypatch.setattr(recurrent_runner, "train_symbol_windows", interrupted)
    net = g.RecurrentNetwork([g.LSTM(5, 4), g.FullyConnected(4, 5), g.Logit()],
                             input=g.D1(5), device=device, seed=2)
    corpus = SymbolCorpus(net, np.random.default_rng(3).integers(0, 5, size=100))
    with contextlib.suppress(KeyboardInterrupt):
        corpus.train(LP, np.arange(0, 80, 7), 9)
    trainer = net.held[("windows", LP.kind, "squared_error")]
    assert trainer is not None and corpus._window_fills
    theirs = [io for _, io, _ in corpus._window_fills.values()]
    held = [a for a in trainer.launch.args if isinstance(a, cl_array.Array)]
    assert not any(a is io for a in held for io in theirs)
    assert any(a is trainer.sums for a in held)


def test_a_corpus_keeps_the_buffers_of_its_last_window_shapes(device: g.Device,
                                                              monkeypatch) -> None:
    """SymbolCorpus.train's fused window loop keeps each chunk shape's (steps, windows) buffers
    and one-hot launch for the corpus, at most WINDOW_FILLS_KEPT of them (a corpus trained on
    ever new window lengths and counts kept every one); dropping the least recently used
    changes nothing trained: the same weights and metrics as keeping them all."""
    results = []
    for kept in (2, 100):
        monkeypatch.setattr(windows, "WINDOW_FILLS_KEPT", kept)
        net = g.RecurrentNetwork([g.LSTM(5, 4), g.FullyConnected(4, 5), g.Logit()],
                                 input=g.D1(5), device=device, seed=2)
        corpus = SymbolCorpus(net, np.random.default_rng(3).integers(0, 5, size=200))
        measured = [corpus.train(LP, np.arange(0, 9 * count, 9), steps)
                    for steps, count in ((4, 3), (6, 3), (4, 5), (4, 3), (7, 2), (6, 3))]
        assert len(corpus._window_fills) == min(kept, 4)
        results.append((net.get_parameters(), measured))
    (kept_few, few), (kept_all, all_) = results
    assert few == all_
    for a, b in zip(kept_few, kept_all, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_corpora_on_one_network_share_a_steps_metrics(device: g.Device) -> None:
    """Minibatch windows (batch 2, layer by layer) of two corpora on one network: they add up
    into the network's one sum buffer, so the Step they share keeps one set of metrics
    launches, not one a corpus (which would pile up with every corpus made); each call's
    metrics count its own windows."""
    from grenade_py.execution import sequence_steps

    net = g.RecurrentNetwork([g.LSTM(5, 4), g.FullyConnected(4, 5), g.Logit()],
                             input=g.D1(5), device=device, seed=2)
    rng = np.random.default_rng(3)
    measured = [SymbolCorpus(net, rng.integers(0, 5, size=60)).train(
        LP, np.arange(0, 40, 5), 6, every=every, batch=2) for every in (False, True)]
    assert [m.steps for m in measured] == [8, 8 * 6]
    assert len(sequence_steps(net, 6, 2)._metrics) == 1
