"""Device choice, precision, program builds and their errors."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pyopencl as cl
import pytest

from grenade_py import DeviceError, KernelBuildError, blocks
from grenade_py.device import Device
from grenade_py.kernel_library import kernel_dir
from grenade_py.platforms import choose_cl_device


def test_no_platform_says_what_to_install(monkeypatch):
    def none():
        raise cl.LogicError("clGetPlatformIDs", cl.status_code.PLATFORM_NOT_FOUND_KHR, "none")

    monkeypatch.delenv("PYOPENCL_CTX", raising=False)
    monkeypatch.setattr(cl, "get_platforms", none)
    with pytest.raises(DeviceError, match="no OpenCL platform.*pocl-binary-distribution"):
        Device()
    monkeypatch.setattr(cl, "get_platforms", lambda: [])
    with pytest.raises(DeviceError, match="no OpenCL platform.*apt install pocl-opencl-icd"):
        Device()


def test_bad_spec_and_precision():
    with pytest.raises(DeviceError, match="no OpenCL device '7:3'.*grenade_py.devices"):
        Device("7:3")
    with pytest.raises(ValueError, match="precision must be one of"):
        Device(precision="float16")


def test_pyopencl_ctx_is_honoured(monkeypatch):
    """(The choice itself: pip's PoCL, often the last platform, is refused here after it.)"""
    monkeypatch.setenv("PYOPENCL_CTX", "0:0")
    assert Device().cl_device == cl.get_platforms()[0].get_devices()[0]
    last = len(cl.get_platforms()) - 1
    monkeypatch.setenv("PYOPENCL_CTX", f"{last}:0")
    assert choose_cl_device() == cl.get_platforms()[last].get_devices()[0]


def test_device_specs_as_pyopencl_reads_them(monkeypatch):
    """Name substrings, as pyopencl's create_some_context accepts; no negative indices."""
    platform = cl.get_platforms()[0]
    name = platform.name.split()[0].lower()
    monkeypatch.setenv("PYOPENCL_CTX", name)
    assert name in choose_cl_device().platform.name.lower()
    monkeypatch.delenv("PYOPENCL_CTX")
    device_name = platform.get_devices()[0].name
    assert choose_cl_device(f"0:{device_name[:6]}").name == device_name
    for spec in ("-1:0", "0:-1", "no such platform"):
        with pytest.raises(DeviceError, match="no OpenCL device"):
            Device(spec)


def test_enqueue_errors_are_named(device, monkeypatch):
    from grenade_py import D1, FullyConnected, Network, run_net

    net = Network([FullyConnected(2, 1)], input=D1(2), device=device)

    def failing(*args, **kwargs):
        raise cl.LogicError("clEnqueueNDRangeKernel", cl.status_code.INVALID_WORK_GROUP_SIZE,
                            "invalid work group size")

    monkeypatch.setattr(cl, "enqueue_nd_range_kernel", failing)
    with pytest.raises(DeviceError, match=r"could not run fc_forward on .* over \(\d+, \d+\)"):
        run_net(net, np.zeros(2))


def test_precision_sets_dtype(device):
    assert device.dtype == {"float32": np.float32, "float64": np.float64}[device.precision]
    assert device.precision in device.name


@pytest.mark.parametrize("driver_caches", [True, None])
def test_build_error_carries_the_compiler_log(device, driver_caches, monkeypatch):
    """Both ways a program is built: with the options alone (a driver that caches builds), and
    through pyopencl's binary cache (one that may not)."""
    monkeypatch.setattr("grenade_py.platforms.has_src_build_cache", lambda d: driver_caches)
    fresh = Device(precision=device.precision)
    program = fresh.build("kernel void works(global REAL *x) { x[0] = 3; }")
    assert program.kernel_names == "works"
    with pytest.raises(KernelBuildError, match="(?s)OpenCL build failed.*undeclared"):
        fresh.build("kernel void broken(global REAL *x) { x[0] = undeclared_name; }")


def test_build_options_hold_no_path_of_this_environment(device):
    """PoCL's kernel cache keys on the build options: a path of the Python environment among
    them (pyopencl adds its header folder) would make every new venv compile everything."""
    options = device.build("kernel void k(global REAL *x) { x[0] = 2; }").get_build_info(
        device.cl_device, cl.program_build_info.OPTIONS)
    assert "-DREAL=" in options and "-I" not in options and sys.prefix not in options


def test_programs_are_built_once(device):
    source = "kernel void k(global REAL *x) { x[0] = 1; }"
    assert device.build(source) is device.build(source)
    assert device.library is device.library


def test_a_device_keeps_its_last_programs(monkeypatch):
    """A Device keeps the PROGRAMS_KEPT programs last asked for, and the library (it kept
    every program ever built: each architecture's fused loops, for as long as it lived); a
    kernel of a program let go of still runs, and the program is built again when asked for."""
    from grenade_py import device as device_module

    monkeypatch.setattr(device_module, "PROGRAMS_KEPT", 2)
    device = Device()
    library = device.library
    sources = [f"kernel void k(global REAL *x) {{ x[0] = {v}; }}" for v in (5, 6, 7)]
    first = device.build(sources[0])
    kernel = device.kernel("k", first)
    device.build(sources[1])
    assert device.build(sources[0]) is first  # asked for again: now the most recent
    device.build(sources[2])  # lets go of sources[1]'s
    assert len(device._programs) == 2 and device.build(sources[0]) is first
    device.build(sources[1])
    device.build(sources[2])  # lets go of the first
    assert device.build(sources[0]) is not first  # built again
    x = device.zeros((1,))
    kernel.set_args(x.data)
    cl.enqueue_nd_range_kernel(device.queue, kernel, (1,), None)
    assert x.get()[0] == 5
    assert device.library is library


def test_kernel_sources_are_found():
    assert {"fully_connected.cl", "gemm.cl", "optimizers.cl"} <= {
        p.name for p in kernel_dir().glob("*.cl")}


def test_devices_cli_lists_the_default():
    result = subprocess.run([sys.executable, "-m", "grenade_py.devices"], capture_output=True,
                            text=True, timeout=60, check=True)
    assert "platform 0:" in result.stdout and " * " in result.stdout
    assert "Warning" not in result.stderr  # runpy warns when the package imports the CLI module


def test_buffers_over_the_device_limit_are_named():
    """Sizes are compared with the device's allocation limit before anything is allocated."""
    from grenade_py import D1, FullyConnected, Network, run_net

    device = Device()
    device.max_alloc = 4096
    with pytest.raises(DeviceError, match=r"the network's parameters need a buffer of .* bytes"
                                          r".*4096.*use a smaller batch or layer"):
        Network([FullyConnected(100, 20)], input=D1(100), device=device)
    net = Network([FullyConnected(10, 2)], input=D1(10), device=device)
    with pytest.raises(DeviceError, match=r"a batch of 200 \(input and targets\) need"):
        run_net(net, np.zeros((200, 10)))
    assert run_net(net, np.zeros((20, 10))).shape == (20, 2)


def test_launch_shapes_do_not_depend_on_the_batch(device):
    """Every batch size launches each kernel with one work-group shape (global sizes rounded
    up), so a new batch size reuses the kernels PoCL built for the last one; below
    blocks.FEW_ROWS rows, on CPUs, the forward's gemm_dot takes a block that pads the rows
    less (one of a few, each built once)."""
    from grenade_py import D1, FullyConnected, Network, Softmax, Tanh, blocks, execution
    from grenade_py.losses import CROSS_ENTROPY

    net = Network([FullyConnected(5, 7), Tanh(), FullyConnected(7, 3), Softmax()], input=D1(5),
                  device=device)

    def shapes(n):
        step = execution.steps(net, n, CROSS_ENTROPY)
        launches = step.forward_launches(True) + step.backward_launches()
        for launch in launches:
            assert all(g % size == 0 for g, size in zip(launch.global_size, launch.local_size,
                                                        strict=True))
        return [(launch.name, launch.local_size) for launch in launches]

    assert shapes(blocks.FEW_ROWS) == shapes(97) == shapes(64)
    small = [launch for launch in shapes(2) if not launch[0].startswith("gemm_dot")]
    assert small == [launch for launch in shapes(64) if not launch[0].startswith("gemm_dot")]


def test_streaming_kernels_run_in_large_work_groups_on_cpus(device):
    """The kernels marked STREAMING (element-wise maps, optimiser updates) ask for work-groups
    of 1024 through work_group_size_hint, which a CPU device gives them; the others keep 64."""
    if device.gpu:
        pytest.skip("GPUs keep their own work-group shapes")
    try:
        attributes = str(device.kernel("relu_forward").get_info(cl.kernel_info.ATTRIBUTES))
    except (cl.Error, UnicodeDecodeError):
        attributes = ""
    if "work_group_size_hint" not in attributes:  # Oclgrind's are not text
        pytest.skip(f"{device.name} does not report its kernels' attributes")
    values = device.zeros((10,))
    streaming = [device.launch(name, (10,), 10, values, values, values).local_size
                 for name in ("relu_backward", "add_values", "dropout_backward")]
    assert streaming == [(1024,)] * 3
    assert device.launch("relu_forward", (3,), 3, values, values).local_size == (1024,)
    assert device.launch("optimizer_update_adam", (10,), 10, *[device.dtype(0)] * 7, values,
                         values, values, values).local_size == (1024,)
    assert device.launch("softmax_forward", (3,), 3, 3, values, values).local_size == (64,)


def test_an_unwritable_pocl_cache_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = subprocess.run([sys.executable, "-m", "grenade_py.devices"], capture_output=True,
                            text=True, timeout=60,
                            env={**{k: v for k, v in os.environ.items() if k != "PYOPENCL_CTX"},
                                 "POCL_CACHE_DIR": str(blocker / "c")})
    if result.returncode == 0:
        pytest.skip("this OpenCL platform offers devices without a kernel cache")
    assert "POCL_CACHE_DIR" in result.stderr and str(blocker) in result.stderr


def test_devices_cli_marks_the_device_pyopencl_ctx_picks():
    last = len(cl.get_platforms()) - 1
    result = subprocess.run([sys.executable, "-m", "grenade_py.devices"], capture_output=True,
                            text=True, timeout=60, check=True,
                            env={**os.environ, "PYOPENCL_CTX": f"{last}:0"})
    assert f" * {last}:0 " in result.stdout, result.stdout


def test_devices_cli_lists_the_devices_when_pyopencl_ctx_names_none():
    """The listing is what a bad PYOPENCL_CTX's error sends the user to: it lists every device,
    marks none, then fails saying what is wrong (it failed with that error, listing nothing)."""
    result = subprocess.run([sys.executable, "-m", "grenade_py.devices"], capture_output=True,
                            text=True, timeout=60, env={**os.environ, "PYOPENCL_CTX": "7:3"})
    assert result.returncode == 1, result.stderr
    assert " 0:0 " in result.stdout and " * " not in result.stdout
    assert "PYOPENCL_CTX='7:3' names none of these devices" in result.stderr


def test_generic_cpu_pocl_is_named():
    from types import SimpleNamespace

    from grenade_py.platforms import generic_cpu_note

    def device(name, platform="Portable Computing Language"):
        return SimpleNamespace(name=name, platform=SimpleNamespace(name=platform))

    assert generic_cpu_note(device("pthread-skylake-avx512-Intel(R) Xeon(R) Processor")) == ""
    assert generic_cpu_note(device("cpu-znver3-AMD EPYC 7B13")) == ""
    assert "apt install pocl-opencl-icd" in generic_cpu_note(
        device("pthread-Intel(R) Xeon(R) Processor"))
    assert "generic CPU" in generic_cpu_note(device("pthread-generic-Intel(R) Xeon(R)"))
    assert generic_cpu_note(device("NVIDIA H100", platform="NVIDIA CUDA")) == ""


def test_float32_flushes_denormals_except_on_the_pocls_where_it_costs_most():
    """-cl-denorms-are-zero, but not on a PoCL before 7.0 on LLVM 16 or newer (its builtins are
    then calls, 5-7x slower); this device's float32 kernels flush as the rule says, and float64
    keeps denormals."""
    from types import SimpleNamespace

    from grenade_py.platforms import flushes_denormals

    def device(version):
        return SimpleNamespace(platform=SimpleNamespace(version=version))

    pocl = "OpenCL 3.0 PoCL {}  Linux, None+Asserts, RELOC, SPIR-V, LLVM {}, SLEEF, DISTRO"
    assert flushes_denormals(device(pocl.format("3.0-rc2", "14.0.6")))
    assert flushes_denormals(device(pocl.format("3.1+debian", "15.0.6")))
    assert not flushes_denormals(device(pocl.format("5.0+debian", "17.0.6")))
    assert not flushes_denormals(device(pocl.format("6.0+debian", "18.1.8")))
    assert flushes_denormals(device(pocl.format("7.1+debian", "21.1.8")))
    assert flushes_denormals(device("OpenCL 3.0 CUDA 12.4.131"))
    for precision in ("float32", "float64"):
        d = Device(precision=precision)
        program = d.build("kernel void product(global REAL *x) { x[0] = x[0] * x[1]; }")
        x = d.to_device(np.array([1e-20, 1e-20]))  # 1e-40: a float32 denormal, float64 normal
        d.launch("product", (1,), x, program=program, local=(1,))()
        flushed = precision == "float32" and flushes_denormals(d.cl_device)
        assert (x.get()[0] == 0) == flushed, (d, x.get())


def test_kernel_files_compile_in_any_order_after_the_foundations():
    """Only FOUNDATIONS must come first: the other files, reversed, build as well."""
    from grenade_py.kernel_library import FOUNDATIONS, instantiate

    files = {f.name: instantiate(f.read_text()) for f in kernel_dir().glob("*.cl")}
    rest = sorted(set(files) - set(FOUNDATIONS), reverse=True)
    source = "\n".join(files[name] for name in (*FOUNDATIONS, *rest))
    program = Device().build(source)
    assert "optimizer_update_adam" in program.kernel_names.split(";")


def test_the_cache_hint_survives_an_unreadable_folder(monkeypatch, tmp_path):
    """A folder on the way to PoCL's cache that cannot be read (an unreadable HOME) makes
    the hint say to set POCL_CACHE_DIR, not crash."""
    from pathlib import Path

    from grenade_py.platforms import _pocl_cache_hint

    def unreadable(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setenv("POCL_CACHE_DIR", str(tmp_path / "home" / "cache"))
    monkeypatch.setattr(Path, "exists", unreadable)
    assert "set POCL_CACHE_DIR to a writable folder" in _pocl_cache_hint()


def test_a_batch_is_checked_against_free_memory_before_allocating(monkeypatch):
    """The sum of a batch's buffers, not only each buffer, must fit the device's free memory
    (on a CPU device the host's): PoCL aborts the process when an allocation fails."""
    import numpy as np

    from grenade_py import D1, DeviceError, FullyConnected, Network, run_net
    from grenade_py.mnist import mnist_network
    from grenade_py.runner import RUN_CHUNK, run_chunk

    assert run_chunk(mnist_network("inception")) < RUN_CHUNK  # 1.6 MB a sample: fewer rows
    device = Device()
    net = Network([FullyConnected(10, 1000), FullyConnected(1000, 2)], input=D1(10),
                  device=device)
    monkeypatch.setattr(Device, "memory", lambda self: 100_000)

    def allocate(*args):
        raise AssertionError("a buffer was allocated before the check")

    monkeypatch.setattr(Device, "zeros", allocate)
    with pytest.raises(DeviceError, match="a batch of 64 need .* of buffers in all, more than"):
        run_net(net, np.zeros((64, 10)))


def test_run_net_checks_host_memory_before_allocating_its_outputs(monkeypatch):
    """run_net's host array of outputs is checked against the host's available memory first
    (a 313 GiB array was granted, then the process killed as it filled)."""
    import numpy as np

    from grenade_py import D1, DeviceError, Network, Reshape, Tanh, host_memory, run_net

    net = Network([Reshape(D1(1000)), Tanh()], input=D1(1000), device=Device())
    monkeypatch.setattr(host_memory, "host_available", lambda: 1_000_000)
    with pytest.raises(DeviceError, match=r"run_net's outputs for 300 samples need 1.1 MiB of "
                                          r"host memory, more than the 1000000 bytes available"):
        run_net(net, np.zeros((300, 1000)))
    assert run_net(net, np.zeros((20, 1000))).shape == (20, 1000)


def test_inference_allocates_no_deltas(monkeypatch):
    """run_net and evaluate need no deltas (nor Dropout's masks or BatchNorm's batch
    statistics): a batch that fits for inference runs where training it would not fit."""
    import numpy as np

    from grenade_py import (
        D1,
        BatchNorm,
        Concat,
        DeviceError,
        Dropout,
        FullyConnected,
        LearningParameters,
        Network,
        execution,
        run_net,
        train,
    )

    net = Network([FullyConnected(10, 500), BatchNorm(500), Dropout(0.5),
                   Concat(FullyConnected(500, 300), FullyConnected(500, 200)),
                   FullyConnected(500, 2)], input=D1(10), device=Device())
    step = execution.Step(net, 4, inference=True)
    assert step.delta is None and not any(  # the row mask (of the targets) is no layer's
        name.rpartition(".")[2].startswith(("d", "mask", "coefficients"))
        for name in step.buffers if name != "mask")
    with pytest.raises(RuntimeError, match="an inference Step has no training pass"):
        step.forward(True)
    itemsize = 4
    inference = (64 * (10 + 2 + 2) + sum(int(np.prod(s)) for s in net.inference_buffers(64)
                                         .values())) * itemsize
    monkeypatch.setattr(Device, "memory", lambda self: int(inference * 1.05))
    assert run_net(net, np.zeros((64, 10))).shape == (64, 2)
    with pytest.raises(DeviceError, match="a batch of 64 need"):
        train(net, LearningParameters(0.01, 0.9, 0.0), np.zeros((64, 10)), np.zeros((64, 2)))


def test_a_generic_pocl_is_probed_once_in_a_child(monkeypatch, tmp_path):
    """A PoCL compiling for a generic CPU is trusted only once grenade_py.probe has built and
    run every kernel family in a child process (pip's PoCL 3.0 aborted the user's process): a
    child that crashes makes Device a DeviceError naming the fix, remembered in the cache
    folder; one that passes makes the device usable."""
    from grenade_py import device, platforms

    monkeypatch.setattr(device, "generic_cpu_note", lambda cl_device: "generic")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "crashed"))
    runs = []

    def child(returncode):
        def run(command, **kwargs):
            runs.append(command)
            assert kwargs["env"]["POCL_CACHE_DIR"] != os.environ.get("POCL_CACHE_DIR")
            return subprocess.CompletedProcess(command, returncode)
        return run

    monkeypatch.setattr(platforms.subprocess, "run", child(-6))
    for _ in range(2):
        with pytest.raises(DeviceError, match=r"crashes on grenade_py's kernels on this CPU .*"
                                              r"`apt install pocl-opencl-icd`"):
            Device()
    assert len(runs) == 1 and runs[0][1:3] == ["-m", "grenade_py.probe"]  # the verdict is kept
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "passed"))
    monkeypatch.setattr(platforms.subprocess, "run", child(0))
    assert Device().to_device(np.ones(3)).get().sum() == 3
    assert len(runs) == 2


def test_the_probe_decides_for_pips_pocl(tmp_path, monkeypatch):
    """Where pip's PoCL compiles for a generic CPU (whose compiler aborts on our kernels on
    some CPUs), Device refuses it exactly when its probe, run alone in a child, fails; the
    probe passes on the default device."""
    from grenade_py import platforms
    from grenade_py.platforms import _platforms, device_spec, generic_cpu_note

    env = {**os.environ, "GRENADE_PY_PROBING": "1"}
    assert subprocess.run([sys.executable, "-m", "grenade_py.probe",
                           device_spec(Device().cl_device)], env=env, capture_output=True,
                          timeout=600).returncode == 0
    generic = [d for p in _platforms() for d in p.get_devices() if generic_cpu_note(d)]
    if not generic:
        pytest.skip("no PoCL here compiles for a generic CPU")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    children, real_run = [], subprocess.run

    def run(*args, **kwargs):
        children.append(real_run(*args, **kwargs))
        return children[-1]

    monkeypatch.setattr(platforms.subprocess, "run", run)
    spec = device_spec(generic[0])
    try:
        accepted = Device(spec).cl_device == generic[0]
    except DeviceError as e:
        assert "apt install pocl-opencl-icd" in str(e)
        accepted = False
    [child] = children  # the probe ran once, alone, on that device
    assert child.args[-3:] == ["-m", "grenade_py.probe", spec]
    assert accepted == (child.returncode == 0), child.stderr[-2000:]


def test_templates_are_written_out_once_per_instance():
    from grenade_py.kernel_library import instantiate

    text = ("before\n// template $RM $RN: 8 2, 4 4\nkernel void k_$RMx$RN() { int a[$RM]; }\n"
            "// end template\nafter\n")
    assert instantiate(text) == ("before\nkernel void k_8x2() { int a[8]; }\n"
                                 "kernel void k_4x4() { int a[4]; }\nafter\n")
    names = Device().library.kernel_names.split(";")
    for form, candidates in blocks.FORMS.items():
        for block in candidates:
            assert blocks.kernel_name(form, block) in names


def test_a_loops_part_of_the_library_has_its_functions_and_no_kernels(device):
    """Generated loops build on the library's functions without its kernels, and only on
    those they call: braces in comments and nested blocks do not end a kernel or a function
    early; what follows one is kept; a macro that defines kernels is defined empty, others
    are kept, and what they call; a declaration is not a definition."""
    from grenade_py.fused import LOOP_FILES
    from grenade_py.kernel_library import called_only, functions_only, kernel_dir, kernel_source

    text = ("REAL f(REAL x) { return x; }\nkernel void k(int n) { if (n) { n++; } // }\n"
            "  /* { */ }\nSTREAMING kernel void s(int n) {\n}\nREAL8 *g(REAL x) { return f(x); }\n"
            "#define TWICE(x) \\\n    (2 * h(x))\n#define MAKE(NAME, A) \\\n"
            "    kernel void NAME(int A) { \\\n    }\nMAKE(m, n)\n"
            "REAL h(REAL x) { /* } */ if (x) { x++; } return x; }\nREAL u(REAL x);\n"
            "REAL u(REAL x) { return x; }\nvoid v(REAL x) { u(x); }\n// not v(x): a comment\n")
    functions = ("REAL f(REAL x) { return x; }\n\n\nREAL8 *g(REAL x) { return f(x); }\n"
                 "#define TWICE(x) \\\n    (2 * h(x))\n#define MAKE(NAME, A)\nMAKE(m, n)\n"
                 "REAL h(REAL x) { /* } */ if (x) { x++; } return x; }\nREAL u(REAL x);\n"
                 "REAL u(REAL x) { return x; }\nvoid v(REAL x) { u(x); }\n"
                 "// not v(x): a comment\n")
    assert functions_only(text) == functions
    # the code calls g (so f); a macro calls h; u is declared; v is called by nothing (a
    # comment naming it does not count)
    assert called_only(functions, "kernel void z() { g(1); }") == (
        "REAL f(REAL x) { return x; }\n\n\nREAL8 *g(REAL x) { return f(x); }\n"
        "#define TWICE(x) \\\n    (2 * h(x))\n#define MAKE(NAME, A)\nMAKE(m, n)\n"
        "REAL h(REAL x) { /* } */ if (x) { x++; } return x; }\nREAL u(REAL x);\n"
        "REAL u(REAL x) { return x; }\n\n// not v(x): a comment\n")
    assert "REAL8 *g" not in called_only(functions, "kernel void z() { h(1); }")
    library = kernel_source(LOOP_FILES)
    probe = "kernel void probe_loop(global REAL *y) { y[0] = logit_forward_at(y[0]); }\n"
    program = device.build(called_only(library, probe) + probe)
    assert program.kernel_names.split(";") == ["probe_loop"]  # no kernel of the library's
    assert "tanh_forward_at" in library and "tanh_forward_at" not in called_only(library, probe)
    written = "".join(path.read_text() for path in kernel_dir().glob("*.cl"))
    assert "kernel void NAME" in written and "STREAMING kernel void NAME" in written


def test_a_cold_build_writes_nothing_to_stderr(tmp_path):
    """PoCL's compiler notes harmless ABI details of 16-lane vectors on AVX2 ("99 warnings
    generated." on stderr at every cold build): the library builds without warnings."""
    env = {**os.environ, "POCL_KERNEL_CACHE": "0", "POCL_CACHE_DIR": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", "from grenade_py import Device; "
                          "Device().library"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0 and run.stderr == "", run.stderr


def test_a_per_call_argument_set_by_name_after_one_set_by_index(device):
    """`Launch.set` skips a value it was given last time, unless set_arg changed the argument
    since: the launch then computes with the value set last, whichever way."""
    from grenade_py.losses import SQUARED_ERROR

    y = device.to_device(np.arange(5.0))
    t = device.to_device(np.ones(5))
    delta = device.zeros((5, 1))
    launch = SQUARED_ERROR.gradient(device, y.reshape(5, 1), t.reshape(5, 1), None, delta)
    for how, scale in [("set", 2.0), ("set", 2.0), ("set_arg", 3.0), ("set", 2.0),
                       ("set", 0.5)]:
        if how == "set":
            launch.set("scale", scale)
        else:
            launch.set_arg(launch.per_call["scale"], device.dtype(scale))
        launch()
        np.testing.assert_allclose(delta.get().ravel(), scale * (np.arange(5.0) - 1))


def test_a_null_buffer_argument_where_set_arg_refuses_it(device):
    """pyopencl 2024.3 (setup.cfg's minimum) refuses None in Kernel.set_arg, and takes it as
    a NULL buffer in set_args: a launch letting go of a buffer (the fused loops' `release`)
    whose set_arg refuses None sets it through set_args, so that it works there too."""
    from grenade_py.device import Launch

    y = device.to_device(np.arange(5.0))
    launch = Launch(device, device.kernel("loss_gradient"), (5,),
                    (5, 1, device.dtype(1), 0, y, y, y, device.zeros((5,))),
                    per_call={"mask": 6})

    class Strict:  # a Kernel as pyopencl 2024.3's
        def __init__(self, kernel):
            self.kernel, self.nulls = kernel, []

        def set_arg(self, index, value):
            if value is None:
                raise TypeError("set_arg(): incompatible function arguments")
            self.kernel.set_arg(index, value)

        def set_args(self, *values):
            self.nulls += [i for i, v in enumerate(values) if v is None]
            self.kernel.set_args(*values)

    launch.kernel = strict = Strict(launch.kernel)
    launch.set("mask", None)
    assert strict.nulls == [6] and launch.args[6] is None
    launch.set("mask", y)  # and back to a buffer, by set_arg
    assert launch.args[6] is y and strict.nulls == [6]


def test_a_verdicts_file_of_another_structure_is_probed_anew(tmp_path, monkeypatch):
    """compilers.json is the user's file: a JSON list there means no verdicts (it was a
    TypeError), and the probe's verdict replaces it."""
    import json

    from grenade_py import platforms

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    (tmp_path / "grenade_py").mkdir()
    record = tmp_path / "grenade_py" / "compilers.json"
    record.write_text("[1]")
    probed = []
    monkeypatch.setattr(platforms.subprocess, "run", lambda *a, **k: probed.append(a) or
                        subprocess.CompletedProcess(a, 0))
    platforms.check_compiler(choose_cl_device())
    assert len(probed) == 1 and list(json.loads(record.read_text()).values()) == [True]


@pytest.mark.parametrize("gpu", [False, True])
@pytest.mark.parametrize("shape", [(1,), (3, 17), (257, 3), ((1 << 21) // 4 + 5,)])
def test_uploads_convert_every_value(device, shape, gpu, monkeypatch):
    """to_device (on a CPU through a mapping given huge pages, on a GPU as pyopencl copies):
    every value arrives, converted to the device's precision, from any dtype and layout."""
    monkeypatch.setattr(device, "gpu", gpu)
    rng = np.random.default_rng(1)
    values = rng.normal(size=shape) * 1e3
    for host in (values, values.astype(np.float32), values.astype(np.int64),
                 np.asfortranarray(values), values[..., ::-1], values[0]):
        on_device = device.to_device(host)
        assert on_device.dtype == device.dtype and on_device.shape == host.shape
        np.testing.assert_array_equal(on_device.get(), host.astype(device.dtype))
    assert device.to_device(np.zeros((0, 4))).shape == (0, 4)


def test_huge_pages_are_asked_for_the_whole_pages_inside_the_array(monkeypatch):
    from grenade_py import host_memory as device_module

    asked = []

    class Libc:
        @staticmethod
        def madvise(start, length, advice):
            asked.append((start.value, length.value, advice))

    monkeypatch.setattr(device_module, "_LIBC", Libc)
    page = device_module.HUGE_PAGE
    memory = np.zeros(4 * page + 100, dtype=np.uint8)
    address = memory.ctypes.data
    first = -(-address // page) * page
    inside = memory[first - address:][:2 * page + 1]
    device_module.huge_pages(inside)
    assert asked == [(first, 2 * page, 14)]
    device_module.huge_pages(memory[first - address + 1:][:2 * page - 2])  # no whole page in it
    assert len(asked) == 1
    asked.clear()
    Device().to_device(np.ones(page))  # a CPU device's upload asks
    assert len(asked) == 1 and asked[0][1] >= page


def test_host_available_reads_memavailable(monkeypatch, tmp_path):
    """MemAvailable in bytes, as /proc/meminfo gives it in kB; None where the file or the
    field is missing."""
    from grenade_py import host_memory as device

    real = open
    fake = tmp_path / "meminfo"
    fake.write_text("MemTotal:       24576000 kB\nMemFree:  100 kB\n"
                    "MemAvailable:   12345678 kB\nBuffers:           0 kB\n")

    def opened(path, *args, **kwargs):
        return real(fake if path == "/proc/meminfo" else path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", opened)
    assert device.host_available() == 12345678 * 1024
    fake.write_text("MemTotal:       24576000 kB\nMemFree:  100 kB\n")
    assert device.host_available() is None
    fake.unlink()
    assert device.host_available() is None
