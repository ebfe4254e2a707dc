"""The README's Python examples run as written, and the values their comments state are the
values they print (`print(expr)  # value`, or `# value: what it is`, where the comment has no
'...')."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import MNIST_DIR

README = Path(__file__).resolve().parent.parent / "README.md"
#: `print(expr)  # value` or `print(expr)  # value: what it is`.
CLAIM = re.compile(r"^print\((?P<expr>[^#]*)\)\s+# (?P<value>.*?)(?::\s.*)?$")


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def run(code: str, namespace: dict) -> int:
    """Run `code` in `namespace`; check its claims; return how many it checked."""
    exec(compile(code, str(README), "exec"), namespace)
    checked = 0
    for line in code.splitlines():
        claim = CLAIM.match(line)
        if claim and "..." not in line:
            assert str(eval(claim["expr"], namespace)) == claim["value"], line
            checked += 1
    return checked


def test_the_readme_examples_run(tmp_path, monkeypatch):
    """The quick start (which saves a file: in a folder of the test's), then the branches
    example, which reuses its names, then the recurrent one. (The optimisers' block is a
    fragment naming the MNIST example's data; the MNIST example and the early stopping after it
    are the next test.)"""
    found = blocks()
    assert len(found) == 6 and "fit(net, AdamW" in found[2] and "load_mnist" in found[3]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    checked = [run(code, namespace) for code in (found[0], found[1], found[5])]
    assert (tmp_path / "circles.gnpy").exists()
    assert checked[0] == 2  # the shapes and the parameter count


def test_the_readme_mnist_example_runs(tmp_path, monkeypatch):
    """After the quick start, whose imports it uses; one epoch of its ten. Then the early
    stopping, for two epochs of its 50: the best epoch's network is kept."""
    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"MNIST is not in {MNIST_DIR}")
    found = blocks()
    assert '"../shared/data/mnist"' in found[3] and "epochs=10" in found[3]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    run(found[0], namespace)
    run(found[3].replace('"../shared/data/mnist"', repr(str(MNIST_DIR)))
        .replace("epochs=10", "epochs=1"), namespace)
    assert namespace["history"][-1]["val_accuracy"] > 0.9  # chance: 0.1
    assert "epochs=50" in found[4]
    run(found[4].replace("epochs=50", "epochs=2"), namespace)
    best = namespace["best"]
    assert best["epoch"] in (1, 2) and best["net"] is not namespace["net"]
    assert evaluate_loss(best["net"], namespace) == best["val_loss"]  # that epoch's network


def evaluate_loss(net, namespace: dict) -> float:
    from grenade_py import evaluate
    return evaluate(net, namespace["test_x"], namespace["test_y"], loss="cross_entropy")["loss"]
