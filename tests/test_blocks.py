"""The kernels' register blocks and their tuner (grenade_py/blocks.py, python -m grenade_py.tune):
every block gives the same bits, tuned blocks persist per device and launches built later take
them, and the CLI reports and keeps what it measured. The tiled GEMMs (a GPU's form, run here on
PoCL) tune their tile shapes the same way."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import cache_env

from grenade_py import (
    D1,
    D2,
    D3,
    LSTM,
    Convolution,
    FullyConnected,
    Network,
    Pooling,
    RecurrentNetwork,
    Relu,
    Reshape,
    Softmax,
    blocks,
    fit,
)
from grenade_py.device import Device
from grenade_py.execution import Step
from grenade_py.gemm import PANEL_ROWS, gemm_dot, panel_size
from grenade_py.layers import fully_connected
from grenade_py.losses import SQUARED_ERROR
from grenade_py.optimizers import LearningParameters
from grenade_py.tune import choice_points, tune_choices, tune_network


@pytest.fixture(autouse=True)
def update_in_gemms(monkeypatch):
    """The last FullyConnected layer of `convnet` steps its weights in their gradient's GEMM
    (fit's batches; gemm_outer_update), below the weights and rows from which it does outside
    tests, and runs its forward from panels of its weights (gemm_panels) in the register form,
    below the rows and outputs from which it does (gemm.panel_size)."""
    monkeypatch.setattr(fully_connected, "UPDATE_FUSED", 0)
    monkeypatch.setattr(fully_connected, "UPDATE_FUSED_ROWS", 0)
    monkeypatch.setattr(fully_connected, "panel_size", lambda device, m, n, k: 64 * k
                        if n == 5 and device.gemm == "registers" else 0)


def convnet(device: Device) -> Network:
    """Every tunable form: both convolution GEMMs in runs (8 x 8 outputs) and gathered lanes
    (6 x 6: more positions than a vector, so not one product over the batch; the forward
    conv_forward_planes, 17 filters: a vector and one more), the input delta's gemm_outer and
    conv_input_delta, FullyConnected's gemm_dot, gemm_panels (`update_in_gemms`), gemm_outer
    and (17 inputs: at least a vector) gemm_outer_update. (A 1 x 1 convolution to 3 channels
    keeps the first FullyConnected layer's inputs under a vector: its weights step after their
    GEMM.)"""
    return Network([Convolution(1, 10, 5, 5, 1, 1), Relu(), Convolution(10, 17, 3, 3, 1, 1),
                    Pooling(3, 3, 3, 3), Convolution(17, 3, 1, 1, 1, 1), Reshape(),
                    FullyConnected(12, 17), Relu(), FullyConnected(17, 5)], input=D2(12, 12),
                   device=device, seed=3)


def paired(form: str, shift: int) -> list[blocks.Block]:
    """Every register block of `form` and every work-group shape, each in at least one
    candidate: block i in shape i + shift (cycling), not all their pairs, whose kernels cost
    PoCL a compile each (~0.2 s). What a work-group shape changes (the global size's rounding;
    conv_input_delta's sharing of a sample's work between its work-items) each shape still
    exercises."""
    registers, locals_ = blocks.REGISTERS[form], blocks.LOCALS[form]
    return [registers[i % len(registers)] + locals_[(i + shift) % len(locals_)]
            for i in range(max(len(registers), len(locals_)))]


@pytest.mark.parametrize("form", sorted(blocks.FORMS))
def test_every_block_trains_to_the_same_bits(device, form, monkeypatch):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(9, 12, 12)), rng.normal(size=(9, 5))
    results = []
    default = blocks.default
    monkeypatch.setattr(blocks, "_records", dict)  # no tuned table: the defaults
    gemm = "tiled" if form in blocks.TILED_FORMS else "registers"
    for candidate in paired(form, shift=int(device.precision == "float64")):
        fresh = Device(precision=device.precision, gemm=gemm)
        monkeypatch.setattr(blocks, "default", lambda d, f, s, c=candidate: c if f == form
                            else default(d, f, s))
        net = convnet(fresh)
        with blocks.recording() as sites:
            fit(net, LearningParameters(0.01, 0.9, 1e-4), x, y, batch_size=4, epochs=2, seed=1)
        assert {blocks.block(fresh, f, s) for f, s, *_ in sites if f == form} == {candidate}
        results.append(net.get_parameters())
    for params in results[1:]:
        for got, want in zip(params, results[0], strict=True):
            for name in want:
                np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_tuned_blocks_persist_and_later_launches_take_them(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    device = Device(gemm="registers")
    rows = tune_network(convnet(device), 7, loss="squared_error", repeats=1)
    assert {row.form for row in rows} == set(blocks.FORMS) - set(blocks.TILED_FORMS)
    records = json.loads((tmp_path / "grenade_py" / "tuned.json").read_text())
    kept = records[blocks.identity(device)]
    # Every shape timed is kept with its fastest block, and launches take it from then on.
    assert {(row.form, ",".join(map(str, row.shape))): list(row.best) for row in rows} == {
        (form, shape): block for form, shapes in kept.items() for shape, block in shapes.items()}
    assert all(blocks.block(device, row.form, row.shape) == row.best for row in rows)
    # A new Device reads the file; a shape's block there is what a new launch runs at.
    entry = records[blocks.identity(device)]
    entry["gemm_dot"]["7,17,12,1"] = [4, 2, 8, 8]
    (tmp_path / "grenade_py" / "tuned.json").write_text(json.dumps(records))
    again = Device(gemm="registers")
    step = Step(convnet(again), 7, SQUARED_ERROR)
    names = [launch.kernel.function_name for launch in step.forward_launches(True)]
    assert "gemm_dot_4x2" in names
    assert (8, 8, 1) in [launch.local_size for launch in step.forward_launches(True)
                      if launch.kernel.function_name == "gemm_dot_4x2"]  # and its work-group
    # A block the kernels do not have (an older grenade_py's) falls back to the default.
    entry["gemm_dot"]["7,17,12,1"] = [3, 3]
    (tmp_path / "grenade_py" / "tuned.json").write_text(json.dumps(records))
    again = Device(gemm="registers")
    assert blocks.block(again, "gemm_dot", (7, 17, 12, 1)) == \
        blocks.default(again, "gemm_dot", (7, 17, 12, 1))


def test_the_tuner_chooses_where_the_weights_step(tmp_path, monkeypatch):
    """Scripted timings: training steps that step the weights after their gradient's GEMM (the
    two passes) are the faster. tune_choices keeps that for each layer that could step them in
    the GEMM, in the table and the file; Steps built afterwards run the two passes, one built
    before keeps its own launches; the network's parameters are as they were."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    device = Device(gemm="registers")
    net = convnet(device)
    points = [("update_fused", (layer.o, layer.i, 7)) for layer in net.layers
              if isinstance(layer, FullyConnected) and layer.update_fused(7)]
    assert points and choice_points(net, 7) == points
    before, parameters = Step(net, 7, SQUARED_ERROR), net.get_parameters()

    def scripted(_device, run, _calls=5):
        run()  # a real step, which moves the parameters
        return 1.0 if run.__defaults__[0].stepped else 0.8

    monkeypatch.setattr(blocks, "seconds", scripted)
    monkeypatch.setattr(blocks, "tune_sites", lambda *_args, **_kwargs: [])
    made = tune_choices(net, 7, [], loss="squared_error", repeats=1)
    assert [(c.name, c.shape, c.first, c.first_s, c.other_s) for c in made] == [
        (name, shape, False, 1.0, 0.8) for name, shape in points]
    assert before.stepped and not Step(net, 7, SQUARED_ERROR).stepped
    kept = json.loads((tmp_path / "grenade_py" / "tuned.json").read_text())
    assert kept[blocks.identity(device)]["update_fused"] == {
        ",".join(map(str, shape)): [0] for _, shape in points}
    for got, want in zip(net.get_parameters(), parameters, strict=True):
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])
    assert choice_points(convnet(Device(gemm="tiled")), 7) == []


def test_the_tuner_is_not_fooled_by_one_quiet_moment(device, monkeypatch):
    """Scripted timings: block A is the fastest in every round; B is 10% slower but caught a
    quiet moment in round 2, where noise tripled everything else. Each one's fastest round
    would choose B; the median of times over each round's median chooses A."""
    a, b, c = blocks.FORMS["gemm_dot"][:3]
    script = {a: [1.0, 3.0, 1.0, 3.3, 1.0], b: [1.1, 0.9, 1.1, 3.6, 1.1],
              c: [1.2, 3.6, 1.2, 4.0, 1.2]}
    launches = {block: lambda: None for block in script}  # a launch that does nothing
    calls: dict[blocks.Block, int] = dict.fromkeys(script, 0)

    def scripted(_device, run, _calls=5):
        block = next(k for k, launch in launches.items() if launch is run)
        calls[block] += 1
        return script[block][calls[block] - 1]

    monkeypatch.setattr(blocks, "candidates", lambda _d, _f: (a, b, c))
    monkeypatch.setattr(blocks, "seconds", scripted)
    [row] = blocks.tune_sites(device, [("gemm_dot", (3, 3, 3, 1), launches.__getitem__, None)] * 2,
                              repeats=5, keep=False)
    assert row.best == a and row.best_s == 1.0
    assert min(script, key=lambda k: min(script[k])) == b  # what the fastest round would pick
    assert calls == dict.fromkeys(script, 5)  # each shape once, every candidate every round


def test_the_finalists_are_timed_inside_the_step(monkeypatch):
    """Scripted timings: alone, A is the fastest, then B, C and D; inside the training step B
    is. The tuner keeps B, the step's launches of that shape (two here) run B's kernel and
    work-group afterwards (C's was the last tried), and D, past the FINALISTS, never runs
    inside the step."""
    device = Device(gemm="registers")
    shape = (3, 3, 3, 1)
    candidates = [blocks.FORMS["gemm_dot"][i] for i in (0, 5, 10, 20)]
    a, b, c, d = candidates
    alone = dict(zip(candidates, (1.0, 1.1, 1.2, 1.3), strict=True))
    inside = {a: 2.0, b: 1.5, c: 2.1}

    def build(block):
        monkeypatch.setattr(blocks, "block", lambda *_: block)
        return gemm_dot(device, *shape[:3], *(device.zeros((3, 3)) for _ in range(2)),
                        device.zeros((3,)), device.zeros((3, 3)))

    built = {bl: build(bl) for bl in candidates}
    names = {bl: launch.name for bl, launch in built.items()}
    held = [build(a), build(a)]
    stepped = []

    def step():
        stepped.append(next(bl for bl, name in names.items() if name == held[0].name))

    def scripted(_device, run, _calls=5):
        if run is step:
            run()
            return inside[stepped[-1]]
        return alone[next(bl for bl, launch in built.items() if launch is run)]

    monkeypatch.setattr(blocks, "candidates", lambda _d, _f: tuple(candidates))
    monkeypatch.setattr(blocks, "seconds", scripted)
    sites = [("gemm_dot", shape, built.__getitem__, launch) for launch in held]
    [row] = blocks.tune_sites(device, sites, repeats=5, keep=False, step=step)
    assert row.best == b
    assert all(launch.name == names[b] and launch.local_size == built[b].local_size
               for launch in held)
    assert set(stepped) == {a, b, c}


def test_launches_too_short_to_show_in_the_step_are_chosen_alone(monkeypatch):
    """A launch under IN_STEP_SHARE of the step's time: its block is the fastest alone, and
    the step never runs with another."""
    device = Device(gemm="registers")
    a, b = blocks.FORMS["gemm_dot"][:2]
    alone = {a: 1.0, b: 0.9}
    launches = {block: lambda: None for block in alone}
    stepped = []

    def step():
        stepped.append(1)

    def scripted(_device, run, _calls=5):
        if run is step:
            run()
            return 0.99 / blocks.IN_STEP_SHARE  # the faster block's median is under the share
        return alone[next(k for k, launch in launches.items() if launch is run)]

    class Held:
        adopted = None

        def adopt(self, launch):
            self.adopted = launch

    held = Held()
    monkeypatch.setattr(blocks, "candidates", lambda _d, _f: (a, b))
    monkeypatch.setattr(blocks, "seconds", scripted)
    [row] = blocks.tune_sites(device, [("gemm_dot", (3, 3, 3, 1), launches.__getitem__, held)],
                              repeats=3, keep=False, step=step)
    assert row.best == b and held.adopted is launches[b]
    assert stepped == [1]  # the step timed once, for its time alone


def test_each_candidate_is_compiled_by_one_process(device):
    """`python -m grenade_py.tune` compiles the candidates in parts, one a process: every
    kernel and work-group shape of the sites' candidates is run by exactly one part, once."""
    ran: dict[int, list[tuple[str, blocks.Block]]] = {}
    sites = []
    for form, shape in (("gemm_dot", (3, 3, 3, 1)), ("gemm_outer", (3, 3, 3, 1, 1)),
                        ("gemm_dot", (5, 5, 5, 1))):  # (the third's candidates the first's)
        def build(b, form=form):
            return lambda: ran.setdefault(part, []).append((blocks.kernel_name(form, b),
                                                            blocks.local(form, b)))
        sites.append((form, shape, build, None))
    for part in range(3):
        blocks.compile_part(device, sites, part, 3, set())
    every = [(blocks.kernel_name(f, b), blocks.local(f, b)) for f in ("gemm_dot", "gemm_outer")
             for b in blocks.candidates(device, f)]
    assert sorted(sum(ran.values(), [])) == sorted(every)
    assert all(len(ran[part]) >= len(every) // 3 for part in range(3))


@pytest.mark.parametrize("launch_s, calls", [(0.0001, 5), (0.0008, 3), (0.005, 1)])
def test_the_tuner_times_long_launches_fewer_times(device, monkeypatch, launch_s, calls):
    """The first round times one launch of each candidate; the later rounds as many as take
    about TIMED_S (2 ms), 1 to 5."""
    blocks_ = blocks.FORMS["gemm_dot"][:3]
    asked: list[int] = []

    def timed(_device, _run, count=5):
        asked.append(count)
        return launch_s

    monkeypatch.setattr(blocks, "candidates", lambda _d, _f: blocks_)
    monkeypatch.setattr(blocks, "seconds", timed)
    blocks.tune_sites(device, [("gemm_dot", (3, 3, 3, 1), lambda b: lambda: None, None)], repeats=4,
                      keep=False)
    assert asked == [1] * 3 + [calls] * 9


def test_a_tiled_device_tunes_its_tile_shapes(tmp_path, monkeypatch):
    """A GPU's form: the tuner times every tile shape the device's limits allow at each of a
    network's GEMM shapes, keeps the fastest, and launches built later take it (and its
    work-group); untuned, the first shape that fits (on a GPU, GPU's first); one that does not
    fit is never tried."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    device = Device(gemm="tiled")
    net = Network([FullyConnected(13, 40), Relu(), FullyConnected(40, 5)], input=D1(13),
                  device=device, seed=1)
    assert blocks.block(device, "gemm_dot_tiled", (7, 40, 13, 1, 1)) == blocks.TILES[0]
    rows = tune_network(net, 7, loss="squared_error", repeats=1)
    assert {row.form for row in rows} == set(blocks.TILED_FORMS)
    assert all(row.default == (blocks.GPU.get(row.form, blocks.TILES[0]) if device.gpu
                               else blocks.TILES[0]) for row in rows)
    kept = json.loads((tmp_path / "grenade_py" / "tuned.json").read_text())[
        blocks.identity(device)]
    assert kept["gemm_dot_tiled"]["7,40,13,1,1"] == list(
        next(row.best for row in rows if row.shape == (7, 40, 13, 1, 1)))
    kept["gemm_dot_tiled"]["7,40,13,1,1"] = [32, 64, 16, 4, 4]
    (tmp_path / "grenade_py" / "tuned.json").write_text(
        json.dumps({blocks.identity(device): kept}))
    again = Network([FullyConnected(13, 40), Relu(), FullyConnected(40, 5)], input=D1(13),
                    device=Device(gemm="tiled"), seed=1)
    first = Step(again, 7, SQUARED_ERROR).forward_launches(True)[0]
    assert first.kernel.function_name == "gemm_dot_tiled_32x64x16x4x4"
    assert first.local_size == (16, 8, 1)
    # A GPU of 132 compute units: 128 x 128 tiles for products of 4 or more of them to each,
    # and for products in chunks (gemm.k_splits' parts) of one or more to each.
    gpu = type("Limits", (), {"max_work_group_size": 1024, "local_mem_size": 49152,
                              "max_compute_units": 132})
    monkeypatch.setattr(device, "cl_device", gpu)
    monkeypatch.setattr(device, "gpu", True)
    for shape in ((4096, 4096, 4096, 1, 1), (1024, 1024, 256, 4, 4), (128, 4096, 64, 64, 33)):
        assert blocks.default(device, "gemm_dot_tiled", shape) == blocks.BIG_TILE
    assert blocks.default(device, "gemm_outer_tiled", (3000, 3000, 64, 1, 1)) == blocks.BIG_TILE
    for shape in ((1024, 1024, 1024, 1, 1), (256, 512, 784, 1, 1), (2000, 2000, 9, 1, 1),
                  (1024, 1024, 512, 2, 2), (64, 512, 49, 16, 16), (128, 512, 56, 14, 14),
                  (127, 4096, 64, 64, 64)):
        assert blocks.default(device, "gemm_dot_tiled", shape) == blocks.TILES[0]
    # Its convolutions and smaller outer products at GPU's blocks (the H200's tuner's
    # choices), each one of the candidates; a wide CPU's first.
    monkeypatch.setattr(device, "narrow", False)
    assert blocks.default(device, "conv_forward", (64, 25, 10, 576)) == (4, 1, 64, 1, 1)
    assert blocks.default(device, "conv_kernel_gradient", (64, 25, 10, 576)) == (3, 2, 4, 4)
    assert blocks.default(device, "gemm_outer_tiled", (512, 784, 64, 1, 1)) == \
        (32, 64, 16, 4, 4)
    assert all(b in blocks.FORMS[form] for form, b in blocks.GPU.items())
    monkeypatch.setattr(device, "gpu", False)
    monkeypatch.setattr(blocks, "amd_wide", lambda d: False)  # an Intel CPU's
    assert blocks.default(device, "conv_forward", (64, 25, 10, 576)) == \
        blocks.FORMS["conv_forward"][0]
    monkeypatch.setattr(device, "gpu", True)
    # A device with 64 work-items to a group and 2 KiB of local memory: only the small tiles.
    small = type("Limits", (), {"max_work_group_size": 64, "local_mem_size": 2048,
                                "max_compute_units": 1})
    monkeypatch.setattr(device, "cl_device", small)
    assert blocks.candidates(device, "gemm_dot_tiled") == ((16, 16, 8, 2, 2), (8, 8, 8, 2, 2))
    for shape in ((7, 40, 13, 1, 1), (4096, 4096, 4096, 1, 1)):
        assert blocks.default(device, "gemm_outer_tiled", shape) == (16, 16, 8, 2, 2)


def test_an_unreadable_record_means_untuned(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    (tmp_path / "grenade_py").mkdir()
    (tmp_path / "grenade_py" / "tuned.json").write_text("{not json")
    net = Network([FullyConnected(3, 2)], input=D1(3), device=Device(gemm="registers"), seed=1)
    assert blocks.block(net.device, "gemm_dot", (5, 2, 3, 1)) == \
        blocks.default(net.device, "gemm_dot", (5, 2, 3, 1))
    with blocks.recording() as sites:
        Step(net, 5, SQUARED_ERROR).forward_launches(True)
    assert [f for f, *_ in sites] == ["gemm_dot"]


class OtherUnits:
    """A device's OpenCL handle reporting `units` compute units, the rest its own."""

    def __init__(self, cl_device, units):
        self.cl_device, self.max_compute_units = cl_device, units

    def __getattr__(self, name):
        return getattr(self.cl_device, name)


def test_a_table_tuned_with_other_compute_units_is_not_taken(tmp_path, monkeypatch):
    """PoCL names a CPU device by its model alone: a table tuned where it had 2 compute units is
    kept for that many, and a device of 16 (another machine, or a container given more cores)
    runs the defaults until it is tuned itself."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    device, shape = Device(gemm="registers"), (7, 17, 12, 1)
    default = blocks.default(device, "gemm_dot", shape)
    other = next(b for b in blocks.FORMS["gemm_dot"] if b != default)
    (tmp_path / "grenade_py").mkdir()
    (tmp_path / "grenade_py" / "tuned.json").write_text(
        json.dumps({blocks.identity(device): {"gemm_dot": {"7,17,12,1": list(other)}}}))
    assert blocks.block(Device(gemm="registers"), "gemm_dot", shape) == other
    more = Device(gemm="registers")
    more.cl_device = OtherUnits(more.cl_device, more.cl_device.max_compute_units + 14)
    assert blocks.identity(more) != blocks.identity(device)
    assert blocks.block(more, "gemm_dot", shape) == default


@pytest.mark.parametrize("entry", ["x", [1], {"gemm_dot": [1]}, {"gemm_dot": {"5,2,3,1": 5}},
                                   {"gemm_dot": {"5,2,3,1": "ab"}},
                                   {"gemm_dot": {"5,2,3,1": {"a": 1}}}])
def test_a_record_of_another_shape_means_untuned(tmp_path, monkeypatch, entry):
    """tuned.json is the user's file: valid JSON of another structure under the device's
    name is left out, not an AttributeError or TypeError in every program (four of these
    were)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    device = Device(gemm="registers")
    (tmp_path / "grenade_py").mkdir()
    (tmp_path / "grenade_py" / "tuned.json").write_text(
        json.dumps({blocks.identity(device): entry}))
    assert blocks.block(device, "gemm_dot", (5, 2, 3, 1)) == \
        blocks.default(device, "gemm_dot", (5, 2, 3, 1))
    net = Network([FullyConnected(3, 2)], input=D1(3), device=device, seed=1)
    Step(net, 5, SQUARED_ERROR).forward(True)


def test_the_tune_command(tmp_path):
    env = cache_env(tmp_path)
    run = subprocess.run([sys.executable, "-m", "grenade_py.tune", "--arch", "mlp",
                          "--batch", "5", "--repeats", "1"], capture_output=True, text=True,
                         env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    # (on a GPU the forward's k in parts: 5,512,49,16,16)
    assert "mlp b5 5,512," in run.stdout and "gemm_dot_" in run.stdout
    if Device().gemm == "registers":  # and where the weights step, chosen and kept
        assert "mlp b5 512,784,5" in run.stdout and "update_fused: a step" in run.stdout
    assert (tmp_path / "grenade_py" / "tuned.json").exists()
    bad = subprocess.run([sys.executable, "-m", "grenade_py.tune", "--arch", "vgg"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "vgg: choose from" in bad.stderr
    # A cache folder it cannot write: one line saying so, before any timing.
    (tmp_path / "file").write_text("")
    unwritable = subprocess.run([sys.executable, "-m", "grenade_py.tune", "--arch", "mlp"],
                                capture_output=True, text=True, timeout=300,
                                env={**env, "XDG_CACHE_HOME": str(tmp_path / "file"),
                                     "POCL_CACHE_DIR": str(tmp_path / "pocl")})
    assert unwritable.returncode == 1 and "Traceback" not in unwritable.stderr
    assert "cannot keep the tuned blocks" in unwritable.stderr
    assert "network," not in unwritable.stdout
    # A network that cannot train on the batch is skipped with its reason, the rest tuned.
    one = subprocess.run([sys.executable, "-m", "grenade_py.tune", "--arch", "bn", "--batch",
                          "1,2", "--repeats", "1"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert one.returncode == 0 and "Traceback" not in one.stderr, one.stderr
    assert "bn b1: skipped: BatchNorm" in one.stderr and "bn b2 " in one.stdout


def test_the_tune_command_tunes_a_users_networks(tmp_path):
    """--network: a model file and a spec in JSON, tuned instead of the MNIST networks (with a
    Softmax, under cross-entropy; without, squared error); a file that is neither, or a spec
    that does not build, is a usage error naming it."""
    env = cache_env(tmp_path)
    convnet = Network([Convolution(3, 4, 3, 3, 1, 1), Relu(), Reshape(D1(64)),
                       FullyConnected(64, 2)], input=D3(6, 6, 3), device=Device(), seed=1)
    (tmp_path / "convnet.json").write_text(json.dumps(convnet.spec()))
    Network([FullyConnected(20, 7), Relu(), FullyConnected(7, 3), Softmax()], input=D1(20),
            device=Device(), seed=1).save(tmp_path / "mlp.gnpy")
    (tmp_path / "other").mkdir()  # a file of the same name elsewhere: tuned too, by its path
    (tmp_path / "other" / "convnet.json").write_text(json.dumps(Network(
        [FullyConnected(5, 3)], input=D1(5), device=Device()).spec()))
    run = subprocess.run([sys.executable, "-m", "grenade_py.tune", "--network",
                          str(tmp_path / "convnet.json"), "--network", str(tmp_path / "mlp.gnpy"),
                          "--network", str(tmp_path / "other" / "convnet.json"), "--batch", "3",
                          "--repeats", "1"], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "convnet.json b3 4,16,27,3,0 " in run.stdout  # the convolution's forward
    assert "mlp.gnpy b3 3,7,20,1 " in run.stdout and "mlp b3" not in run.stdout
    assert f"{tmp_path / 'other' / 'convnet.json'} b3 3,3,5,1 " in run.stdout
    (tmp_path / "bad.json").write_text('{"type": "Network", "input": "D1 3", "layers": '
                                       '[{"type": "FullyConnected", "i": 4, "o": 2}]}')
    (tmp_path / "noise").write_bytes(bytes(range(128, 256)))
    RecurrentNetwork([LSTM(3, 4)], input=D1(3), device=Device(), seed=1).save(
        tmp_path / "lstm.gnpy")
    for name, message in (("bad.json", "bad.json: layer 0 (FullyConnected 4 2) takes D1 4"),
                          ("noise", "noise is neither a model file nor a network's spec"),
                          ("lstm.gnpy", "lstm.gnpy holds a RecurrentNetwork: the tuner times the "
                                        "training steps of feed-forward Networks")):
        bad = subprocess.run([sys.executable, "-m", "grenade_py.tune", "--network",
                              str(tmp_path / name)], capture_output=True, text=True, env=env,
                             timeout=300)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
        assert message in bad.stderr


def test_untuned_large_gemms_take_the_wide_default(tmp_path, monkeypatch):
    """On CPUs with 16-float vectors; those with 8 take NARROW's blocks for every shape."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # nothing tuned
    device = Device(gemm="registers")
    monkeypatch.setattr(blocks, "narrow", lambda d: True)
    for form, chosen in blocks.NARROW.items():
        assert chosen in blocks.FORMS[form]
        # The tuner leaves out the blocks of more than 10 accumulator vectors there, and the
        # dot forms' blocks (one register a vector there) of fewer than 6 or more than 12.
        tried = blocks.candidates(device, form)
        width = len(blocks.REGISTERS[form][0])
        assert chosen in tried and set(tried) < set(blocks.FORMS[form])
        low, high = (6, 12) if form in blocks.DOT_FORMS else (1, 10)
        assert set(tried) == {b for b in blocks.FORMS[form]
                              if low <= math.prod(b[:width]) <= high}
        for shape in ((1024, 1024, 1024, 1, 1), (5, 2, 3, 1, 0)):
            assert blocks.block(device, form, shape[:len(shape) - (form != "gemm_outer")]) == \
                chosen
    # None of gemm_panels' blocks (16-float panels) fit there: it keeps its first, so that a
    # test forcing the panels on (`update_in_gemms`) still has a block to tune.
    assert blocks.candidates(device, "gemm_panels") == blocks.FORMS["gemm_panels"][:1]
    monkeypatch.setattr(blocks, "narrow", lambda d: False)
    monkeypatch.setattr(blocks, "amd_wide", lambda d: False)  # an Intel CPU's (AMD's: below)
    for form, registers in blocks.REGISTERS.items():
        if form in blocks.TILED_FORMS:
            continue
        # On CPUs of 16-float vectors, the blocks of WIDE_LEAST accumulators or more, and the
        # form's first (the untuned default); on a GPU, every one.
        least = blocks.WIDE_LEAST.get(form, 1)
        assert blocks.candidates(device, form) == tuple(
            b for b in blocks.FORMS[form]
            if math.prod(b[:len(registers[0])]) >= least or b == blocks.FORMS[form][0])
        assert (least > 1) == (len(blocks.candidates(device, form)) < len(blocks.FORMS[form]))
    monkeypatch.setattr(device, "gpu", True)
    assert all(blocks.candidates(device, form) == blocks.FORMS[form] for form in blocks.FORMS
               if form not in blocks.TILED_FORMS)
    monkeypatch.setattr(device, "gpu", False)
    assert blocks.WIDE_DEFAULT in blocks.FORMS["gemm_dot"]
    assert blocks.block(device, "gemm_dot", (1024, 1024, 1024, 1)) == blocks.WIDE_DEFAULT
    assert blocks.block(device, "gemm_dot", (2048, blocks.WIDE, 256, 1)) == blocks.WIDE_DEFAULT
    first = blocks.FORMS["gemm_dot"][0]
    assert blocks.block(device, "gemm_dot", (256, 512, 784, 1)) == first  # MNIST's, smaller
    assert blocks.block(device, "gemm_dot", (2**20, 10, 512, 1)) == first  # narrow outputs
    # a sum of products (a convolution's kernel gradient): BATCHED_DOT
    assert blocks.block(device, "gemm_dot", (512, 512, 512, 8)) == blocks.BATCHED_DOT
    # rows narrower than a vector (16 floats): NARROW_ROWS' blocks, for either form
    assert blocks.block(device, "gemm_outer", (64, 15, 288, 32, 0)) == \
        blocks.NARROW_ROWS["gemm_outer"]
    assert blocks.block(device, "conv_input_delta", (32, 288, 9, 64)) == \
        blocks.NARROW_ROWS["conv_input_delta"]
    assert blocks.block(device, "gemm_outer", (64, 16, 288, 32, 0)) == \
        blocks.FORMS["gemm_outer"][0]
    assert blocks.block(device, "conv_input_delta", (32, 288, 16, 64)) == \
        blocks.FORMS["conv_input_delta"][0]
    # fewer than FEW_ROWS rows: the block that pads them the least (the first rounds 10 to 16)
    assert blocks.block(device, "gemm_dot", (10, 512, 784, 1)) == (5, 2, 16, 4)
    assert blocks.block(device, "gemm_dot", (3, 512, 784, 1)) == (3, 2, 64, 1)  # one block
    assert blocks.block(device, "gemm_dot", (7, 512, 784, 1)) == first
    assert blocks.block(device, "gemm_dot", (blocks.FEW_ROWS, 512, 784, 1)) == first
    assert all(blocks.block(device, "gemm_dot", (m, 10, 512, 1)) in blocks.FORMS["gemm_dot"]
               for m in range(1, blocks.FEW_ROWS))
    assert blocks.block(device, "gemm_outer", (1024, 1024, 1024, 1, 1)) == \
        blocks.FORMS["gemm_outer"][0]
    # FullyConnected's forward: below PANEL_ROWS rows gemm_dot (at WIDE_DEFAULT, over 2^27
    # terms); from them, gemm_panels at its form's first, on AMD's CPUs at AMD_WIDE's (this
    # fixture's panel_size aside)
    monkeypatch.setattr(fully_connected, "panel_size", panel_size)
    monkeypatch.setattr(device, "narrow", False)
    net = Network([FullyConnected(4096, blocks.WIDE)], input=D1(4096), device=device, seed=1)
    for amd, panels in ((False, blocks.FORMS["gemm_panels"][0]),
                        (True, blocks.AMD_WIDE["gemm_panels"])):
        monkeypatch.setattr(blocks, "amd_wide", lambda d, amd=amd: amd)
        for rows, names in (
                (PANEL_ROWS - 1, [blocks.kernel_name("gemm_dot", blocks.WIDE_DEFAULT)]),
                (PANEL_ROWS, ["gemm_pack_panels", blocks.kernel_name("gemm_panels", panels)])):
            assert [launch.kernel.function_name for launch in
                    Step(net, rows, SQUARED_ERROR).forward_launches(True)] == names
    # On AMD's CPUs of 16-float vectors, AMD_WIDE's blocks, which the tuner also tries
    shapes = {"gemm_outer": (1024, 1024, 1024, 1, 1), "gemm_panels": (256, 512, 784),
              "gemm_outer_update": (512, 784, 256)}
    assert set(blocks.AMD_WIDE) == set(shapes)
    for form, chosen in blocks.AMD_WIDE.items():
        assert chosen in blocks.candidates(device, form) and chosen != blocks.FORMS[form][0]
        assert blocks.block(device, form, shapes[form]) == chosen
    # and the convolutions' blocks by their F filters: the forward's of the fewest blocks of
    # FM + GATHER_COST (FILTER_BLOCKS, which the tuner tries), the kernel gradient's of blocks
    # of 3 filters where they fit F better than blocks of 4
    for filters, fm in ((1, 4), (3, 4), (5, 5), (6, 6), (9, 10), (10, 10), (12, 12), (15, 8),
                        (16, 8), (24, 12)):
        chosen = blocks.block(device, "conv_forward", (64, 25, filters, 196))
        assert chosen in blocks.candidates(device, "conv_forward") and chosen[0] == fm, filters
    tried = blocks.candidates(device, "conv_forward")
    assert set(blocks.FILTER_BLOCKS) <= set(tried)
    assert not any(b[:2] in blocks.AMD_LEFT_OUT for b in tried)
    for filters, fn in ((1, 3), (3, 3), (5, 3), (9, 3), (10, 4), (16, 4), (24, 4)):
        chosen = blocks.block(device, "conv_kernel_gradient", (64, 25, filters, 196))
        assert chosen in blocks.candidates(device, "conv_kernel_gradient") and \
            chosen[1] == fn, filters


def test_amd_wide_is_an_amd_cpu_of_16_float_vectors():
    """PoCL gives any CPU Intel's vendor id; its vendor string names AMD's."""
    def device(vendor, narrow=False, gpu=False):
        return SimpleNamespace(gpu=gpu, narrow=narrow, cl_device=SimpleNamespace(vendor=vendor))
    assert blocks.amd_wide(device("AuthenticAMD"))
    assert not blocks.amd_wide(device("GenuineIntel"))
    assert not blocks.amd_wide(device("AuthenticAMD", narrow=True))  # AVX2: NARROW's
    assert not blocks.amd_wide(device("Advanced Micro Devices, Inc.", gpu=True))
