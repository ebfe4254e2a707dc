"""train_many: several networks trained per example in one launch, each exactly as its solo
run (bit for bit), at odd sizes and in both precisions."""
from __future__ import annotations

import numpy as np
import pytest

import grenade_py as g
from grenade_py.errors import GrenadeError
from grenade_py.many import train_many


def networks(device, sizes, seeds):
    return [g.Network([g.FullyConnected(sizes[0], sizes[1]), g.Tanh(),
                       g.FullyConnected(sizes[1], sizes[2]), g.LeakyRelu(0.1)],
                      input=g.D1(sizes[0]), device=device, seed=seed) for seed in seeds]


@pytest.mark.parametrize("sizes", [(1, 1, 1), (3, 17, 2), (17, 257, 3)])
@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_each_network_ends_as_its_solo_run(device, sizes, kind):
    """Three networks: their own seeds, data orders and rates (a sweep), one launch."""
    rng = np.random.default_rng(sum(sizes))
    xs, ys = rng.normal(size=(50, sizes[0])), rng.normal(size=(50, sizes[2]))
    orders = np.stack([rng.permutation(50), rng.integers(0, 50, 50), np.arange(50)])
    opts = [g.LearningParameters(rate, 0.9, 0.001) if kind == "sgd" else
            g.AdamW(rate, weight_decay=0.01) for rate in (0.01, 0.003, 0.03)]
    many, solo = networks(device, sizes, (1, 2, 3)), networks(device, sizes, (1, 2, 3))
    before = [net.get_parameters() for net in many]
    train_many(many, opts, xs, ys, orders)
    for net, order, opt in zip(solo, orders, opts, strict=True):
        g.train(net, opt, xs[order], ys[order], per_example=True)
    for a, b, start in zip(many, solo, before, strict=True):
        assert a.steps == b.steps == 50
        for got, want in zip(a.get_parameters() + a.get_momentum() + a.get_second(),
                             b.get_parameters() + b.get_momentum() + b.get_second(),
                             strict=True):
            for name in got:
                np.testing.assert_array_equal(got[name], want[name])
        assert not np.array_equal(a.get_parameters()[0]["weights"], start[0]["weights"])


def test_one_optimiser_for_all_and_the_default_order(device64):
    rng = np.random.default_rng(5)
    xs, ys = rng.normal(size=(30, 3)), rng.normal(size=(30, 2))
    lp = g.LearningParameters(0.02, 0.9, 0.0005)
    many, solo = networks(device64, (3, 5, 2), (4, 5)), networks(device64, (3, 5, 2), (4, 5))
    train_many(many, lp, xs, ys)
    for a, b in zip(many, solo, strict=True):
        g.train(b, lp, xs, ys, per_example=True)
        np.testing.assert_array_equal(g.run_net(a, xs), g.run_net(b, xs))


def test_a_softmax_network_under_cross_entropy(device64):
    """The loss reaches the loop: each network ends as its solo run under the same loss."""
    rng = np.random.default_rng(6)
    xs, ys = rng.normal(size=(40, 3)), np.eye(4)[rng.integers(0, 4, 40)]
    lp = g.LearningParameters(0.05, 0.9, 0.0005)

    def build(seed):
        return g.Network([g.FullyConnected(3, 7), g.Relu(), g.FullyConnected(7, 4), g.Softmax()],
                         input=g.D1(3), device=device64, seed=seed)

    many, solo = [build(7), build(8)], [build(7), build(8)]
    train_many(many, lp, xs, ys, loss="cross_entropy")
    for a, b in zip(many, solo, strict=True):
        g.train(b, lp, xs, ys, per_example=True, loss="cross_entropy")
        np.testing.assert_array_equal(g.run_net(a, xs), g.run_net(b, xs))
    with pytest.raises(ValueError, match="distributions"):
        train_many(many, lp, xs, ys * 2, loss="cross_entropy")


def test_convolutions_and_pooling(device):
    """Layers with memory of their own in the loop (Pooling's picked offsets): each network's
    share is its own."""
    rng = np.random.default_rng(7)
    xs, ys = rng.normal(size=(20, 6, 8)), rng.uniform(size=(20, 2))

    def build(seed):
        return g.Network([g.Convolution(1, 3, 3, 3, 1, 1), g.Pooling(2, 2, 2, 2), g.Relu(),
                          g.Reshape(), g.FullyConnected(18, 2), g.Logit()], input=g.D2(6, 8),
                         device=device, seed=seed)

    lp = g.LearningParameters(0.05, 0.9, 0.0005)
    many, solo = [build(1), build(2), build(3)], [build(1), build(2), build(3)]
    orders = np.stack([rng.permutation(20) for _ in range(3)])
    train_many(many, lp, xs, ys, orders)
    for a, b, order in zip(many, solo, orders, strict=True):
        g.train(b, lp, xs[order], ys[order], per_example=True)
        for got, want in zip(a.get_parameters(), b.get_parameters(), strict=True):
            for name in got:
                np.testing.assert_array_equal(got[name], want[name])


def test_what_train_many_refuses(device64):
    xs, ys = np.zeros((4, 3)), np.zeros((4, 2))
    lp = g.LearningParameters(0.01, 0.9, 0.0)
    a, b = networks(device64, (3, 5, 2), (1, 2))
    other = networks(device64, (3, 4, 2), (1,))[0]
    with pytest.raises(ValueError, match="one architecture: Network"):
        train_many([a, other], lp, xs, ys)
    elsewhere = g.Network.from_spec(a.spec(), device=g.Device(precision="float64"))
    with pytest.raises(ValueError, match=r"on one Device object, and these are on several .*: "
                       r"build them with one, dev = Device\(\); Network\(..., device=dev\)"):
        train_many([a, elsewhere], lp, xs, ys)
    with pytest.raises(ValueError, match="appears twice"):
        train_many([a, a], lp, xs, ys)
    with pytest.raises(TypeError, match=r"a list of Networks, got one: pass \[net, ...\]"):
        train_many(a, lp, xs, ys)
    with pytest.raises(ValueError, match="all of one kind and without clip_norm"):
        train_many([a, b], [lp, g.Adam(0.01)], xs, ys)
    with pytest.raises(ValueError, match="all of one kind and without clip_norm"):
        train_many([a, b], g.SGD(0.01, clip_norm=1.0), xs, ys)
    with pytest.raises(ValueError, match=r"orders must be 2 rows of example indices in \[0, 4\)"):
        train_many([a, b], lp, xs, ys, np.array([[0, 1], [2, 4]]))
    dropping = [g.Network([g.FullyConnected(3, 2), g.Dropout(0.5)], input=g.D1(3),
                          device=device64, seed=s) for s in (1, 2)]
    with pytest.raises(GrenadeError, match="without a device-side form"):
        train_many(dropping, lp, xs, ys)
    with pytest.raises(TypeError, match="a list of Networks"):
        train_many([], lp, xs, ys)
