"""Waiting for a device's result from the host: by a blocking wait, or, for a few rows' work of a
small network on a CPU of several cores (`polls`), by polling.

On PoCL 3.1 (a 2-core Ice Lake Xeon) a blocking wait returned ~60 us after its read was done:
the host thread's wake-up. Polling takes a core while it waits, which a few rows' work of a
small network leaves free (the fused one-sample loop is one work-group), and which a large
network's GEMMs would want (`POLLED_PARAMETERS`, `POLLED_WORK`). Used by run_net and
run_recurrent.
"""
from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, cast

import numpy as np
import pyopencl as cl
import pyopencl.array as cl_array

from grenade_py.device import Device, buffer
from grenade_py.layers import Convolution

if TYPE_CHECKING:
    from grenade_py.network import Network

#: How long `read` polls before it blocks, in seconds: longer than one row's work of a small
#: network (the MNIST MLP's one-sample pass: 50-100 us).
POLL_S = 0.002


#: The most parameters a network whose one row's work is polled for may have. One sample
#: through the layers' kernels on the 2-core Ice Lake Xeon, taking turns, blocking -> polling
#: (us): LeNet 184 -> 139, the bn network 264 -> 197, InceptionMini 540 -> 545; but MLPs of two
#: 1024 x 1024 layers (2.1 M parameters) 623 -> 745 and of 4096 x 4096 8,556 -> 9,400, whose
#: GEMMs keep both cores busy while the host polls.
POLLED_PARAMETERS = 1 << 20


#: The most multiply-adds (rows x a row's) of work that is polled for: a few rows of a small
#: network. run_net on a 2-core AVX-512 EPYC, blocking -> polling (us): MLPs 300-10 at 4, 16
#: and 64 rows 57 -> 37, 64 -> 37, 82 -> 45; 784-100-10 at 4 and 16 81 -> 44, 107 -> 68;
#: 784-512-10 at 4 116 -> 60 (1.6 M multiply-adds), but at 16 (6.5 M) 159 -> 174 and at 64
#: 400 -> 580, the host's core taken from the GEMMs.
POLLED_WORK = 1 << 22


def polls(device: Device, rows: int, parameters: int, work: int | None = None) -> bool:
    """Whether a wait for `rows` rows' work of a network of `parameters` parameters, `work`
    multiply-adds a row (default: its parameters, a FullyConnected network's), on `device`
    polls: at most POLLED_PARAMETERS, at most POLLED_WORK multiply-adds in all, a CPU device of
    two or more cores."""
    return parameters <= POLLED_PARAMETERS and rows * (work or parameters) <= POLLED_WORK and \
        not device.gpu and device.cl_device.max_compute_units > 1


def row_work(net: Network) -> int:
    """About the multiply-adds of one row's forward pass of `net` (run_net's `polls` reads it):
    each layer's parameters, a convolution's kernel once for each position of its output (a
    deconvolution's, of its input). Held on the network."""
    if "row work" not in net.held:
        work = 0
        for _, layer, shape in net.nodes(net.input_shape):
            if not layer.children(shape):
                size = sum(math.prod(dims) for dims in layer.parameter_shapes().values())
                if isinstance(layer, Convolution):  # (a Deconvolution is one: geometry's
                    # last two are then its input's plane)
                    size *= math.prod(layer.geometry()[8:])
                work += size
        net.held["row work"] = max(1, work)
    return int(net.held["row work"])


def poll(event: cl.Event, seconds: float) -> None:
    """Return once `event` has completed (or failed), or after `seconds` of asking."""
    deadline = time.perf_counter() + seconds
    status = cl.event_info.COMMAND_EXECUTION_STATUS
    while cast(int, event.get_info(status)) > 0 and time.perf_counter() < deadline:
        pass


def read(queue: cl.CommandQueue, out: np.ndarray, array: cl_array.Array, polling: bool) -> None:
    """Copy the device array `array` into the host array `out` (of its size) after the work
    queued before; with `polling`, waiting by `poll` for up to POLL_S first."""
    wait(queue, cl.enqueue_copy(queue, out, buffer(array), is_blocking=False), polling)


def wait(queue: cl.CommandQueue, event: cl.Event, polling: bool) -> None:
    """Return once `event` (of `queue`) has completed; with `polling`, asking by `poll` for up
    to POLL_S before a blocking wait."""
    if polling:
        queue.flush()
        poll(event, POLL_S)
    event.wait()
