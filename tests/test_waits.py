"""grenade_py.waits: the host's wait for a device's result, polling or blocking."""
from __future__ import annotations

import time

import numpy as np
import pyopencl as cl

from grenade_py import RecurrentNetwork, run_recurrent
from grenade_py.layers import LSTM, FullyConnected, Reshape
from grenade_py.shapes import D1, D3
from grenade_py.waits import POLLED_PARAMETERS, POLLED_WORK, poll, polls, read


def test_poll_returns_when_the_event_completes_or_the_time_is_up(device):
    """Polling returns at once for a completed event, and after the time given for one that
    has not completed (read's blocking wait then follows it)."""
    pending = cl.UserEvent(device.context)
    start = time.perf_counter()
    poll(pending, 0.05)
    assert time.perf_counter() - start >= 0.05
    assert pending.command_execution_status != cl.command_execution_status.COMPLETE
    pending.set_status(cl.command_execution_status.COMPLETE)
    start = time.perf_counter()
    poll(pending, 60)
    assert time.perf_counter() - start < 30


def test_read_gives_the_array_polling_or_not(device, rng):
    values = rng.normal(size=(3, 17)).astype(device.dtype)
    array = device.to_device(values)
    for polling in (True, False):
        out = np.empty_like(values)
        read(device.queue, out, array, polling)
        np.testing.assert_array_equal(out, values)
    cpu = not device.gpu and device.cl_device.max_compute_units > 1
    assert polls(device, 1, POLLED_PARAMETERS) == cpu
    assert polls(device, POLLED_WORK // POLLED_PARAMETERS, POLLED_PARAMETERS) == cpu
    assert not polls(device, POLLED_WORK // POLLED_PARAMETERS + 1, POLLED_PARAMETERS)
    assert not polls(device, 1, POLLED_PARAMETERS + 1)
    assert polls(device, 2, 1000, POLLED_WORK // 2) == cpu  # a convnet's rows: their work
    assert not polls(device, 3, 1000, POLLED_WORK // 2)


def test_a_rows_work_counts_each_convolution_kernel_at_each_position(device):
    """run_net's polling rule reads a row's multiply-adds: LeNet's, its convolutions' kernels
    (250 and 4,000 values) at their 24 x 24 and 8 x 8 outputs, and its FullyConnected layers'
    parameters; a Deconvolution's kernel at each position of its input; a nested network's
    layers once."""
    from grenade_py import Deconvolution, Network, Relu
    from grenade_py.mnist import mnist_network
    from grenade_py.waits import row_work

    assert row_work(mnist_network("lenet", device, seed=1)) == \
        250 * 24 * 24 + 4000 * 8 * 8 + 256 * 80 + 80 + 80 * 10 + 10
    inner = Network([FullyConnected(48, 5), Relu()], input=D1(48), device=device)
    net = Network([Deconvolution(2, 3, 2, 2, 1, 1), Reshape(D1(75)), FullyConnected(75, 48),
                   inner], input=D3(4, 4, 2), device=device)
    assert row_work(net) == 2 * 3 * 2 * 2 * 4 * 4 + 75 * 48 + 48 + 48 * 5 + 5


def test_run_recurrent_on_one_step_the_same_polling_or_blocking(device, rng, monkeypatch):
    """run_recurrent polls for one step of one sequence (a generated symbol's): the outputs
    and states of a run of single steps are those of the blocking wait."""
    from grenade_py import recurrent_runner

    net = RecurrentNetwork([LSTM(3, 5), FullyConnected(5, 2)], input=D1(3), device=device,
                           seed=1)
    xs = rng.normal(size=(6, 1, 3))
    runs = {}
    for polling in (True, False):
        monkeypatch.setattr(recurrent_runner, "polls", lambda *_, p=polling: p)
        state, outputs = None, []
        for x in xs:
            y, state = run_recurrent(net, x, state)
            outputs.append(y)
        runs[polling] = (np.array(outputs), state.get())
    np.testing.assert_array_equal(runs[True][0], runs[False][0])
    for a, b in zip(runs[True][1], runs[False][1], strict=True):
        np.testing.assert_array_equal(a, b)
    whole, _ = run_recurrent(net, xs[:, 0])  # the six steps as one sequence
    tol = 1e-5 if device.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(runs[True][0][:, 0], whole, rtol=tol, atol=tol)


def test_run_net_on_one_sample_through_the_kernels_the_same_polling_or_blocking(device, rng,
                                                                                monkeypatch):
    """run_net polls for one sample of a small network through the layers' kernels too (a
    network with a convolution keeps them: kernels_bits): the same outputs as blocking."""
    from grenade_py import Convolution, Network, Pooling, Relu, Reshape, run_net, runner
    from grenade_py.shapes import D2

    net = Network([Convolution(1, 2, 3, 3, 1, 1), Pooling(2, 2, 2, 2), Relu(), Reshape(),
                   FullyConnected(18, 3)], input=D2(8, 8), device=device, seed=1)
    xs = rng.normal(size=(4, 8, 8))
    outputs = {}
    for polling in (True, False):
        monkeypatch.setattr(runner, "polls", lambda *_, p=polling: p)
        outputs[polling] = [run_net(net, x) for x in xs]
    np.testing.assert_array_equal(np.array(outputs[True]), np.array(outputs[False]))
