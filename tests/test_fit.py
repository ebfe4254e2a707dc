"""fit: minibatch epochs over a device-resident dataset."""
from __future__ import annotations

import numpy as np
import pytest

from grenade_py import (
    D1,
    Adam,
    AdamW,
    Dropout,
    FullyConnected,
    LearningParameters,
    Network,
    Relu,
    Softmax,
    Tanh,
    evaluate,
    fit,
    train,
)
from grenade_py.device import Launch
from grenade_py.feedforward import feedforward_network, sample
from grenade_py.layers import fully_connected

LP = LearningParameters(0.05, 0.9, 0.0)


def test_fit_without_shuffle_equals_train_steps(device64, rng):
    """One epoch in order is the same sequence of averaged steps as calling train per batch."""
    a, b = (feedforward_network(device64, seed=2) for _ in range(2))
    x, y = sample(50, rng)
    history = fit(a, LP, x, y, batch_size=8, epochs=1, shuffle=False)
    for start in range(0, 50, 8):  # the last batch has 2 examples
        train(b, LP, x[start:start + 8], y[start:start + 8])
    for pa, pb in zip(a.get_parameters(), b.get_parameters(), strict=True):
        for name in pa:
            np.testing.assert_allclose(pa[name], pb[name], rtol=1e-12, atol=1e-14)
    assert history[0]["epoch"] == 1 and history[0]["examples_per_s"] > 0


@pytest.mark.parametrize("loss", ["squared_error", "cross_entropy"])
def test_fit_at_batch_one_runs_the_fused_loop_as_layer_by_layer(device64, monkeypatch, loss):
    """batch_size 1 is Grenade's per-example training: one launch runs many of an epoch's
    shuffled examples. Weights, momenta, each epoch's loss and accuracy (measured before each
    example's update) and the step count equal the layer-by-layer steps', the weights also the
    numpy transcription's; progress counts examples; a schedule's rate reaches the loop."""
    from grenade_py import execution
    from grenade_py.numpy_reference import NumpyNetwork

    def build():
        return Network([FullyConnected(3, 9), Relu(), FullyConnected(9, 4), Softmax()],
                       input=D1(3), device=device64, seed=11)

    rng = np.random.default_rng(12)
    x, y = rng.normal(size=(230, 3)), np.eye(4)[rng.integers(0, 4, 230)]
    fused, plain = build(), build()
    reference = NumpyNetwork([layer.spec() for layer in fused.layers], fused.get_parameters())
    assert execution.steps(fused, 1, loss).fused(LP) is not None
    seen = []
    args = dict(batch_size=1, epochs=2, seed=13, loss=loss, schedule="exponential:0.5")
    got = fit(fused, LP, x, y, progress=lambda done, total: seen.append((done, total)), **args)
    monkeypatch.setattr("grenade_py.execution.fused", lambda *a: None)
    want = fit(plain, LP, x, y, **args)
    for a, b in zip(got, want, strict=True):
        for key in ("loss", "accuracy", "rate"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-12, err_msg=key)
    for pa, pb in zip(fused.get_parameters() + fused.get_momentum(),
                      plain.get_parameters() + plain.get_momentum(), strict=True):
        for name in pa:
            np.testing.assert_allclose(pa[name], pb[name], rtol=1e-12, atol=1e-14)
    assert fused.steps == plain.steps == 460
    assert seen[-1] == (230, 230) and len(seen) == 2 * 58  # launches of 230 // 50 examples
    assert got[0]["rate"] == LP.rate and got[1]["rate"] == LP.rate * 0.5
    rng_order = np.random.default_rng(13)
    for epoch in range(2):
        order = rng_order.permutation(230)
        lp = LearningParameters(LP.rate * 0.5 ** epoch, LP.momentum, LP.l2)
        reference.train_per_example(x[order], y[order], lp, loss)
    for a, want_ in zip(fused.get_parameters(), reference.parameters, strict=True):
        for name in want_:
            np.testing.assert_allclose(a[name], want_[name], rtol=1e-10, atol=1e-12)


def test_fit_is_seeded_and_learns(device):
    x, y = sample(4000, np.random.default_rng(3))
    xv, yv = sample(2000, np.random.default_rng(4))
    runs = []
    for _ in range(2):
        net = feedforward_network(device, seed=4)
        runs.append(fit(net, LearningParameters(0.2, 0.9, 0.0), x, y, batch_size=16, epochs=10,
                        seed=5, validation=(xv, yv)))
    assert [r["loss"] for r in runs[0]] == [r["loss"] for r in runs[1]]
    losses = [r["loss"] for r in runs[0]]
    assert losses[-1] < losses[0]
    # The best constant predictor scores ~0.83 here; a network that learned nothing can't pass.
    constant = max(yv.mean(), 1 - yv.mean())
    assert runs[0][-1]["val_accuracy"] > constant + 0.07, (constant, runs[0][-1])


@pytest.mark.parametrize("in_gemm", [False, True], ids=["", "update-in-gemm"])
@pytest.mark.parametrize("shuffle", [True, False])
def test_fit_equals_a_numpy_transcription(device64, shuffle, in_gemm, monkeypatch):
    """Epochs of shuffled minibatches (uneven last batch) equal numpy doing the same steps in
    the same seeded order: without the permutation's upload this fails. `in_gemm`: the second
    layer (40 inputs) steps its weights in its gradient's GEMM."""
    from grenade_py.numpy_reference import NumpyNetwork

    if in_gemm:
        monkeypatch.setattr(fully_connected, "UPDATE_FUSED", 0)
        monkeypatch.setattr(fully_connected, "UPDATE_FUSED_ROWS", 0)
    net = feedforward_network(device64, seed=8)
    reference = NumpyNetwork([layer.spec() for layer in net.layers], net.get_parameters())
    x, y = sample(90, np.random.default_rng(9))
    fit(net, LP, x, y, batch_size=16, epochs=3, seed=10, shuffle=shuffle)
    if shuffle:
        reference.fit(x, y, LP, batch_size=16, epochs=3, seed=10)
    else:
        for _ in range(3):
            for start in range(0, 90, 16):
                reference.train(x[start:start + 16], y[start:start + 16], LP)
    for got, want in zip(net.get_parameters(), reference.parameters, strict=True):
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("chosen", [LearningParameters(0.05, 0.9, 1e-4),
                                    Adam(1e-3, weight_decay=1e-3), AdamW(1e-3, weight_decay=1e-2)],
                         ids=["sgd", "adam", "adamw"])
def test_weights_step_in_their_gradients_gemms(device, rng, chosen, monkeypatch):
    """fit and train on batches step the weights of FullyConnected layers of a vector's inputs
    or more in their gradients' GEMMs (gemm_outer_update), and the weights, both moments and
    the step count come out as backward then update leave them, to the bit: with a layer of
    fewer inputs (7) between, which the update steps, and a last batch of one row (a rank-1
    gemm_outer_update, as against fc_backward_weights then the update)."""
    monkeypatch.setattr(fully_connected, "UPDATE_FUSED", 0)
    monkeypatch.setattr(fully_connected, "UPDATE_FUSED_ROWS", 0)
    x, y = rng.normal(size=(2 * 13 + 1, 37)), np.eye(5)[rng.integers(0, 5, 2 * 13 + 1)]
    nets = [Network([FullyConnected(37, 40), Relu(), FullyConnected(40, 7), Relu(),
                     FullyConnected(7, 5), Softmax()], D1(37), device=device, seed=3)
            for _ in range(2)]
    ran = []
    launch = Launch.__call__
    monkeypatch.setattr(Launch, "__call__", lambda self: ran.append(self.name) or launch(self))
    for net in nets:
        fit(net, chosen, x, y, batch_size=13, epochs=2, seed=1, loss="cross_entropy")
        train(net, chosen, x[:6], y[:6], loss="cross_entropy")
        monkeypatch.setattr(Network, "update_fused", lambda *_: [])  # the second: two passes
    stepping = [name for name in ran if name.startswith("gemm_outer_update")]
    assert len(stepping) == 2 * (2 * 3 + 1), stepping  # two layers; 2 epochs of 3, one train
    fused, plain = nets
    assert fused.steps == plain.steps == 2 * 3 + 1
    for role in ("parameters", "momentum", "second"):
        for got, want in zip(fused.host_copies(role), plain.host_copies(role), strict=True):
            for name in want:
                np.testing.assert_array_equal(got[name], want[name], err_msg=role + name)


def test_cross_entropy_needs_distributions(device):
    net = Network([FullyConnected(2, 3), Softmax()], input=D1(2), device=device)
    x = np.zeros((3, 2))
    for bad in (np.array([[1.0, 1, 0], [0, 1, 0], [0, 0, 1]]),
                np.array([[0, 1.0, 0], [-0.5, 1.5, 0], [0, 0, 1]])):
        for call in (fit, train):
            with pytest.raises(ValueError, match=r"distributions .*y\[[01]\]"):
                call(net, LP, x, bad, loss="cross_entropy")
        with pytest.raises(ValueError, match=r"distributions .*y\[[01]\]"):
            evaluate(net, x, bad, loss="cross_entropy")
    fit(net, LP, x, np.array([[0.2, 0.8, 0], [0, 1, 0], [1 / 3, 1 / 3, 1 / 3]]),
        loss="cross_entropy")


def test_training_and_evaluation_losses_agree_when_saturated(tmp_path):
    """float32 softmax outputs of exactly 0: the loss is still the true cross entropy, the
    same in fit's report and in evaluate (one definition, from the logits)."""
    from conftest import get_device

    net = Network([FullyConnected(1, 2), Softmax()], input=D1(1), device=get_device("float32"))
    net.set_parameters([{"weights": np.array([[100.0], [-100.0]]), "bias": np.zeros(2)}, {}])
    x, y = np.array([[2.0], [1.0]]), np.array([[0.0, 1.0], [1.0, 0.0]])
    expected = (400.0 + 0.0) / 2  # -log softmax at logits +-200 and +-100: 400 and ~0
    scores = evaluate(net, x, y, loss="cross_entropy")
    (record,) = fit(net, LearningParameters(1e-30, 0.0, 0.0), x, y, batch_size=2,
                    loss="cross_entropy")
    assert scores["loss"] == pytest.approx(expected, rel=1e-6)
    assert record["loss"] == pytest.approx(expected, rel=1e-6)


def test_fit_reports_the_loss_it_computes(device64, rng):
    """The device-side loss sum equals the loss of the batches as numpy sees them (one batch
    holding everything: measured before its single update)."""
    net = Network([FullyConnected(3, 4), Softmax()], input=D1(3), device=device64, seed=1)
    x = rng.normal(size=(10, 3))
    y = np.eye(4)[rng.integers(0, 4, size=10)]
    from grenade_py import run_net

    p = run_net(net, x)
    expected = -np.sum(y * np.log(p)) / 10
    accuracy = np.mean(p.argmax(axis=1) == y.argmax(axis=1))
    (record,) = fit(net, LP, x, y, batch_size=10, epochs=1, loss="cross_entropy")
    assert record["loss"] == pytest.approx(expected, rel=1e-12)
    assert record["accuracy"] == pytest.approx(accuracy)


def test_fit_reports_progress_without_changing_the_steps(device64, rng):
    """progress(step, steps) comes about 50 times an epoch (every step of a short one), in
    order, ending at the last step; the weights are those of a run without it."""
    a, b = (feedforward_network(device64, seed=2) for _ in range(2))
    x, y = sample(1000, rng)
    seen: list[tuple[int, int]] = []
    fit(a, LP, x, y, batch_size=4, epochs=2, seed=3,
        progress=lambda done, steps: seen.append((done, steps)))
    fit(b, LP, x, y, batch_size=4, epochs=2, seed=3)
    epoch = [(done, 250) for done in range(5, 251, 5)]  # 250 steps: every 250 // 50
    assert seen == epoch + epoch
    for pa, pb in zip(a.get_parameters(), b.get_parameters(), strict=True):
        for name in pa:
            np.testing.assert_array_equal(pa[name], pb[name])
    seen.clear()
    fit(a, LP, x[:10], y[:10], batch_size=4, progress=lambda *done: seen.append(done))
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_fit_warns_when_the_loss_is_not_finite(device, caplog):
    """A rate that makes the weights overflow gives a record whose loss is not finite, and a
    warning that says what to do, rather than an error that would lose the epochs done."""
    net = Network([FullyConnected(2, 8), FullyConnected(8, 1)], input=D1(2), device=device,
                  seed=1)
    x, y = np.full((64, 2), 10.0), np.full((64, 1), 1.0)
    with caplog.at_level("WARNING", logger="grenade_py"):
        history = fit(net, LearningParameters(1e3, 0.9, 0.0), x, y, batch_size=8, epochs=3,
                      shuffle=False)
    assert len(history) == 3 and not np.isfinite(history[-1]["loss"])
    assert "lower the learning rate" in caplog.text


def test_fit_input_errors(device):
    net = Network([FullyConnected(2, 3), Relu(), FullyConnected(3, 2), Softmax()], input=D1(2),
                  device=device)
    x, y = np.zeros((4, 2)), np.eye(2)[[0, 1, 0, 1]]
    with pytest.raises(ValueError, match="batch_size"):
        fit(net, LP, x, y, batch_size=0)
    with pytest.raises(ValueError, match="batch_size"):
        fit(net, LP, x, y, batch_size=2.0)
    fit(net, LP, x, y, batch_size=np.int64(2), epochs=np.int32(1))
    with pytest.raises(ValueError, match="epochs"):
        fit(net, LP, x, y, epochs=-1)
    with pytest.raises(ValueError, match="loss must be one of"):
        fit(net, LP, x, y, loss="hinge")
    with pytest.raises(ValueError, match="^validation.0. holds NaN"):
        fit(net, LP, x, y, validation=(np.full((2, 2), np.nan), y[:2]))
    with pytest.raises(ValueError, match=r"^validation\[1\] has shape \(2, 3\), but the network "
                       r"outputs D1"):
        fit(net, LP, x, y, validation=(x[:2], np.zeros((2, 3))))
    with pytest.raises(ValueError, match=r"^validation\[0\] has 2 samples but validation\[1\] "
                       r"has 1"):
        fit(net, LP, x, y, validation=(x[:2], y[:1]))
    with pytest.raises(ValueError, match=r"validation must be a pair \(x, y\)"):
        fit(net, LP, x, y, validation=(x, y, y))
    with pytest.raises(ValueError, match="seed must be an int >= 0, got 'a'"):
        fit(net, LP, x, y, seed="a")
    plain = Network([FullyConnected(2, 2)], input=D1(2), device=device)
    with pytest.raises(ValueError, match="ending in a Softmax"):
        fit(plain, LP, x, y, loss="cross_entropy")


def test_validation_cannot_disturb_training(device64, rng, monkeypatch):
    """Validation runs between epochs may evict the network's cached batch plans; training
    must go on in the same buffers regardless."""
    x, y = sample(50, rng)
    a, b = (feedforward_network(device64, seed=6) for _ in range(2))
    fit(a, LP, x, y, batch_size=8, epochs=3, seed=1)
    monkeypatch.setattr("grenade_py.execution.MAX_STEPS", 1)
    monkeypatch.setattr("grenade_py.execution.STEPS_BYTES", 0)
    monkeypatch.setattr("grenade_py.runner.RUN_CHUNK", 3)
    fit(b, LP, x, y, batch_size=8, epochs=3, seed=1, validation=(x[:7], y[:7]))
    for pa, pb in zip(a.get_parameters(), b.get_parameters(), strict=True):
        for name in pa:
            np.testing.assert_array_equal(pa[name], pb[name])


def test_evaluate(device64, rng):
    net = Network([FullyConnected(3, 4), Softmax()], input=D1(3), device=device64, seed=1)
    from grenade_py import evaluate, run_net

    x, y = rng.normal(size=(9, 3)), np.eye(4)[rng.integers(0, 4, size=9)]
    p = run_net(net, x)
    scores = evaluate(net, x, y, loss="cross_entropy")
    assert scores["loss"] == pytest.approx(-np.sum(y * np.log(p)) / 9, rel=1e-12)
    assert scores["accuracy"] == pytest.approx(np.mean(p.argmax(1) == y.argmax(1)))
    # The sums it holds between calls start again from zero, over any batch sizes.
    for n in (4, 9, 1):
        evaluate(net, x[:n], y[:n], loss="cross_entropy")
        assert evaluate(net, x, y, loss="cross_entropy") == scores


def test_a_resumed_run_ends_where_one_run_does(device64, rng, tmp_path):
    """4 epochs in one fit equal 2, a save and a load, and 2 more from first_epoch=2, to the
    bit: the schedule's rates, the shuffled orders, Adam's moments and t and Dropout's counter
    go on; the records are numbered on. From epoch 0 instead, the orders and rates differ."""
    x, y = rng.normal(size=(40, 3)), rng.normal(size=(40, 2))

    def net():
        return Network([FullyConnected(3, 8), Tanh(), Dropout(0.2), FullyConnected(8, 2)],
                       input=D1(3), device=device64, seed=2)

    def run(n, epochs, first=0):
        return fit(n, Adam(0.01), x, y, batch_size=8, epochs=epochs, seed=5,
                   schedule="exponential:0.5", first_epoch=first)

    whole, half = net(), net()
    records = run(whole, 4)
    run(half, 2)
    half.save(tmp_path / "half")
    resumed = Network.load(tmp_path / "half")
    later = run(resumed, 2, first=2)
    assert [r["epoch"] for r in later] == [3, 4]
    assert [r["rate"] for r in later] == [r["rate"] for r in records[2:]] == [0.0025, 0.00125]
    np.testing.assert_array_equal(
        [r["loss"] for r in later], [r["loss"] for r in records[2:]])
    for a, b in zip(whole.get_parameters(), resumed.get_parameters(), strict=True):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])
    again = Network.load(tmp_path / "half")
    run(again, 2)
    assert not np.array_equal(again.get_parameters()[0]["weights"],
                              whole.get_parameters()[0]["weights"])


def test_on_epoch_returning_false_stops_early(device64, rng):
    """After the epoch whose callback returns False, fit returns the epochs done, and the
    network is where a fit of that many epochs leaves it (the same shuffles); None goes on."""
    x, y = sample(40, rng)
    stopped, planned = (feedforward_network(device64, seed=3) for _ in range(2))
    seen = []

    def until_two(record):
        seen.append(record["epoch"])
        return None if record["epoch"] < 2 else False

    history = fit(stopped, LP, x, y, batch_size=8, epochs=5, seed=1, on_epoch=until_two)
    assert [r["epoch"] for r in history] == seen == [1, 2]
    assert fit(planned, LP, x, y, batch_size=8, epochs=2, seed=1)[-1]["loss"] == \
        history[-1]["loss"]
    for a, b in zip(stopped.get_parameters(), planned.get_parameters(), strict=True):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])


def test_fit_calls_in_turn_train_on_their_own_data(device64, rng):
    """fit's metrics, sums and update are held on the network between calls: each call's
    sums are its own (the same weights and losses as calls that make them all anew, over
    batch sizes with and without a partial last batch)."""
    held, fresh = (Network([FullyConnected(3, 5), Tanh(), FullyConnected(5, 2)], input=D1(3),
                           device=device64, seed=3) for _ in range(2))
    for count, batch in ((20, 8), (12, 4), (20, 8), (9, 2)):
        x, y = rng.normal(size=(count, 3)), rng.normal(size=(count, 2))
        fresh.held.clear()
        ours, theirs = (fit(net, LP, x, y, batch_size=batch, seed=count)[0]
                        for net in (held, fresh))
        assert (ours["loss"], ours["accuracy"]) == (theirs["loss"], theirs["accuracy"])
    for a, b in zip(held.get_parameters(), fresh.get_parameters(), strict=True):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])


def test_fit_gathers_batches_through_held_launches_that_let_go_of_its_data(device, rng,
                                                                          monkeypatch):
    """fit copies each batch's rows into its Step by a launch held on the Step (making one
    took about 0.5 ms a call, over a third of a fit over 100 examples); each call gives it its
    data, and once fit returns, also after an error, it holds none of it (the Step is held on
    the network from call to call)."""
    import contextlib

    import pyopencl.array as cl_array

    from grenade_py import execution

    made = []
    upload = device.to_device
    monkeypatch.setattr(device, "to_device",
                        lambda array, *rest: made.append(upload(array, *rest)) or made[-1])
    net = feedforward_network(device, seed=2)
    x, y = sample(50, rng)

    def stop(record):
        raise KeyError("stopped")

    launches = []
    for run in (lambda: fit(net, LP, x, y, batch_size=8),
                lambda: fit(net, LP, x, y, batch_size=8, epochs=2, on_epoch=stop)):
        made.clear()
        with contextlib.suppress(KeyError):
            run()
        assert len(made) == 2  # the inputs and the targets went to the device...
        held = [execution.steps(net, n)._gather for n in (8, 50 % 8)]
        launches.append(held)
        args = [a for launch in held for a in launch.args if isinstance(a, cl_array.Array)]
        assert not any(a is m for a in args for m in made)  # ...and the launches let go of them
        assert not any(a.dtype == np.int32 for a in args)  # and of the order
    assert all(a is b for a, b in zip(*launches, strict=True))  # made once
