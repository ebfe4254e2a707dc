"""The wheel carries the kernels and the shipped models; the Nix files parse."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_contains_kernels(tmp_path):
    pytest.importorskip("build", reason="the test extra installs `build`")
    source = tmp_path / "src"  # build from a copy: never write build/ into the checkout
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "build",
                                                                "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "-o",
                    str(tmp_path / "dist"), str(source)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("grenade_py-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    kernels = {Path(n).name for n in names if n.startswith("grenade_py/kernels/")}
    assert {p.name for p in (ROOT / "kernels").glob("*.cl")} <= kernels
    assert "grenade_py/layers/fully_connected.py" in names
    shipped = {f"grenade_py/models/{p.name}" for p in (ROOT / "grenade_py" / "models").iterdir()
               if p.suffix in (".gnpy", ".grenade", ".json")}
    assert "grenade_py/models/index.json" in shipped and shipped <= set(names)
    # every program (python -m grenade_py.X) is installed as grenade-X
    (entry_points,) = (n for n in names if n.endswith(".dist-info/entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    for program in PROGRAMS:
        assert f"grenade-{program} = grenade_py.{program}:main" in scripts, program


#: The command-line programs (DESIGN.md's top floor).
PROGRAMS = ("feedforward", "mnist", "recurrent", "shakespeare", "devices", "bench", "tune",
            "export")


@pytest.mark.parametrize("path", ["flake.nix", "nix/package.nix", "nix/shell.nix"])
def test_nix_files_parse(path):
    nix = shutil.which("nix-instantiate")
    if nix is None:
        pytest.skip("nix-instantiate is not installed (Debian: apt install nix-bin)")
    subprocess.run([nix, "--parse", str(ROOT / path)], check=True, capture_output=True)


def test_a_missing_extra_names_packages_pip_can_install(monkeypatch):
    """grenade_py is not on PyPI, so `pip install 'grenade_py[onnx]'` (what these said) finds
    nothing: each names the packages themselves."""
    from grenade_py import D1, FullyConnected, GrenadeError, Network, distributed, plots

    for hidden in ("onnx", "matplotlib", "mpi4py"):
        monkeypatch.setitem(sys.modules, hidden, None)  # its import fails
    net = Network([FullyConnected(2, 1)], input=D1(2))
    for call, error, message in (
            (lambda: net.to_onnx("unwritten.onnx"), GrenadeError, "pip install onnx (the"),
            (plots.pyplot, GrenadeError, "pip install matplotlib (the [plot] extra)"),
            (distributed._mpi, ImportError, "pip install mpi4py mpich (the [mpi] extra)")):
        with pytest.raises(error) as raised:
            call()
        assert message in str(raised.value) and "grenade_py[" not in str(raised.value)
