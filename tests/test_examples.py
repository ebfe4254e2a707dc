"""The examples run and reach what they claim."""
from __future__ import annotations

import importlib.util
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_xor_reaches_near_zero_error():
    assert load("xor").main() < 1e-3


def test_circles_library_example():
    assert load("circles").main(examples=30_000) > 0.9
