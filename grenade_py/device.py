"""The OpenCL device a network lives on: context, queue, precision and the compiled programs.

Every kernel source in `kernels/*.cl` is written against a `REAL` macro; a Device builds the
whole kernel library once per (context, precision) with `-DREAL=float` or `-DREAL=double` and
keeps it, together with programs generated from it (the fused training loop).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import pyopencl as cl
import pyopencl.array as cl_array

from grenade_py.errors import DeviceError, KernelBuildError

PRECISIONS = {"float32": ("float", np.float32), "float64": ("double", np.float64)}

INSTALL_HINT = (
    "Install an OpenCL driver: `pip install pocl-binary-distribution` gives a CPU device on "
    "Linux x86-64; elsewhere install your GPU vendor's OpenCL driver or PoCL (e.g. "
    "`apt install pocl-opencl-icd`)."
)


#: Build options by precision. float32 flushes denormal values to zero (as GPUs do): saturated
#: sigmoids and their deltas reach them, and x86 computes on them 3-4x slower (measured on an
#: LSTM with Grenade's initialisation). float64 keeps them: it is the precision that checks
#: results against numpy to the last digit.
DENORMALS = {"float": ["-cl-denorms-are-zero"], "double": []}


def kernel_dir() -> Path:
    """The folder holding the `.cl` sources: the installed `grenade_py.kernels` package, or the
    source tree's top-level `kernels/` folder in an editable checkout."""
    try:
        installed = Path(str(resources.files("grenade_py.kernels")))
        if any(installed.glob("*.cl")):
            return installed
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parent.parent / "kernels"


#: The kernel files that define what the others use, in this order (gemm.cl: the vector type
#: and sums; activations.cl: the activations' functions; optimizers.cl: the optimisers' rules;
#: loss.cl: the loss gradient; convolution.cl: the windows covering a pixel, for pooling). The
#: others follow in any order.
FOUNDATIONS = ("gemm.cl", "activations.cl", "optimizers.cl", "loss.cl", "convolution.cl")


@functools.lru_cache(maxsize=1)
def kernel_source() -> str:
    """All `.cl` files of the kernel library, concatenated: FOUNDATIONS first, then the rest
    (by name, though any order compiles)."""
    found = {f.name: f for f in kernel_dir().glob("*.cl")}
    if not set(FOUNDATIONS) <= set(found):
        raise DeviceError(f"the OpenCL kernel sources in {kernel_dir()} are incomplete "
                          f"(need {', '.join(FOUNDATIONS)}); reinstall grenade_py")
    rest = sorted(set(found) - set(FOUNDATIONS))
    return "\n".join(f"// ---- {name}\n{instantiate(found[name].read_text())}"
                     for name in (*FOUNDATIONS, *rest))


_TEMPLATE = re.compile(r"^// template ((?:\$\w+ ?)+): ([^\n]+)\n(.*?)^// end template\n",
                       re.DOTALL | re.MULTILINE)


def instantiate(text: str) -> str:
    """The kernel file with each template block written out once per instance: a block opened
    by `// template $RM $RN: 8 2, 4 4` and closed by `// end template` becomes two copies, with
    $RM and $RN replaced by 8 and 2 in the first, by 4 and 4 in the second. (Register blocks
    as literal constants: the same code written as an inlined function of constant arguments
    ran 1.2x slower on PoCL.)"""
    def expand(match: re.Match[str]) -> str:
        names = match[1].split()
        copies = []
        for instance in match[2].split(","):
            body = match[3]
            for name, value in zip(names, instance.split(), strict=True):
                body = body.replace(name, value)
            copies.append(body)
        return "".join(copies)
    return _TEMPLATE.sub(expand, text)


def _pocl_cache_hint() -> str:
    """Why PoCL may offer nothing: it offers no device when it cannot write its kernel cache."""
    try:
        cache = Path(os.environ.get("POCL_CACHE_DIR") or Path(
            os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pocl" / "kcache")
    except RuntimeError:  # no home folder at all
        return " PoCL needs a kernel cache folder: set POCL_CACHE_DIR to a writable folder."
    existing = cache
    try:
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if existing.is_dir() and os.access(existing, os.W_OK):
            return ""
    except OSError:  # a folder on the way cannot be read (an unreadable HOME)
        pass
    return (f" PoCL offers no device when it cannot write its kernel cache, and {cache} cannot "
            "be created or written: set POCL_CACHE_DIR to a writable folder.")


def _remedy() -> str:
    return _pocl_cache_hint() or " " + INSTALL_HINT


def _platforms() -> list[cl.Platform]:
    try:
        platforms = cl.get_platforms()
    except cl.Error as e:  # the ICD loader raises when it finds no platform at all
        raise DeviceError(f"no OpenCL platform found ({e}).{_remedy()}") from None
    if not platforms:
        raise DeviceError(f"no OpenCL platform found.{_remedy()}")
    return platforms


def _pocl_version(device: cl.Device) -> tuple[int, ...]:
    """PoCL's version from its platform version ("OpenCL 3.0 PoCL 3.1+debian ..." -> (3, 1))."""
    match = re.search(r"PoCL (\d+)\.(\d+)", device.platform.version)
    return tuple(int(g) for g in match.groups()) if match else (0,)


def _default_cl_device() -> cl.Device:
    """First GPU of any platform, else the newest PoCL's CPU device, else any device.

    The newest PoCL first: pocl-binary-distribution's PoCL 3.0 (LLVM 14) cannot compile for CPUs
    newer than its LLVM ("unknown target CPU 'generic'"), where a distribution's PoCL can.
    """
    devices = [d for p in _platforms() for d in p.get_devices()]
    if not devices:
        raise DeviceError(f"OpenCL platforms exist but offer no device.{_remedy()}")
    gpus = [d for d in devices if d.type & cl.device_type.GPU]
    pocl = sorted((d for d in devices if "portable computing language" in d.platform.name.lower()),
                  key=_pocl_version, reverse=True)
    return (gpus or pocl or devices)[0]


def _device_from_spec(spec: str) -> cl.Device:
    """The device a `PLATFORM:DEVICE` string names, read as pyopencl reads PYOPENCL_CTX: each
    part an index (as listed by `grenade_py.devices`) or a substring of the name."""
    _platforms()
    try:
        return cl.choose_devices(interactive=False, answers=spec.split(":"))[0]
    except (RuntimeError, cl.Error):
        raise DeviceError(
            f"no OpenCL device {spec!r}: give PLATFORM:DEVICE indices (or parts of the names) "
            "as listed by `python -m grenade_py.devices`"
        ) from None


GEMM_FORMS = ("auto", "registers", "tiled")


def gemm_tiles(device: cl.Device, itemsize: int) -> tuple[int, int, int, int, int]:
    """The largest tiled-GEMM shape (tile rows = columns, depth, outputs per work-item each way)
    whose work-group and local memory the device has: 64 x 64 tiles of 4 x 4 per work-item (256
    work-items, 16 accumulators: well within a GPU thread's registers) down to 8 x 8."""
    for tile, depth, per_item in ((64, 16, 4), (32, 16, 4), (16, 8, 2), (8, 8, 2)):
        items = (tile // per_item) ** 2
        if items <= device.max_work_group_size and \
                2 * tile * depth * itemsize <= device.local_mem_size:
            return tile, tile, depth, per_item, per_item
    return 8, 8, 8, 2, 2


def generic_cpu_note(device: cl.Device) -> str:
    """A warning for a PoCL CPU device compiled for a generic CPU, else "". PoCL names a CPU
    device `pthread-<LLVM cpu>-<model>`; pip's PoCL 3.0 (LLVM 14) knows no newer CPU than its
    LLVM and leaves the LLVM cpu out (no AVX-512: the MNIST MLP ran 2.15x slower). No setting
    of that PoCL changes its target; a PoCL with a newer LLVM does."""
    if "portable computing language" not in device.platform.name.lower():
        return ""
    if re.match(r"(pthread|cpu)-(?!generic-)[a-z0-9_.]+(-[a-z0-9_.]+)*-", device.name):
        return ""
    return ("compiled for a generic CPU by this PoCL (no AVX-512/AVX2: slower); "
            "`apt install pocl-opencl-icd` gives one that targets this CPU")


def device_spec(device: cl.Device) -> str:
    """The PLATFORM:DEVICE index string of an OpenCL device."""
    for p, platform in enumerate(_platforms()):
        for d, candidate in enumerate(platform.get_devices()):
            if candidate == device:
                return f"{p}:{d}"
    raise DeviceError(f"{device.name.strip()} is not among the platforms' devices")


def cache_folder() -> Path:
    """grenade_py's folder in the user's cache ($XDG_CACHE_HOME or ~/.cache): what it learns
    about a device (compilers.json, tuned.json)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "grenade_py"


def check_compiler(device: cl.Device) -> None:
    """DeviceError unless grenade_py's kernels build and run on `device`, tried once (the
    verdict is kept in the user's cache folder) in a child process (grenade_py.probe) with a
    kernel cache of its own: pip's PoCL 3.0 compiles for a generic CPU on CPUs newer than its
    LLVM 14, which aborts the process on some of our kernels (and leaves broken entries in
    PoCL's cache). Skipped inside the probe itself."""
    if os.environ.get("GRENADE_PY_PROBING"):
        return
    platform = device.platform
    key = hashlib.sha1("|".join([platform.version, device.name, device.driver_version,
                                 kernel_source()]).encode()).hexdigest()
    folder = cache_folder()
    record = folder / "compilers.json"
    try:
        verdicts = json.loads(record.read_text())
    except (OSError, ValueError):
        verdicts = {}
    if key not in verdicts:
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "GRENADE_PY_PROBING": "1", "POCL_CACHE_DIR": cache}
            try:
                child = subprocess.run([sys.executable, "-m", "grenade_py.probe",
                                        device_spec(device)], env=env, capture_output=True,
                                       timeout=600)
                verdicts[key] = child.returncode == 0
            except subprocess.TimeoutExpired:
                verdicts[key] = False
        with contextlib.suppress(OSError):
            folder.mkdir(parents=True, exist_ok=True)
            record.write_text(json.dumps(verdicts))
    if not verdicts[key]:
        raise DeviceError(
            f"{device.name.strip()} on {platform.version.strip()} crashes on grenade_py's "
            "kernels on this CPU (a PoCL whose LLVM compiles for a generic CPU): `apt install "
            "pocl-opencl-icd` gives a PoCL that runs them (Debian/Ubuntu), or choose another "
            "device with --device (python -m grenade_py.devices)")


def choose_cl_device(spec: str | None = None) -> cl.Device:
    """The device `spec` names; without one, PYOPENCL_CTX's, else the default device."""
    spec = spec if spec is not None else os.environ.get("PYOPENCL_CTX") or None
    return _device_from_spec(spec) if spec else _default_cl_device()


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
        #: How batched GEMMs run: "registers" (register-blocked, for CPUs) or "tiled" (local
        #: memory tiles, for GPUs); "auto" picks by the device's type.
        self.gemm = gemm if gemm != "auto" else ("tiled" if self.gpu else "registers")
        #: The tiled GEMMs' shape: tile rows, columns, depth, outputs per work-item (rows, cols).
        self.tiles = gemm_tiles(self.cl_device, np.dtype(self.dtype).itemsize)
        self._programs: dict[str, cl.Program] = {}
        self._library: cl.Program | None = None

    @property
    def name(self) -> str:
        d = self.cl_device
        return f"{d.name.strip()} on {d.platform.name.strip()} ({self.precision})"

    def __repr__(self) -> str:
        return f"Device({self.name})"

    def build(self, source: str) -> cl.Program:
        """Compile `source` (prefixed by the REAL prelude) once per device; cached by its text."""
        key = hashlib.sha1(source.encode()).hexdigest()
        program = self._programs.get(key)
        if program is None:
            tiles = dict(zip(("TM", "TN", "TK", "WM", "WN"), self.tiles, strict=True))
            prelude = "".join(f"#define GEMM_{k} {v}\n" for k, v in tiles.items())
            prelude += "".join(f"#define REAL{w} {self.c_type}{w}\n" for w in (2, 4, 8))
            prelude += (
                "#pragma OPENCL EXTENSION cl_khr_fp64 : enable\n#define REAL_IS_DOUBLE 1\n"
                if self.c_type == "double" else "")
            try:
                with warnings.catch_warnings():  # PoCL prints harmless build notes as warnings
                    warnings.simplefilter("ignore", cl.CompilerWarning)
                    program = cl.Program(self.context, prelude + source).build(
                        options=[f"-DREAL={self.c_type}", "-cl-std=CL1.2", *DENORMALS[self.c_type]]
                    )
            except cl.RuntimeError as e:
                hint = ""
                if "unknown target CPU" in str(e):
                    hint = ("\nThis PoCL's LLVM does not know this CPU. Install a newer PoCL (on "
                            "Debian/Ubuntu: `apt install pocl-opencl-icd`) or pick another device "
                            "(`python -m grenade_py.devices`).")
                raise KernelBuildError(f"OpenCL build failed on {self.name}:\n{e}{hint}") from None
            self._programs[key] = program
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
                f"{what} need a buffer of {_size(nbytes)}, more than "
                f"{self.cl_device.name.strip()} allows in one buffer ({_size(limit)}, and fewer "
                f"than 2**31 values): use a smaller batch or layer")

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
            raise DeviceError(f"{what} need {_size(sum(sizes.values()))} of buffers in all, "
                              f"more than the {_size(limit)} {self.cl_device.name.strip()} "
                              "has free: use a smaller batch or layer")
        return {name: self.zeros(shape) for name, shape in shapes.items()}

    def to_device(self, array: np.ndarray, what: str = "the data") -> cl_array.Array:
        """Copy a host array to a new device array of this device's precision."""
        self.check_allocation(what, array.size * np.dtype(self.dtype).itemsize)
        return cl_array.to_device(self.queue, np.ascontiguousarray(array, dtype=self.dtype))

    def zeros(self, shape: tuple[int, ...]) -> cl_array.Array:
        """A new device array of zeros in this device's precision."""
        return cl_array.zeros(self.queue, shape, self.dtype)

    def local_size(self, kernel: cl.Kernel, dims: int) -> tuple[int, ...]:
        """The work-group shape of every launch of `dims` dimensions: fixed, so that a new
        batch size reuses the kernels built for the last one (PoCL builds a kernel anew for
        each work-group shape, 0.1-1.2 s each, which a driver-chosen shape would vary with the
        global size). CPUs: (64,) and (64, 1, ...): PoCL vectorises along dimension 0, where
        the kernels keep their longest contiguous axis; GPUs: (128,) and (32, 4); both within
        the kernel's own limit."""
        gpu = self.gpu
        shape = [128 if gpu else 64] if dims == 1 else [32, 4] if gpu else [64, 1]
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


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB" if nbytes >= 2**20 else f"{nbytes} bytes"


def host_available() -> int | None:
    """Bytes of host memory available (Linux's MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def check_host_memory(what: str, nbytes: int) -> None:
    """DeviceError, before anything is allocated, if `nbytes` of host memory for `what` are
    more than the host has available (a huge array would be granted, then the process
    killed when it is filled)."""
    available = host_available()
    if available is not None and nbytes > available:
        raise DeviceError(f"{what} need {_size(nbytes)} of host memory, more than the "
                          f"{_size(available)} available: use fewer samples at a time")


def buffer(array: cl_array.Array) -> cl.Buffer:
    """The OpenCL buffer behind a device array (pyopencl's stubs type `.data` as optional)."""
    return cast(cl.Buffer, array.data)


def _arg(value: Any) -> Any:
    if isinstance(value, cl_array.Array):
        return buffer(value)
    if isinstance(value, (bool, int)):
        return np.int32(value)
    return value


class Launch:
    """One kernel over a fixed global size, arguments set at construction (≈2 µs to enqueue on
    PoCL, against ≈12 µs when they are passed on every call)."""

    __slots__ = ("queue", "kernel", "global_size", "local_size", "args", "name", "per_call")

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

    def set_arg(self, index: int, value: Any) -> None:
        """Set argument `index`, unless it holds that value already (setting one costs ~15 us
        on PoCL: a step's launches mostly keep theirs)."""
        old = self.args[index]
        if old is value or (type(old) is type(value) and isinstance(value, (int, np.generic))
                            and old == value):
            return
        self.args[index] = value
        self.kernel.set_arg(index, _arg(value))

    def set(self, name: str, value: Any) -> None:
        """Set the per-call argument `name`, of the type the kernel declares."""
        index = self.per_call[name]
        old = self.args[index]
        self.set_arg(index, type(old)(value) if isinstance(old, np.generic) else value)

    def __call__(self) -> None:
        try:
            cl.enqueue_nd_range_kernel(self.queue, self.kernel, self.global_size,
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
