"""The OpenCL device a network lives on: context, queue, precision and the compiled programs.

Every kernel source in `kernels/*.cl` is written against a `REAL` macro; a Device builds the
whole kernel library once per (context, precision) with `-DREAL=float` or `-DREAL=double` and
keeps it, together with programs generated from it (the fused training loop). Finding a
device is `grenade_py.platforms`'s; the library's source, `grenade_py.kernel_library`'s.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import numpy as np
import pyopencl as cl
import pyopencl.array as cl_array

from grenade_py.errors import DeviceError, KernelBuildError
from grenade_py.host_memory import host_available, huge_pages, size_text
from grenade_py.kernel_library import kernel_source
from grenade_py.platforms import (
    check_compiler,
    choose_cl_device,
    compile_program,
    flushes_denormals,
    generic_cpu_note,
)

PRECISIONS = {"float32": ("float", np.float32), "float64": ("double", np.float64)}

#: Build options by precision. float32 flushes denormal values to zero (as GPUs do): saturated
#: sigmoids and their deltas reach them, and x86 computes on them 3-4x slower (measured on an
#: LSTM with Grenade's initialisation); except on the PoCLs where the option costs far more
#: (`platforms.flushes_denormals`). float64 keeps them: it is the precision that checks
#: results against numpy to the last digit.
DENORMALS = {"float": ["-cl-denorms-are-zero"], "double": []}

GEMM_FORMS = ("auto", "registers", "tiled")

#: Programs a Device keeps besides the kernel library, the most recently asked for (each new
#: architecture's fused loops are programs of their own: 120 networks built, trained and dropped
#: in turn left 243 kept, and the process's memory grew from 161 to 543 MiB on PoCL; built again
#: from the driver's cache on disk, one takes 30-50 ms there).
PROGRAMS_KEPT = 32


class Device:
    """An OpenCL context and in-order queue on one device, with a working precision.

    Parameters:
        spec: `"PLATFORM:DEVICE"` indices (see `python -m grenade_py.devices`); default: the
            `PYOPENCL_CTX` environment variable if set, else the first GPU, else PoCL's CPU device.
        precision: `"float32"` (default) or `"float64"` (needs a device with fp64).
    """

    def __init__(self, spec: str | None = None, precision: str = "float32",
                 gemm: str = "auto") -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        if gemm not in GEMM_FORMS:
            raise ValueError(f"gemm must be one of {GEMM_FORMS}, got {gemm!r}")
        self.cl_device = choose_cl_device(spec)
        if generic_cpu_note(self.cl_device):
            check_compiler(self.cl_device)
        if precision == "float64" and not self.cl_device.double_fp_config:
            raise DeviceError(
                f"{self.cl_device.name} has no float64 support; use precision='float32'"
            )
        self.precision = precision
        self.c_type, self.dtype = PRECISIONS[precision]
        self.context = cl.Context([self.cl_device])
        self.queue = cl.CommandQueue(self.context)
        #: The largest buffer the device allocates, in bytes.
        self.max_alloc = int(self.cl_device.max_mem_alloc_size)
        self.gpu = not self.cl_device.type & cl.device_type.CPU
        #: A CPU whose vectors hold fewer than 16 floats (AVX2, no AVX-512): its GEMM blocks
        #: and the dot forms' vectors (DOT_VW in kernels/gemm.cl) are chosen for 256-bit
        #: registers.
        self.narrow = not self.gpu and self.cl_device.native_vector_width_float < 16
        #: How batched GEMMs run: "registers" (register-blocked, for CPUs) or "tiled" (local
        #: memory tiles, for GPUs); "auto" picks by the device's type.
        self.gemm = gemm if gemm != "auto" else ("tiled" if self.gpu else "registers")
        self._programs: dict[str, cl.Program] = {}
        self._library: cl.Program | None = None

    @property
    def name(self) -> str:
        d = self.cl_device
        return f"{d.name.strip()} on {d.platform.name.strip()} ({self.precision})"

    def __repr__(self) -> str:
        return f"Device({self.name})"

    def __copy__(self) -> Device:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Device:
        """A Device is a handle on the hardware: copies of what holds one (a deep copy of a
        network, of a user's object holding a network and its device) share it."""
        return self

    def build(self, source: str) -> cl.Program:
        """Compile `source` (prefixed by the REAL prelude) once per device; cached by its text,
        the last PROGRAMS_KEPT asked for (what uses a program holds it)."""
        return recent(self._programs, hashlib.sha1(source.encode()).hexdigest(),
                      lambda: self._compile(source), PROGRAMS_KEPT)

    def _compile(self, source: str) -> cl.Program:
        prelude = "".join(f"#define REAL{w} {self.c_type}{w}\n" for w in (2, 4, 8))
        if self.narrow:  # one 256-bit register
            prelude += f"#define DOT_VW {32 // np.dtype(self.dtype).itemsize}\n"
        prelude += (
            "#pragma OPENCL EXTENSION cl_khr_fp64 : enable\n#define REAL_IS_DOUBLE 1\n"
            if self.c_type == "double" else "")
        # -w: on AVX2 PoCL's compiler notes each 16-lane vector argument's ABI (harmless), as
        # "99 warnings generated." on stderr
        program = compile_program(self.context, self.cl_device, prelude + source, [
            f"-DREAL={self.c_type}", "-cl-std=CL1.2", "-w",
            *(DENORMALS[self.c_type] if flushes_denormals(self.cl_device) else [])])
        if self._library is None and source.startswith(kernel_source()):
            self._library = program  # it holds every library kernel: no second build
        return program

    @property
    def library(self) -> cl.Program:
        """The kernel library: every `kernels/*.cl` file, built once (or any program built
        from the whole library plus more, such as a fused training loop)."""
        return self._library or self.build(kernel_source())

    def kernel(self, name: str, program: cl.Program | None = None) -> cl.Kernel:
        """A new kernel object for `name`. Each user keeps its own, so its arguments can be set
        once and stay set."""
        try:
            return cl.Kernel(program or self.library, name)
        except cl.LogicError:
            raise KernelBuildError(f"no kernel {name!r} in the program") from None

    def check_allocation(self, what: str, nbytes: int) -> None:
        """DeviceError unless one buffer of `nbytes` fits the device's allocation limit, and
        its elements the kernels' 32-bit indices."""
        limit = self.max_alloc
        if nbytes > limit or nbytes // np.dtype(self.dtype).itemsize >= 2**31:
            raise DeviceError(
                f"{what} need a buffer of {size_text(nbytes)}, more than "
                f"{self.cl_device.name.strip()} allows in one buffer ({size_text(limit)}, and "
                f"fewer than 2**31 values): use a smaller batch or layer")

    @property
    def alignment(self) -> int:
        """Values (of this precision) to which a sub-buffer's offset must be aligned."""
        return max(1, self.cl_device.mem_base_addr_align // 8 // np.dtype(self.dtype).itemsize)

    def memory(self) -> int:
        """Bytes that buffers may take in all: the device's global memory, and on a CPU
        device (whose buffers are host memory) no more than the host has available."""
        limit = int(self.cl_device.global_mem_size)
        available = host_available()
        if not self.gpu and available is not None:
            limit = min(limit, available)
        return limit

    def allocate(self, what: str, shapes: dict[str, tuple[int, ...]]
                 ) -> dict[str, cl_array.Array]:
        """New zeroed arrays of these shapes, by name, once each fits `check_allocation` and
        all of them together `memory()` (DeviceError naming `what` otherwise, before anything
        is allocated: PoCL aborts the process when its allocations fail)."""
        itemsize = np.dtype(self.dtype).itemsize
        sizes = {name: int(np.prod(shape)) * itemsize for name, shape in shapes.items()}
        for name, nbytes in sizes.items():
            self.check_allocation(f"{what} ({name})", nbytes)
        limit = self.memory()
        if sum(sizes.values()) > limit:
            raise DeviceError(f"{what} need {size_text(sum(sizes.values()))} of buffers in all, "
                              f"more than the {size_text(limit)} {self.cl_device.name.strip()} "
                              "has free: use a smaller batch or layer")
        return {name: self.zeros(shape) for name, shape in shapes.items()}

    def to_device(self, array: np.ndarray, what: str = "the data") -> cl_array.Array:
        """Copy a host array to a new device array of this device's precision. On a CPU
        device, whose buffers are host memory that this copy touches first, the buffer is
        mapped and given transparent huge pages (`huge_pages`) before the values are converted
        into it: one page fault per 2 MiB instead of per 4 KiB, which cost a fresh buffer 4-5x
        its copy (75 MB, MNIST's 24k images: 13-17 ms instead of 51-85 on PoCL 3.1). A GPU's
        copy goes through the driver's staging, as pyopencl's to_device does it."""
        self.check_allocation(what, array.size * np.dtype(self.dtype).itemsize)
        if self.gpu:
            return cl_array.to_device(self.queue, np.asarray(array, self.dtype, order="C"))
        out = cl_array.empty(self.queue, array.shape, self.dtype)
        if out.size:
            mapped, _ = cl.enqueue_map_buffer(self.queue, buffer(out),
                                              cl.map_flags.WRITE_INVALIDATE_REGION, 0,
                                              out.shape, out.dtype)
            try:
                huge_pages(mapped)
                np.copyto(mapped, array, casting="unsafe")
            finally:
                mapped.base.release(self.queue)
        return out

    def zeros(self, shape: tuple[int, ...]) -> cl_array.Array:
        """A new device array of zeros in this device's precision."""
        return cl_array.zeros(self.queue, shape, self.dtype)

    def local_size(self, kernel: cl.Kernel, dims: int) -> tuple[int, ...]:
        """The work-group shape of every launch of `dims` dimensions: fixed, so that a new
        batch size reuses the kernels built for the last one (PoCL builds a kernel anew for
        each work-group shape, 0.1-1.2 s each, which a driver-chosen shape would vary with the
        global size). CPUs: (64,) and (64, 1, ...): PoCL vectorises along dimension 0, where
        the kernels keep their longest contiguous axis, or a kernel's work_group_size_hint
        (the STREAMING ones'); GPUs: (128,) and (32, 4); both within the kernel's own limit."""
        gpu = self.gpu
        shape = [128 if gpu else 64] if dims == 1 else [32, 4] if gpu else [64, 1]
        if not gpu and dims == 1:  # STREAMING kernels (kernels/gemm.cl)
            try:
                hint = _SIZE_HINT.search(str(kernel.get_info(cl.kernel_info.ATTRIBUTES)))
            except (cl.Error, UnicodeDecodeError, RuntimeError):  # Oclgrind's attributes are
                # not text (pyopencl 2025.1 raised std::bad_cast as a RuntimeError)
                hint = None
            if hint:
                shape = [int(hint[1])]
        shape += [1] * (dims - len(shape))
        limit = kernel.get_work_group_info(cl.kernel_work_group_info.WORK_GROUP_SIZE,
                                           self.cl_device)
        while int(np.prod(shape)) > limit:
            shape[int(np.argmax(shape))] //= 2
        return tuple(shape)

    def launch(self, name: str, global_size: tuple[int, ...], *args: Any,
               program: cl.Program | None = None, local: tuple[int, ...] | None = None,
               per_call: dict[str, int] | None = None) -> Launch:
        """A kernel with its arguments set once, ready to enqueue many times; `local`: the
        work-group shape a kernel needs (default: `local_size`); `per_call`: the arguments,
        by index, that its caller gives on each call (`Launch.set`), by name."""
        kernel = self.kernel(name, program)
        if local is not None:
            limit = kernel.get_work_group_info(cl.kernel_work_group_info.WORK_GROUP_SIZE,
                                               self.cl_device)
            if int(np.prod(local)) > limit:
                raise DeviceError(f"{name} needs work-groups of {local} but {self.name} runs at "
                                  f"most {limit} work-items of it; open the device with "
                                  "gemm='registers'")
        return Launch(self, kernel, global_size, args, local, per_call)


#: A kernel's work_group_size_hint attribute, as OpenCL reports it (its first size).
_SIZE_HINT = re.compile(r"work_group_size_hint\(\s*(\d+)")


K = TypeVar("K")
V = TypeVar("V")


def recent(kept: dict[K, V], key: K, make: Callable[[], V], limit: int) -> V:
    """kept[key], made by `make()` if it is not there, now the most recently used (kept in
    that order, the most recent last); past `limit` entries the least recently used are let
    go of (whatever uses one holds it)."""
    value = kept.pop(key) if key in kept else make()
    kept[key] = value
    while len(kept) > limit:
        del kept[next(iter(kept))]
    return value


def buffer(array: cl_array.Array) -> cl.Buffer:
    """The OpenCL buffer behind a device array (pyopencl's stubs type `.data` as optional),
    which must be contiguous from the buffer's start (see `rows` for views of rows)."""
    if not array.flags.c_contiguous:
        raise ValueError("a kernel that reads contiguous arrays was given a view of rows")
    return cast(cl.Buffer, array.data)


def rows(array: cl_array.Array) -> tuple[cl.Buffer, int, int]:
    """The buffer behind `array`, the index of its first value there and the values from one
    row (along axis 0) to the next: a contiguous array's, or a view of some columns of a wider
    buffer's rows (`columns`), for the kernels that take such (a Concat's branch writing its
    output in place)."""
    size = array.dtype.itemsize
    return cast(cl.Buffer, array.base_data), array.offset // size, array.strides[0] // size


def columns(array: cl_array.Array, wy: int, at: int, width: int) -> cl_array.Array:
    """Columns at .. at + width - 1 of the rows of `array`'s buffer taken as rows of wy
    values (as many rows as `array` has), as a view (rows, width)."""
    data, first, _ = rows(array)
    return cl_array.Array(array.queue, (array.shape[0], width), array.dtype,
                          strides=(wy * array.dtype.itemsize, array.dtype.itemsize), data=data,
                          offset=(first + at) * array.dtype.itemsize)


def _arg(value: Any) -> Any:
    if isinstance(value, cl_array.Array):
        return buffer(value)
    if isinstance(value, (bool, int)):
        return np.int32(value)
    return value


def streaming_size(count: int, rows: int = 1) -> tuple[int]:
    """The global size of a STREAMING kernel over `count` values: one work-item per 8
    (kernels/gemm.cl's STREAMING_EACH); over `rows` rows of `count` values, one per run of 8
    of a row, a row's last run shorter (BatchNorm's element-wise kernels, concat_rows)."""
    return (rows * -(-count // 8),)


class Launch:
    """One kernel over a fixed global size, arguments set at construction (≈2 µs to enqueue on
    PoCL, against ≈12 µs when they are passed on every call)."""

    __slots__ = ("queue", "kernel", "global_size", "local_size", "args", "name", "per_call",
                 "given")

    def __init__(self, device: Device, kernel: cl.Kernel, global_size: tuple[int, ...],
                 args: tuple[Any, ...], local: tuple[int, ...] | None = None,
                 per_call: dict[str, int] | None = None) -> None:
        self.queue = device.queue
        self.kernel = kernel
        self.local_size = local or device.local_size(kernel, len(global_size))
        # Rounded up to whole work-groups; every kernel ignores the items past its sizes.
        self.global_size = tuple(-(-g // size) * size
                                 for g, size in zip(global_size, self.local_size, strict=True))
        self.args = list(args)  # keeps the buffers alive as long as the launch can run
        self.name = f"{kernel.function_name} on {device.name}"
        kernel.set_args(*(_arg(a) for a in args))
        #: Arguments its caller sets on each call, by name: their indices.
        self.per_call = per_call or {}
        #: The values `set` was last given, by name (what they are, before conversion).
        self.given: dict[str, Any] = {}

    def set_arg(self, index: int, value: Any) -> None:
        """Set argument `index`, unless it holds that value already (setting one costs ~15 us
        on PoCL: a step's launches mostly keep theirs)."""
        self.given.clear()
        self._store(index, value)

    def _store(self, index: int, value: Any) -> None:
        old = self.args[index]
        if old is value or (type(old) is type(value) and isinstance(value, (int, np.generic))
                            and old == value):
            return
        self.args[index] = value
        try:
            self.kernel.set_arg(index, _arg(value))
        except TypeError:  # None (a NULL buffer), which pyopencl 2024.3's set_arg refuses and
            if value is not None:  # its set_args takes (slower: the fused loop's release, four
                raise  # Nones among its 100 arguments, took 155 us more that way)
            self.kernel.set_args(*(_arg(a) for a in self.args))

    def set(self, name: str, value: Any) -> None:
        """Set the per-call argument `name`, of the type the kernel declares."""
        given = self.given.get(name, self)  # self: nothing given yet
        if given is value or (type(given) is type(value) and isinstance(value, (int, float))
                              and given == value):
            return
        index = self.per_call[name]
        old = self.args[index]
        self._store(index, type(old)(value) if isinstance(old, np.generic) else value)
        self.given[name] = value

    def set_all(self, values: dict[str, Any]) -> None:
        """Set per-call arguments by name (`set` for each)."""
        for name, value in values.items():
            self.set(name, value)

    def adopt(self, other: Launch) -> None:
        """Run as `other` runs from now on (its kernel, sizes and arguments), wherever this
        launch is held: how the tuner tries a block inside a training step."""
        for slot in Launch.__slots__:
            setattr(self, slot, getattr(other, slot))

    def __call__(self) -> cl.Event:
        try:
            return cl.enqueue_nd_range_kernel(self.queue, self.kernel, self.global_size,
                                              self.local_size)
        except cl.Error as e:
            raise DeviceError(f"OpenCL could not run {self.name} over {self.global_size}: "
                              f"{e}") from None


F = TypeVar("F", bound=Callable[..., Any])


def opencl_errors(func: F) -> F:
    """Decorate a function so that an OpenCL error inside it is a DeviceError naming it."""
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with named_errors(f"{func.__name__.replace('_', ' ')}"):
            return func(*args, **kwargs)

    return cast(F, wrapper)


@contextlib.contextmanager
def named_errors(what: str) -> Iterator[None]:
    """Turn an OpenCL error inside into a DeviceError saying what was being done."""
    try:
        yield
    except cl.Error as e:
        raise DeviceError(f"OpenCL failed to {what}: {e}") from None
