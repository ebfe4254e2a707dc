"""`python -m grenade_py.bench_against REV`: this tree's speed against an earlier commit's, the two
taking turns in one process (issue 16's no-regression figures).

The commit's `grenade_py` and `kernels` come out of git (`git archive`) into a temporary folder
and are imported there as the package `grenade_then`, beside this process's `grenade_py`, so that
both run on the same machine in the same minutes: this machine's speed moves by 10-40% from one
minute to the next, which timings made apart would take for a change. Each figure is the
median over the rounds of this tree's time over the commit's in the same round (the two taking
turns, each round starting with the other), with both medians. Both sides train the same
networks from the same seeds; "same weights" says whether they ended with the same bits.

The figures: MNIST MLP (784-512-10) epochs under `fit` at batch 32, 64 and 128; a LeNet epoch
at 64; Grenade's per-example training of the feedforward network; Grenade's Shakespeare LSTM
over 50-symbol windows; and an Adam epoch of the MLP over an SGD one at batch 64 (this tree
only). The commit must have the calls these use (`fit`, `train(per_example=True)`,
`SymbolCorpus.train`, `mnist_network`): 955953e and later do.
"""
from __future__ import annotations

import importlib
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import click
import numpy as np

import grenade_py
from grenade_py.bench import _fit_epoch, interleaved, mnist_data
from grenade_py.cli import user_errors
from grenade_py.errors import DataError
from grenade_py.mnist import mnist_network

#: The name the commit's package is imported under.
THEN = "grenade_then"
FIGURES = ("mlp32", "mlp64", "mlp128", "lenet64", "feedforward", "shakespeare", "adam")


def import_commit(rev: str, repo: Path, folder: Path) -> ModuleType:
    """The package `grenade_py` as it was at commit `rev` of the git repository `repo`, written
    into `folder` and imported as THEN (its own name replaced throughout; its kernels beside
    it, where its source-tree fallback finds them). DataError if git cannot give it."""
    try:
        archive = subprocess.run(["git", "-C", str(repo), "archive", rev, "grenade_py",
                                  "kernels"], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    except FileNotFoundError as e:
        raise DataError(f"bench_against needs git and tar on the PATH ({e.filename} is not)"
                        ) from None
    except subprocess.CalledProcessError as e:
        said = e.stderr.decode(errors="replace").strip() if e.stderr else ""
        raise DataError(f"git could not give {rev!r} from {repo}: {said or e} (run it in a git "
                        "checkout of grenade_py, with a commit that has grenade_py/ and "
                        "kernels/)") from None
    package = folder / THEN
    (folder / "grenade_py").rename(package)
    name = re.compile(r"\bgrenade_py\b")
    for source in package.rglob("*.py"):
        source.write_text(name.sub(THEN, source.read_text()))
    sys.path.insert(0, str(folder))
    importlib.invalidate_caches()
    return importlib.import_module(THEN)


def _workload(g: Any, figure: str, data: tuple[np.ndarray, np.ndarray]
              ) -> tuple[Callable[[], float | None], Any]:
    """One run of `figure` in package `g` (this tree's or the commit's): (the run, the network
    it trains). An epoch's run gives fit's own seconds for it (not the call's upload of the
    images, which a run of many epochs pays once)."""
    mnist = importlib.import_module(f"{g.__name__}.mnist")
    device = g.Device()
    lp = g.LearningParameters(0.01, 0.9, 0.0005)
    if figure.startswith(("mlp", "lenet")):
        arch, batch = re.fullmatch(r"([a-z]+)(\d+)", figure).groups()  # type: ignore[union-attr]
        net = mnist.mnist_network(arch, device, seed=1)
        x, y = data
        if arch == "lenet":  # a quarter of the images: a LeNet epoch takes 2-4x an MLP's
            x, y = x[:len(x) // 4].reshape(-1, 28, 28), y[:len(y) // 4]
        return (lambda: g.fit(net, lp, x, y, batch_size=int(batch), epochs=1, seed=0,
                              loss="cross_entropy")[0]["seconds"]), net
    if figure == "feedforward":
        feedforward = importlib.import_module(f"{g.__name__}.feedforward")
        xs, ys = feedforward.sample(20_000, np.random.default_rng(0))
        net = feedforward.feedforward_network(device, seed=1)

        def per_example() -> None:
            g.train(net, lp, xs, ys, per_example=True)
            device.queue.finish()
        return per_example, net
    rng = np.random.default_rng(0)  # shakespeare: Grenade's cell on 100 windows of 50 symbols
    codes = rng.integers(0, 40, size=200_000)
    net = g.RecurrentNetwork([g.LSTM(40, 80), g.LSTM(80, 40), g.FullyConnected(40, 40),
                              g.Logit()], input=g.D1(40), device=device, seed=1, init="grenade")
    corpus = importlib.import_module(f"{g.__name__}.recurrent_runner").SymbolCorpus(net, codes)
    offsets = rng.integers(0, len(codes) - 60, size=100)
    shakespeare_lp = g.LearningParameters(0.01, 0.95, 0.000001)

    def windows() -> None:
        corpus.train(shakespeare_lp, offsets, 49)
        device.queue.finish()
    return windows, net


def taking_turns(runs: dict[str, Callable[[], float | None]], rounds: int
                 ) -> tuple[dict[str, float], float]:
    """Each run's median seconds over `rounds` rounds after an untimed one, the two taking turns
    (`bench.interleaved`), and the median over the rounds of the first's time over the
    second's."""
    ratios: dict[str, float] = {}
    medians = dict(interleaved(runs, rounds, ratios=ratios))
    return medians, next(iter(ratios.values()))


def same_weights(a: Any, b: Any) -> bool:
    """Whether two networks hold the same parameters, to the bit."""
    return all(np.array_equal(p[k], q[k]) for p, q in
               zip(a.get_parameters(), b.get_parameters(), strict=True) for k in p)


def compare(then: ModuleType, rev: str, figures: list[str], rounds: int,
            data: tuple[np.ndarray, np.ndarray]) -> list[str]:
    """One line per figure: both medians and this tree's time over the commit's, by round."""
    lines = []
    for figure in figures:
        if figure == "adam":
            adam = _fit_epoch(mnist_network("mlp", grenade_py.Device(), seed=1),
                              grenade_py.Adam(1e-3), *data, 64)
            medians, ratio = taking_turns({"Adam": adam,
                                           "SGD": _workload(grenade_py, "mlp64", data)[0]},
                                          rounds)
            lines.append(f"adam: an Adam epoch {medians['Adam'] * 1e3:.1f} ms, an SGD epoch "
                         f"{medians['SGD'] * 1e3:.1f} ms (batch 64, this tree): Adam/SGD "
                         f"{ratio:.3f}x by round")
            continue
        (now, ours), (before, theirs) = (_workload(g, figure, data) for g in (grenade_py, then))
        medians, ratio = taking_turns({"now": now, "then": before}, rounds)
        lines.append(f"{figure}: this tree {medians['now'] * 1e3:.1f} ms, {rev} "
                     f"{medians['then'] * 1e3:.1f} ms: {ratio:.3f}x by round; same weights: "
                     f"{'yes' if same_weights(ours, theirs) else 'no'}")
    return lines


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("rev")
@click.option("--repo", default=".", show_default=True,
              type=click.Path(exists=True, file_okay=False),
              help="The git checkout REV is taken from.")
@click.option("--figures", default=",".join(FIGURES), show_default=True,
              help="Which figures, comma-separated.")
@click.option("--rounds", default=7, show_default=True, type=click.IntRange(min=1),
              help="Timed rounds per figure.")
@click.option("--data", "data_dir", default=None,
              help="MNIST folder  [default: ../shared/data/mnist if it exists, else random "
                   "data of its shapes]")
@click.option("--examples", default=24_000, show_default=True, type=click.IntRange(min=64),
              help="Images per MLP epoch (LeNet's: a quarter).")
def main(rev: str, repo: str, figures: str, rounds: int, data_dir: str | None,
         examples: int) -> None:
    """Time this tree against commit REV on issue 16's figures, taking turns in one process;
    print one line per figure (this tree's time over REV's, by round)."""
    with user_errors():
        chosen = [f.strip() for f in figures.split(",") if f.strip()]
        unknown = sorted(set(chosen) - set(FIGURES))
        if unknown or not chosen:
            raise click.BadParameter(f"{', '.join(unknown) or 'none given'}: choose from "
                                     f"{', '.join(FIGURES)}", param_hint="--figures")
        (x, y), label = mnist_data(data_dir)
        data = (x[:examples].reshape(-1, 784).astype(np.float32), y[:examples])
        with tempfile.TemporaryDirectory(prefix="grenade_then_") as folder:
            then = import_commit(rev, Path(repo), Path(folder))
            click.echo(f"{grenade_py.Device().name}; {label}, {len(data[0]):,} images; "
                       f"{rounds} rounds")
            for line in compare(then, rev, chosen, rounds, data):
                click.echo(line)


if __name__ == "__main__":
    main()
