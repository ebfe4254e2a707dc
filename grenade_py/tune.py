"""`python -m grenade_py.tune`: choose the kernels' register blocks (on a GPU, the tiled GEMMs'
tile shapes and the convolutions' blocks) for this device by timing them on the training steps
of the MNIST networks or the user's own (`--network`; see grenade_py/blocks.py), and where
FullyConnected weights take their step (blocks.CHOICES); later runs, in any process, use what
it keeps in the user's cache folder."""
from __future__ import annotations

import contextlib
import json
import os
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import click
import numpy as np

from grenade_py import blocks
from grenade_py.blocks import label, record_path
from grenade_py.cli import device_options, given, open_device, user_errors
from grenade_py.device import Device
from grenade_py.errors import GrenadeError
from grenade_py.execution import Step
from grenade_py.layers.fully_connected import FullyConnected
from grenade_py.losses import LOSSES
from grenade_py.mnist import ARCHS, mnist_network
from grenade_py.model_file import MAGIC
from grenade_py.model_file import read as read_model
from grenade_py.network import Network
from grenade_py.optimizers import SGD

#: The most processes `compile_ahead` compiles in.
COMPILERS = 8


def training_sites(net: Network, n: int, loss: str = "cross_entropy"
                   ) -> tuple[Step, list[blocks.Site]]:
    """A training step of `net` over `n` rows and the tunable launches of its forward pass,
    backward pass, and backward pass stepping the weights in their gradients' GEMMs."""
    with blocks.recording() as sites:
        step = Step(net, n, LOSSES[loss])
        step.forward_launches(True)
        step.backward_launches()
        step.backward_launches(update=True)
    return step, sites


def loss_for(net: Network) -> str:
    """The loss a tuned training step takes: cross-entropy for a network ending in a Softmax
    (at the logits, as MNIST's are trained), else squared error."""
    try:
        LOSSES["cross_entropy"].check(net)
    except ValueError:
        return "squared_error"
    return "cross_entropy"


def compile_part(specs: list[dict[str, Any]], sizes: list[int], device_spec: str | None,
                 precision: str, part: int, parts: int, device: Device | None = None) -> None:
    """Compile this process's part of the candidates of the training steps of the networks
    `specs` describe (`blocks.compile_part`), on `device` or the one `device_spec` names."""
    device = device or open_device(device_spec, precision, announce=False)
    seen: set[tuple[str, blocks.Block]] = set()
    for spec in specs:
        for n in sizes:
            net = Network.from_spec(spec, device=device, seed=1)
            try:
                _, sites = training_sites(net, n, loss_for(net))
            except ValueError:  # a network that cannot train on n rows (tune_network says so)
                continue
            blocks.compile_part(device, sites, part, parts, seen)


def network_spec(path: str, device: Device) -> dict[str, Any]:
    """The spec of the network in the file at `path`: a model file (Network.save, the CLIs'
    --save) or a Network's spec in JSON (`Network.spec()`, the mnist CLI's --arch-file); a
    usage error naming what is wrong."""
    def bad(why: str) -> click.BadParameter:
        return click.BadParameter(why, param_hint="--network")

    try:
        with open(path, "rb") as f:
            model = f.read(len(MAGIC)) == MAGIC
        # a model file's header holds its spec
        spec = read_model(path)[0].get("network") if model else \
            json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise bad(f"cannot read {path}: {e.strerror or e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise bad(f"{path} is neither a model file nor a network's spec in JSON ({e})") from None
    except GrenadeError as e:
        raise bad(str(e)) from None
    if isinstance(spec, dict) and spec.get("type") == "RecurrentNetwork":
        raise bad(f"{path} holds a RecurrentNetwork: the tuner times the training steps of "
                  "feed-forward Networks")
    if not isinstance(spec, dict) or spec.get("type") != "Network":
        raise bad(f"{path} must hold a Network's spec: {{\"type\": \"Network\", \"input\": ..., "
                  "\"layers\": [...]}")
    try:
        Network.from_spec(spec, device=device, seed=1)
    except (ValueError, GrenadeError) as e:
        raise bad(f"{path}: {e}") from None
    return spec


def compile_ahead(specs: list[dict[str, Any]], sizes: list[int], device_spec: str | None,
                  device: Device) -> None:
    """On a CPU of several cores (PoCL compiles a kernel's work-group function for each
    work-group shape the first time it runs, one at a time in a process), compile the
    candidates the tuner will time in one process per core (at most COMPILERS), each its part,
    before any is timed; PoCL's cache on disk then holds them all. Nothing on a GPU (its
    programs are compiled whole)."""
    parts = 1 if device.gpu else min(COMPILERS, len(os.sched_getaffinity(0)))
    if parts < 2:
        return
    with ProcessPoolExecutor(parts - 1, mp_context=get_context("spawn")) as pool:
        others = [pool.submit(compile_part, specs, sizes, device_spec, device.precision, part,
                              parts) for part in range(1, parts)]
        compile_part(specs, sizes, device_spec, device.precision, 0, parts, device)
        for other in others:
            other.result()


def tune_network(net: Network, n: int, loss: str = "cross_entropy",
                 repeats: int = 5) -> list[blocks.Tuned]:
    """Tune the blocks (or tile shapes) of every launch of a training step of `net` over `n` rows
    (see `blocks.tune_sites`), on random data, the weights' steps in their gradients' GEMMs
    (`Step.descend`) too, each timed alone, then the FINALISTS inside the step; the network's
    gradients and momentum are overwritten (zeroed), its parameters are not. Steps built
    afterwards use the results (those a network keeps from earlier calls keep their blocks)."""
    step, sites = training_sites(net, n, loss)
    rng = np.random.default_rng(0)
    step.input.set(rng.uniform(size=step.input.shape).astype(net.device.dtype))
    step.target.set(np.full(step.target.shape, 1 / np.prod(step.target.shape[1:]),
                            net.device.dtype))
    step.forward(True)
    step.backward()

    def training() -> None:  # the step as fit runs it, and as back_propagate does
        step.forward(True)
        step.backward()
        step.backward(update=True)

    return blocks.tune_sites(net.device, sites, repeats, step=training)


@dataclass
class Choice:
    """One of blocks.CHOICES made for a launch shape: the training step's median seconds the
    first way and the other, and which was kept."""
    name: str
    shape: blocks.Block
    first_s: float
    other_s: float
    first: bool


@contextlib.contextmanager
def _choosing(device: Device, name: str, shape: blocks.Block, first: bool) -> Iterator[None]:
    """Choice `name` at `shape` taken the first way or not while inside; as before after."""
    shapes, key = blocks.table(device).setdefault(name, {}), blocks.key(shape)
    before = shapes.get(key)
    shapes[key] = [int(first)]
    try:
        yield
    finally:
        if before is None:
            del shapes[key]
        else:
            shapes[key] = before


def choice_points(net: Network, n: int) -> list[tuple[str, blocks.Block]]:
    """The choices (blocks.CHOICES) that change a training step of `net` over `n` rows on its
    device: each FullyConnected layer's weights' step in their gradient's GEMM, where it can
    run there."""
    device = net.device
    found: list[tuple[str, blocks.Block]] = []
    for _, layer, _ in net.nodes(net.input_shape):
        if isinstance(layer, FullyConnected):
            shape = (layer.o, layer.i, n)
            with _choosing(device, "update_fused", shape, True):
                if layer.update_fused(n):
                    found.append(("update_fused", shape))
    return found


#: Rounds of `tune_choices`' timings per round of the blocks' (3 steps each way a round; at
#: MNIST's MLP at batch 256 on a 2-core EPYC, 0.3 s a choice in 15 rounds). The first way of
#: a choice (the one it takes untuned) is kept unless the other's score is CHOICE_MARGIN lower:
#: on a 2-core AVX-512 EPYC the MLP's steps at batch 256 took 2.36 ms with the weights stepped
#: in the GEMM and 2.34 without, but its epochs, taking turns (20 pairs), 0.99x as long with
#: (faster in 14); at batch 32, 416 us against 385, epochs 1.06x (faster in 3 of 20).
CHOICE_ROUNDS, CHOICE_MARGIN = 3, 0.02


def tune_choices(net: Network, n: int, tuned: list[blocks.Tuned], loss: str = "cross_entropy",
                 repeats: int = 5) -> list[Choice]:
    """Make each choice of `choice_points` for a training step of `net` over `n` rows: a Step
    built each way (the blocks of its launch shapes not among `tuned` tuned first, each
    alone), then their steps (forward, and `descend` under SGD) timed taking
    turns in CHOICE_ROUNDS x `repeats` rounds; the way of the lower median of its time over
    the round's mean (by CHOICE_MARGIN, to leave the first way) is kept in the device's table
    and the cache file. Steps built afterwards take it; the network's parameters are as
    before, its momentum zeroed."""
    device, made = net.device, []
    kept = net.get_parameters()
    done = {(row.form, row.shape) for row in tuned}
    rng = np.random.default_rng(0)
    try:
        for name, shape in choice_points(net, n):
            runs = {}
            for first in (True, False):
                with _choosing(device, name, shape, first):
                    step, sites = training_sites(net, n, loss)
                step.input.set(rng.uniform(size=step.input.shape).astype(device.dtype))
                step.target.set(np.full(step.target.shape, 1 / np.prod(step.target.shape[1:]),
                                        device.dtype))
                new = [site for site in sites if (site[0], site[1]) not in done]
                done |= {(site[0], site[1]) for site in new}
                blocks.tune_sites(device, new, repeats)
                runs[first] = lambda step=step: (step.forward(True),
                                                 step.descend(SGD(0.01), 1 / n))
            rounds = [{first: blocks.seconds(device, run, 3) for first, run in runs.items()}
                      for _ in range(CHOICE_ROUNDS * repeats)]
            score = {first: statistics.median(r[first] / (r[True] + r[False]) for r in rounds)
                     for first in runs}
            first = score[False] * (1 + CHOICE_MARGIN) >= score[True]
            blocks.table(device).setdefault(name, {})[blocks.key(shape)] = [int(first)]
            made.append(Choice(name, shape, statistics.median(r[True] for r in rounds),
                               statistics.median(r[False] for r in rounds), first))
    finally:
        net.set_parameters(kept)
    if made and (problem := blocks.save(device)) is not None:
        blocks.log.warning("the tuned choices are used in this process but could not be "
                           "kept: %s", problem)
    return made


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--arch", "archs", default="mlp,lenet,bn", show_default=True,
              help="The MNIST architectures (python -m grenade_py.mnist --arch) whose training "
                   "steps are tuned, comma-separated (with --network: none unless given).")
@click.option("--network", "files", multiple=True, type=click.Path(dir_okay=False),
              help="A network of your own to tune: a model file (--save, Network.save) or its "
                   "spec in JSON (Network.spec()); may be given more than once.")
@click.option("--batch", "batches", default="32,64,128,256", show_default=True,
              help="The batch sizes, comma-separated.")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True,
              help="Timed rounds per candidate.")
@device_options
def main(archs: str, files: tuple[str, ...], batches: str, repeats: int,
         device_spec: str | None, precision: str) -> None:
    """Time every register block of the GEMM and convolution kernels (on a GPU, every tile
    shape of the tiled GEMMs) on the training steps of the given networks and batch sizes, on
    this device, and keep the fastest for each launch shape in the user's cache folder, with
    whether each large FullyConnected layer's weights step in their gradient's GEMM or after
    it: later runs use them."""
    names = [a.strip() for a in archs.split(",") if a.strip()] if given("archs") or not files \
        else []
    unknown = [a for a in names if a not in ARCHS]
    if unknown or not (names or files):
        raise click.BadParameter(f"{', '.join(unknown) or 'none given'}: choose from "
                                 f"{', '.join(sorted(ARCHS))}", param_hint="--arch")
    try:
        sizes = [int(b) for b in batches.split(",") if b.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise click.BadParameter(f"{batches!r}: give positive batch sizes, e.g. 32,64",
                                 param_hint="--batch")
    with user_errors():
        device = open_device(device_spec, precision)
        problem = blocks.save(device)  # before any timing: a folder it cannot write
        if problem:
            raise click.ClickException(f"cannot keep the tuned blocks ({problem}): set "
                                       "XDG_CACHE_HOME to a writable folder")
        networks = [(arch, mnist_network(arch, device, seed=1).spec()) for arch in names] + [
            (path, network_spec(path, device)) for path in files]
        start = time.perf_counter()
        compile_ahead([spec for _, spec in networks], sizes, device_spec, device)
        click.echo(f"{'network, batch, shape':24s} {'untuned':>42s} {'tuned':>42s}")
        for arch, spec in networks:
            loss = loss_for(Network.from_spec(spec, device=device, seed=1))
            for n in sizes:
                try:
                    rows = tune_network(Network.from_spec(spec, device=device, seed=1), n, loss,
                                        repeats=repeats)
                except ValueError as e:  # a network that cannot train on n rows
                    click.echo(f"{arch} b{n}: skipped: {e}", err=True)
                    continue
                for row in rows:
                    where = f"{arch} b{n} {','.join(map(str, row.shape))}"
                    click.echo(f"{where:24s} {label(row.form, row.default):>32s} "
                               f"{row.default_s * 1e6:6.0f} us "
                               f"{label(row.form, row.best):>32s} "
                               f"{row.best_s * 1e6:6.0f} us {row.default_s / row.best_s:5.2f}x")
                for c in tune_choices(Network.from_spec(spec, device=device, seed=1), n, rows,
                                      loss, repeats=repeats):
                    where = f"{arch} b{n} {','.join(map(str, c.shape))}"
                    click.echo(f"{where:24s} {c.name:>21s}: a step {c.first_s * 1e6:6.0f} us "
                               f"with, {c.other_s * 1e6:6.0f} us without: "
                               f"{'with' if c.first else 'without'}")
        click.echo(f"tuned in {time.perf_counter() - start:.1f} s; kept in {record_path()}")


if __name__ == "__main__":
    main()
