"""Trained models shipped with grenade_py: `grenade_py.models.load(name)`.

Each is a model file here (saved without its optimiser's state: run it, or train on from zero
moments), made by `examples/make_models.py`, which trains it as `index.json` says and records the
figure `measure` computes. `python -m grenade_py.models` lists them. Where Grenade has every
layer, a file in Grenade's own format sits beside it (`NAME.grenade`, float64, for
`grenade_file.load_grenade`), but for the MNIST MLP, which would add 3.3 MB: write it with
`save_grenade(load("mnist-mlp"), path)`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import numpy as np

from grenade_py.device import Device
from grenade_py.errors import GrenadeError
from grenade_py.network import Network
from grenade_py.network_file import read_metadata
from grenade_py.recurrent_network import RecurrentNetwork
from grenade_py.runner import evaluate, run_net

HERE = Path(__file__).parent


def index() -> dict[str, dict[str, Any]]:
    """Every shipped model by name: its file, how it was made, and its recorded figure."""
    loaded: dict[str, dict[str, Any]] = json.loads((HERE / "index.json").read_text())
    return loaded


def path_of(name: str) -> Path:
    """The model file of `name`; GrenadeError naming the models there are otherwise."""
    models = index()
    if name not in models:
        raise GrenadeError(f"no shipped model {name!r}: there are {', '.join(sorted(models))}")
    return HERE / models[name]["file"]


def load(name: str, device: Device | str | None = None) -> Network:
    """The shipped model `name` (see `index`) on `device` (default: a new float32 Device)."""
    path = path_of(name)
    cls = RecurrentNetwork if index()[name]["class"] == "RecurrentNetwork" else Network
    return cls.load(path, device=device)


def measure(name: str, net: Network, data: Path) -> float:
    """The figure recorded for model `name`: accuracy on what its task measures. `data`: the
    folder holding mnist/ and shakespeare/ (the shared data)."""
    if name == "circles":  # the fraction of a 101 x 101 grid over [-1, 1]^2 classified right
        from grenade_py.feedforward import circles

        axis = np.linspace(-1, 1, 101)
        points = np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2)
        return float(np.mean((run_net(net, points) > 0.5) == (circles(points) > 0.5)))
    if name.startswith("mnist-"):  # accuracy on the 10k test images
        from grenade_py.datasets import load_mnist

        _, _, test_x, test_y = load_mnist(data / "mnist")
        shape = net.input_shape.dims
        return evaluate(net, test_x.reshape(-1, *shape), test_y, loss="cross_entropy")[
            "accuracy"]
    if name == "shakespeare":  # the next symbol right after 2,000 windows of 49
        from grenade_py.datasets import read_text
        from grenade_py.recurrent_runner import run_recurrent

        assert isinstance(net, RecurrentNetwork)
        alphabet = read_metadata(path_of(name))["alphabet"]
        lookup = {c: k for k, c in enumerate(alphabet)}
        codes = np.array([lookup[c] for c in read_text(data / "shakespeare" / "plays.txt")])
        starts = np.random.default_rng(0).integers(0, len(codes) - 50, 2000)
        windows = codes[starts[:, None] + np.arange(50)]
        xs = np.eye(net.input_shape.dims[0])[windows[:, :-1]]
        ys, _ = run_recurrent(net, xs)
        return float(np.mean(ys[:, -1].argmax(axis=1) == windows[:, -1]))
    if name == "gan-generator":  # the mean pixel of 64 samples from seeded noise
        noise = np.random.default_rng(0).uniform(-1, 1, size=(64, 80))
        return float(run_net(net, noise).mean())
    raise GrenadeError(f"no figure for {name!r}")


@click.command()
def main() -> None:
    """List the shipped models with their recorded figures."""
    for name, entry in sorted(index().items()):
        size = (HERE / entry["file"]).stat().st_size
        click.echo(f"{name:15s} {entry['figure']}: {entry['value']:.4f}  ({size / 1e3:.0f} kB; "
                   f"{entry['made']})")


if __name__ == "__main__":
    main()
