"""The host's memory: how much is available, the check before a large host allocation, and
transparent huge pages for buffers about to be filled."""
from __future__ import annotations

import ctypes
import re

import numpy as np

from grenade_py.errors import DeviceError


def size_text(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB" if nbytes >= 2**20 else f"{nbytes} bytes"


_MEM_AVAILABLE = re.compile(rb"^MemAvailable:\s*(\d+) kB", re.MULTILINE)


def host_available() -> int | None:
    """Bytes of host memory available (Linux's MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo", "rb") as f:
            found = _MEM_AVAILABLE.search(f.read())
    except OSError:
        return None
    return int(found.group(1)) * 1024 if found else None


#: check_host_memory leaves out requests below this many bytes (it reads /proc/meminfo:
#: 15-50 us, a tenth of a one-sample run_net).
HOST_CHECKED = 1 << 20


def check_host_memory(what: str, nbytes: int) -> None:
    """DeviceError, before anything is allocated, if `nbytes` (HOST_CHECKED or more) of host
    memory for `what` are more than the host has available (a huge array would be granted,
    then the process killed when it is filled)."""
    if nbytes < HOST_CHECKED:
        return
    available = host_available()
    if available is not None and nbytes > available:
        raise DeviceError(f"{what} need {size_text(nbytes)} of host memory, more than the "
                          f"{size_text(available)} available: use fewer samples at a time")


def huge_pages(array: np.ndarray) -> None:
    """Ask Linux to back the 2 MiB pages that lie wholly inside `array`'s memory with
    transparent huge pages (madvise MADV_HUGEPAGE; numpy does so for its own large arrays),
    before anything touches them: one page fault per 2 MiB instead of per 4 KiB. Advice only:
    where it is refused or unknown, nothing changes."""
    start = -(-array.ctypes.data // HUGE_PAGE) * HUGE_PAGE
    end = (array.ctypes.data + array.nbytes) // HUGE_PAGE * HUGE_PAGE
    if end > start and _LIBC is not None:
        _LIBC.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_HUGEPAGE)


#: Bytes in a transparent huge page on x86-64, and madvise's advice for them.
HUGE_PAGE, _MADV_HUGEPAGE = 1 << 21, 14
_LIBC: ctypes.CDLL | None
try:
    _LIBC = ctypes.CDLL(None)
    _LIBC.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
except (OSError, AttributeError):
    _LIBC = None
