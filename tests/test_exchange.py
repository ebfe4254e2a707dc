"""The GAN exchange in one kernel (grenade_py.exchange) against the same steps through the public
API, layer by layer (run_network, run_gradient, apply_update), as examples/gan_mnist.py's
train_step takes them."""
from __future__ import annotations

import re

import numpy as np
import pytest

from grenade_py import (
    D1,
    D2,
    D3,
    SGD,
    AdamW,
    Convolution,
    Deconvolution,
    Dropout,
    FullyConnected,
    GrenadeError,
    Logit,
    Network,
    Pooling,
    Relu,
    Reshape,
    Tanh,
    apply_update,
    run_gradient,
    run_network,
)
from grenade_py.device import Device
from grenade_py.exchange import Exchange
from grenade_py.kernel_library import kernel_source


def networks(device, seed=3):
    """A discriminator (a convolution, pooling, two FullyConnected) and a generator (two
    Deconvolutions) in small."""
    discriminator = Network([
        Convolution(1, 3, 3, 3, 1, 1), Pooling(2, 2, 2, 2), Relu(), Reshape(),
        FullyConnected(3 * 4 * 5, 7), Logit(), FullyConnected(7, 1), Logit()],
        input=D2(10, 12), device=device, seed=seed)
    generator = Network([
        FullyConnected(5, 24), Tanh(), Reshape(D3(3, 4, 2)), Deconvolution(2, 3, 2, 2, 2, 2),
        Relu(), Deconvolution(3, 1, 5, 5, 1, 1), Reshape(D2(10, 12)), Logit()],
        input=D1(5), device=device, seed=seed + 1)
    return discriminator, generator


def reference(d, g, d_opt, g_opt, images, noise):
    """Per example: both networks' passes, then the discriminator's steps (the real's gradient,
    then the fake's) and the generator's, from the delta at the discriminator's input for the
    fake against target 1. The verdicts on the fakes."""
    verdicts = []
    for x, z in zip(images, noise, strict=True):
        g_tape, fake = run_network(g, z)
        r_tape, real_verdict = run_network(d, x)
        f_tape, fake_verdict = run_network(d, fake)
        from_real, _ = run_gradient(d, r_tape, real_verdict - 1)
        from_fake, _ = run_gradient(d, f_tape, fake_verdict)
        _, push = run_gradient(d, f_tape, fake_verdict - 1)
        for_generator, _ = run_gradient(g, g_tape, push)
        apply_update(d, d_opt, from_real)
        apply_update(d, d_opt, from_fake)
        apply_update(g, g_opt, for_generator)
        verdicts.append(fake_verdict[0])
    return np.array(verdicts)


def trained(device, d_opt, g_opt, count, seed):
    """Both ways over `count` examples from the same networks: the exchange (in two launches)
    and the reference. (exchange, its networks, the reference's, its verdicts, the
    reference's)."""
    fused, plain = networks(device), networks(device)
    rng = np.random.default_rng(seed)
    images, noise = rng.uniform(size=(count, 10, 12)), rng.uniform(-1, 1, size=(count, 5))
    expected = reference(*plain, d_opt, g_opt, images, noise)
    verdicts = device.zeros((count,))
    exchange = Exchange(*fused)
    images_dev, noise_dev = device.to_device(images), device.to_device(noise)
    for start, stop in ((0, count * 2 // 5), (count * 2 // 5, count)):
        exchange(images_dev, noise_dev, verdicts, start, stop - start, d_opt, g_opt)
    return exchange, fused, plain, verdicts.get(), expected


@pytest.mark.parametrize(("d_opt", "g_opt"), [
    (SGD(0.05, 0.9, 0.005), SGD(0.05, 0.9, 0.0005)), (AdamW(0.01), SGD(0.05))])
def test_the_exchange_equals_its_steps_layer_by_layer(device, d_opt, g_opt):
    """float64 to 1e-12, float32 to 1e-4 (the convolutions' direct loops sum in another order
    than the GEMMs), over 30 examples: verdicts, parameters, moments and step counts."""
    _, fused, plain, verdicts, expected = trained(device, d_opt, g_opt, 30, 7)
    tol = 1e-12 if device.precision == "float64" else 1e-4
    np.testing.assert_allclose(verdicts, expected, rtol=tol)
    for a, b in zip(fused, plain, strict=True):
        assert a.steps == b.steps
        for got, want in zip(a.get_parameters() + a.get_momentum() + a.get_second(),
                             b.get_parameters() + b.get_momentum() + b.get_second(),
                             strict=True):
            for key in want:
                np.testing.assert_allclose(got[key], want[key], rtol=tol,
                                           atol=tol * np.abs(want[key]).max(), err_msg=key)
    start = networks(device)[0].get_parameters()[4]["weights"]
    assert not np.allclose(fused[0].get_parameters()[4]["weights"], start)  # it trained


def test_the_exchange_with_many_lanes(device64, monkeypatch):
    """The GPU form (16 lanes sharing each layer's work), run on PoCL: equal to rounding."""
    monkeypatch.setattr("grenade_py.fused.lanes", lambda device: 16)
    exchange, fused, plain, verdicts, expected = trained(device64, SGD(0.05), SGD(0.05), 10, 8)
    assert exchange.kernel((0, 0))[1] == 16
    np.testing.assert_allclose(verdicts, expected, rtol=1e-12)
    for got, want in zip(fused[1].get_parameters(), plain[1].get_parameters(), strict=True):
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-12,
                                       atol=1e-12 * np.abs(want[key]).max(), err_msg=key)


def test_networks_that_do_not_fit_are_refused(device64):
    d, g = networks(device64)
    with pytest.raises(ValueError, match="one verdict"):
        Exchange(g, d)
    elsewhere = networks(Device(precision="float64"))[1]
    with pytest.raises(ValueError, match=r"on one Device object \(each Network built without "
                       r"device= makes its own Device\)"):
        Exchange(d, elsewhere)
    dropout = Network([FullyConnected(4, 3), Dropout(0.5), FullyConnected(3, 1), Logit()],
                      input=D1(4), device=device64)
    with pytest.raises(GrenadeError, match=r"^Dropout 0.5: no device-side form, so the exchange "
                       "cannot run in one kernel; run it layer by layer$"):
        Exchange(dropout, Network([FullyConnected(2, 4), Tanh()], input=D1(2), device=device64))


def test_its_source_has_no_variadic_macros(device64, monkeypatch):
    """OpenCL C has no variadic macros: NVIDIA's compiler refuses the program (PoCL accepts it).
    Neither the library nor the exchange's generated passes may define one."""
    built = [kernel_source()]
    build = Device.build
    monkeypatch.setattr(Device, "build", lambda self, source: built.append(source) or build(
        self, source))
    trained(device64, SGD(0.05), AdamW(0.01), 2, 1)
    assert len(built) > 1
    assert [m for source in built for m in re.findall(r"#define\s+\w+\([^)]*\.\.\.", source)] == []
