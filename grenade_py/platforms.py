"""Finding OpenCL devices: the platforms, the default device, `PLATFORM:DEVICE` strings (as
`--device`, `Device(spec)` and the PYOPENCL_CTX variable take them), and whether a PoCL
compiled for a generic CPU can run grenade_py's kernels (probed once, in a child process); and
building a program where the driver's or pyopencl's cache keeps it. `python -m
grenade_py.devices` lists the devices."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pyopencl as cl
from pyopencl.cache import create_built_program_from_source_cached
from pyopencl.characterize import has_src_build_cache

from grenade_py.errors import DeviceError, KernelBuildError
from grenade_py.kernel_library import kernel_source

INSTALL_HINT = (
    "Install an OpenCL driver: `pip install pocl-binary-distribution` gives a CPU device on "
    "Linux x86-64; elsewhere install your GPU vendor's OpenCL driver or PoCL (e.g. "
    "`apt install pocl-opencl-icd`)."
)


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


def flushes_denormals(device: cl.Device) -> bool:
    """Whether float32 kernels are built with -cl-denorms-are-zero on `device` (see
    device.DENORMALS): everywhere but on a PoCL before 7.0 on LLVM 16 or newer. Its LLVM
    refuses to inline a function whose denormal mode differs from its caller's, and that PoCL
    leaves the attribute on its builtins (7.0 strips it): every fma, exp or max in a kernel built
    so is a call, neither inlined nor vectorised. Debian 13's PoCL 6.0 (LLVM 18) ran the GEMMs 7x
    slower so, the MNIST MLP's epochs 5x; 3.1 (LLVM 15) and 7.1 (LLVM 21) ran as fast with the
    option as without. There float32 keeps denormals, as float64 does."""
    version = device.platform.version
    llvm = re.search(r"LLVM (\d+)\.", version)
    return not ("PoCL" in version and _pocl_version(device) < (7, 0) and llvm is not None
                and int(llvm[1]) >= 16)


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
    if not isinstance(verdicts, dict):  # the user's file, of another structure
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


def compile_program(context: cl.Context, device: cl.Device, source: str, options: list[str]
                    ) -> cl.Program:
    """`source` built in `context` for `device` with `options` alone, and kept by the driver where
    it caches builds itself (PoCL, NVIDIA's), else in pyopencl's binary cache; KernelBuildError
    with the compiler's log if it fails. (pyopencl's Program.build adds `-I <its own headers>`,
    a path inside the Python environment, to the options both caches key on: each new
    environment, a fresh venv or a CI clone, compiled every kernel anew. PoCL 3.1, Zen 3: the
    library built again with another -I path 5.1 s, from a second venv with the options alone
    0.2 s.)"""
    flags = " ".join(options).encode()
    try:
        if has_src_build_cache(device):
            program = cl._cl._Program(context, source)
            program.build(flags, [device])
        else:
            with warnings.catch_warnings():  # -w's notes still come as CompilerWarnings
                warnings.simplefilter("ignore", cl.CompilerWarning)
                program, _ = create_built_program_from_source_cached(
                    context, source, flags, [device])
        return cl.Program(program)
    except cl.Error as e:  # its text holds the build log
        hint = ""
        if "unknown target CPU" in str(e):
            hint = ("\nThis PoCL's LLVM does not know this CPU. Install a newer PoCL (on "
                    "Debian/Ubuntu: `apt install pocl-opencl-icd`) or pick another device "
                    "(`python -m grenade_py.devices`).")
        raise KernelBuildError(f"OpenCL build failed on {device.name.strip()} on "
                               f"{device.platform.name.strip()}:\n{e}{hint}") from None
