"""Train the models shipped in grenade_py/models and record their figures in its index.json.

    python examples/make_models.py --data ../shared/data [--only NAME ...]

Each model is trained by the command its entry names (the CLIs and the GAN example, seeded),
saved without its optimiser's state (and in Grenade's format where Grenade has every layer,
the MNIST MLP aside: 3.3 MB), and measured by `grenade_py.models.measure`, which the tests run
again on the shipped file.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from grenade_py.grenade_file import save_grenade
from grenade_py.models import HERE, measure
from grenade_py.network import Network
from grenade_py.network_file import read_metadata
from grenade_py.recurrent_network import RecurrentNetwork

EXAMPLES = Path(__file__).resolve().parent

#: name: (the command after `python`, with {data} and {out}; the figure; Grenade file or not)
RECIPES = {
    "circles": ("-m grenade_py.feedforward --seed 1 --save {out}", "grid accuracy", True),
    "mnist-mlp": ("-m grenade_py.mnist --data {data}/mnist --arch mlp --seed 1 --save {out}",
                  "test accuracy", False),
    "mnist-lenet": ("-m grenade_py.mnist --data {data}/mnist --arch lenet --seed 1 --save {out}",
                    "test accuracy", True),
    "mnist-bn": ("-m grenade_py.mnist --data {data}/mnist --arch bn --seed 1 --save {out}",
                 "test accuracy", False),
    # Grenade's network; Softmax outputs, a target on every step, summed BPTT over 16 windows
    # and Adam: Grenade's own settings need about an hour to write words.
    "shakespeare": ("-m grenade_py.shakespeare --data {data}/shakespeare/plays.txt -e 200000 "
                    "--output softmax --targets every --batch 16 --optimizer adam -r 0.003 "
                    "--seed 1 --sample-length 300 --save {out}", "next-symbol accuracy", True),
    "gan-generator": (f"{EXAMPLES / 'gan_mnist.py'} --data {{data}}/mnist --iterations 4 "
                      "--save {out}", "mean pixel of 64 samples", True),
}


@click.command()
@click.option("--data", type=click.Path(file_okay=False, exists=True), required=True,
              help="The shared data folder (mnist/, shakespeare/).")
@click.option("--only", multiple=True, type=click.Choice(sorted(RECIPES)))
def main(data: str, only: tuple[str, ...]) -> None:
    """Train, save and measure the shipped models."""
    index_path = HERE / "index.json"
    entries = json.loads(index_path.read_text()) if index_path.exists() else {}
    for name in only or RECIPES:
        command, figure, grenade = RECIPES[name]
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "model.gnpy"
            arguments = command.format(data=data, out=out).split()
            start = time.perf_counter()
            subprocess.run([sys.executable, *arguments], check=True, stdout=subprocess.DEVNULL)
            seconds = time.perf_counter() - start
            recurrent = name == "shakespeare"
            net = (RecurrentNetwork if recurrent else Network).load(out)
            net.save(HERE / f"{name}.gnpy", read_metadata(out), optimizer_state=False)
        if grenade:
            save_grenade(net, HERE / f"{name}.grenade")
        entries[name] = {"file": f"{name}.gnpy", "class": type(net).__name__,
                         "made": "python " + command.format(data="DATA", out="OUT").replace(
                             str(EXAMPLES), "examples"),
                         "seconds": round(seconds, 1), "figure": figure}
        index_path.write_text(json.dumps(entries, indent=1) + "\n")
        entries[name]["value"] = measure(name, net, Path(data))
        index_path.write_text(json.dumps(entries, indent=1) + "\n")
        click.echo(f"{name}: {figure} {entries[name]['value']:.4f} ({seconds:.0f} s)")


if __name__ == "__main__":
    main()
