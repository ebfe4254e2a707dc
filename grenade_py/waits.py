"""Waiting for a device's result from the host: by a blocking wait, or, where the work is one
row's and the device a CPU of several cores, by polling.

On PoCL 3.1 (a 2-core Ice Lake Xeon) a blocking wait returned ~60 us after its read was done:
the host thread's wake-up. Polling costs a core while it waits, which one row's work (the fused
one-sample loop: one work-group; one step of a recurrent network) leaves free.
"""
from __future__ import annotations

import time
from typing import cast

import numpy as np
import pyopencl as cl
import pyopencl.array as cl_array

from grenade_py.device import Device, buffer

#: How long `read` polls before it blocks, in seconds: longer than one row's work of a small
#: network (the MNIST MLP's one-sample pass: 50-100 us).
POLL_S = 0.002


def polls(device: Device) -> bool:
    """Whether a wait for one row's work on `device` polls: a CPU device of two or more cores."""
    return not device.gpu and device.cl_device.max_compute_units > 1


def poll(event: cl.Event, seconds: float) -> None:
    """Return once `event` has completed (or failed), or after `seconds` of asking."""
    deadline = time.perf_counter() + seconds
    status = cl.event_info.COMMAND_EXECUTION_STATUS
    while cast(int, event.get_info(status)) > 0 and time.perf_counter() < deadline:
        pass


def read(queue: cl.CommandQueue, out: np.ndarray, array: cl_array.Array, polling: bool) -> None:
    """Copy the device array `array` into the host array `out` (of its size) after the work
    queued before; with `polling`, waiting by `poll` for up to POLL_S first."""
    copied = cl.enqueue_copy(queue, out, buffer(array), is_blocking=False)
    if polling:
        queue.flush()
        poll(copied, POLL_S)
    copied.wait()
