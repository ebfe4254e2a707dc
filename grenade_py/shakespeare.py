"""Grenade's shakespeare example: a character-level LSTM network learns a text, then writes.

    python -m grenade_py.shakespeare --data ../shared/data/shakespeare/plays.txt [-e N] ...

As Grenade's examples/main/shakespeare.hs: LSTM n->80, LSTM 80->40, FC 40->n, Logit over one-hot
symbols, n the alphabet's size (the text's distinct characters; with --annotate-capitals a
capital is '^' and its lowercase letter, Grenade's encoding, and --symbols 40 pads the one-hot
vectors to Grenade's exact 40). Training runs in 10 rounds of examples/10 windows at random
offsets; a window of --sequence-length characters gives its first length - 1 as inputs and the
last as the one target (Grenade's trainSlice; --targets every puts a target on every step).
After each round it prints the loss measured on that round's targets and a sample generated
from a zero input and the learned states, each symbol drawn with probability proportional to
output^(1 / temperature).
"""
from __future__ import annotations

import math
import sys
from collections import Counter

import click
import numpy as np

from grenade_py.cli import (
    check_schedule,
    check_writable,
    chosen_optimizer,
    device_options,
    given,
    learning_options,
    model_file_options,
    open_device,
    optimizer_from_options,
    report_options,
    run_log,
    save_on_interrupt,
    tenths,
    user_errors,
)
from grenade_py.datasets import read_text
from grenade_py.device import Device
from grenade_py.errors import DataError, ModelFileError
from grenade_py.layers import INITS, LSTM, FullyConnected, Logit, Softmax
from grenade_py.network_file import read_metadata
from grenade_py.recurrent_network import RecurrentNetwork
from grenade_py.recurrent_runner import Metrics, RecurrentState, SymbolCorpus, run_recurrent
from grenade_py.schedules import schedule_rate
from grenade_py.shapes import D1

#: Windows trained between progress updates (and Ctrl-C checks).
CHUNK = 100


def annotate_capitals(text: str) -> str:
    """Grenade's annotateCapitals: each capital becomes '^' and its lowercase letter."""
    return "".join("^" + c.lower() if c.isupper() else c for c in text)


def unannotate_capitals(text: str) -> str:
    """Grenade's unAnnotateCapitals: '^' and a letter become the capital."""
    out, k = [], 0
    while k < len(text):
        if text[k] == "^" and k + 1 < len(text):
            out.append(text[k + 1].upper())
            k += 2
        else:
            out.append(text[k])
            k += 1
    return "".join(out)


def alphabet_of(text: str, symbols: int | None) -> list[str]:
    """The text's distinct characters, sorted (Grenade's hotMap); DataError if more than
    `symbols` when that is given."""
    found = sorted(set(text))
    if symbols is not None and len(found) > symbols:
        raise DataError(f"the text has {len(found)} distinct symbols, more than --symbols "
                        f"{symbols}; raise --symbols or leave it out")
    return found


def shakespeare_network(n: int, device: Device | None = None,
                        seed: int | np.random.SeedSequence | None = None,
                        init: str = "scaled", output: str = "logit") -> RecurrentNetwork:
    """Grenade's Shakespeare network over n symbols: LSTM n 80, LSTM 80 40, FC 40 n, then
    Logit (Grenade) or Softmax (`output="softmax"`, for cross-entropy training)."""
    last = Logit() if output == "logit" else Softmax()
    return RecurrentNetwork([LSTM(n, 80), LSTM(80, 40), FullyConnected(40, n), last],
                            input=D1(n), device=device, seed=seed, init=init)


def sample_text(net: RecurrentNetwork, alphabet: list[str], count: int, temperature: float,
                rng: np.random.Generator) -> str:
    """Grenade's generateParagraph: from a zero input and the learned states, `count` symbols,
    each drawn with probability proportional to output^(1 / temperature) and fed back (the
    logarithms less their largest, in float64, then divided by the temperature: at a tiny
    temperature the most likely symbol, where float32's quotients overflowed to -inf - -inf)."""
    n = net.input_shape.dims[0]
    x = np.zeros((1, n))
    state: RecurrentState | None = None
    out = []
    for _ in range(count):
        y, state = run_recurrent(net, x, state)
        logs = np.log(np.maximum(y[0, :len(alphabet)].astype(np.float64), 1e-30))
        weights = np.exp((logs - logs.max()) / temperature)
        k = int(rng.choice(len(alphabet), p=weights / weights.sum()))
        out.append(alphabet[k])
        x = np.zeros((1, n))
        x[0, k] = 1
    return "".join(out)


def unigram_nats(codes: np.ndarray) -> float:
    """Cross entropy (nats per symbol) of the text's own symbol frequencies: what a network
    that learned nothing of context scores at best."""
    counts = np.array(list(Counter(codes.tolist()).values()), dtype=np.float64)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def report(round_: int, size: int, m: Metrics, loss: str) -> str:
    """A round's line: its loss per target (cross entropy in nats/symbol, or squared error
    0.5 |y - t|^2) and accuracy."""
    steps = max(m.steps, 1)
    unit = "nats/symbol" if loss == "cross_entropy" else "squared error"
    return (f"round {round_}: {m.loss / steps:.3f} {unit}, accuracy {m.correct / steps:.3f} "
            f"over {int(m.steps)} targets (sequence length {size})")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", "data", type=click.Path(dir_okay=False), default=None,
              help="The training text, e.g. ../shared/data/shakespeare/plays.txt.")
@click.option("-e", "--examples", default=1000000, show_default=True,
              type=click.IntRange(min=0),
              help="Training windows, in 10 rounds; 0: only write a sample (of a --load'ed "
                   "model).")
@learning_options(momentum=0.95, l2=0.000001, epochs="round")
@click.option("-s", "--sequence-length", default=50, show_default=True,
              type=click.IntRange(min=2), help="Characters per window.")
@click.option("-t", "--temperature", default=0.4, show_default=True,
              type=click.FloatRange(min=0, min_open=True), help="Sampling temperature.")
@click.option("--sample-length", default=1000, show_default=True, type=click.IntRange(min=0),
              help="Symbols generated after each round.")
@click.option("--targets", type=click.Choice(["last", "every"]), default="last",
              show_default=True, help="A target on the window's last step (Grenade) or on "
              "every step.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="1 = Grenade's per-step updates, window by window; B = summed-gradient "
              "BPTT over B windows at a time.")
@click.option("--output", type=click.Choice(["logit", "softmax"]), default="logit",
              show_default=True, help="Logit outputs with Grenade's error y - target, or "
              "Softmax outputs trained on cross entropy.")
@click.option("--annotate-capitals", "annotate", is_flag=True,
              help="Encode capitals as '^' + lowercase, as Grenade does.")
@click.option("--symbols", type=click.IntRange(min=1), default=None,
              help="One-hot width (Grenade: 40); default: the alphabet's size.")
@click.option("--init", type=click.Choice(INITS), default="scaled", show_default=True,
              help="Initial weights: +-1/sqrt(fan_in), Grenade's +-1, or the Grenade fork's "
                   "xavier or he.")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Seed for the initial weights, the windows and the samples.")
@model_file_options
@device_options
@report_options
def main(data: str | None, examples: int, rate: float | None, momentum: float | None,
         l2: float | None, optimizer: str | None, clip_norm: float | None, schedule: str | None,
         sequence_length: int, temperature: float, sample_length: int, targets: str,
         batch: int, output: str, annotate: bool, symbols: int | None, init: str,
         seed: int | None, load: str | None, save: str | None, device_spec: str | None,
         precision: str, log: str | None, plot: str | None) -> None:
    """Learn a text character by character and write like it, as Grenade's example does."""
    optimizer = chosen_optimizer(optimizer, load, "sgd")
    learning = optimizer_from_options(optimizer, rate, momentum, l2, clip_norm,
                                      (0.01, 0.95, 0.000001), precision)
    check_schedule(schedule, learning.rate, 10)
    if not (math.isfinite(temperature) and math.isfinite(1 / temperature)):
        raise click.BadParameter(f"{temperature!r} is not a finite number whose inverse is "
                                 "finite", param_hint="--temperature")
    check_writable(save)
    if examples and -(-examples // 10) < batch:  # no round holds a whole batch
        raise click.BadParameter(f"{batch} is more than the {-(-examples // 10)} windows of a "
                                 f"round (-e {examples} in 10 rounds), so nothing would train: "
                                 f"give -e of at least {10 * batch} or a smaller batch",
                                 param_hint="--batch")
    if data is None:
        raise click.UsageError("pass the training text with --data PATH (for example "
                               "../shared/data/shakespeare/plays.txt)")
    record_round = run_log(log, plot, "Shakespeare (training windows)", "round",
                           series=(("loss", ("loss",)), ("accuracy", ("accuracy",))))
    with user_errors():
        raw = read_text(data)
        if load:
            meta = read_metadata(load)
            if not isinstance(meta.get("alphabet"), list):
                raise ModelFileError(f"{load} holds no alphabet: it was not saved by this "
                                     "program")
            if annotate and not meta.get("annotate_capitals"):
                raise click.BadParameter(f"{load} was trained without it; leave it out",
                                         param_hint="--annotate-capitals")
            annotate = bool(meta.get("annotate_capitals"))
        text = annotate_capitals(raw) if annotate else raw
        alphabet = meta["alphabet"] if load else alphabet_of(text, symbols)
        index = {c: k for k, c in enumerate(alphabet)}
        missing = sorted(set(text) - set(index))
        if missing:
            raise DataError(f"the text has symbols the model's alphabet lacks: {missing!r}")
        if len(text) < sequence_length + 1:
            raise DataError(f"the text has {len(text)} symbols; a window needs "
                            f"{sequence_length + 1}")
        codes = np.array([index[c] for c in text], dtype=np.int32)
        device = open_device(device_spec, precision)
        data_seed, weights_seed = np.random.SeedSequence(seed).spawn(2)
        rng = np.random.default_rng(data_seed)
        width = symbols if symbols is not None and not load else len(alphabet)
        fresh = shakespeare_network(width, device, weights_seed, init, output)
        net = RecurrentNetwork.load(load, device=device) if load else fresh
        if load:  # the file's network, not options describing another, silently ignored
            check_loaded(net, load, output, symbols)
        loss = "cross_entropy" if isinstance(net.layers[-1], Softmax) else "squared_error"
        corpus = SymbolCorpus(net, codes)
        metadata = {"alphabet": alphabet, "annotate_capitals": annotate}
        click.echo(f"{len(codes)} symbols, alphabet of {len(alphabet)}; a model that knows only "
                   f"their frequencies scores {unigram_nats(codes):.3f} nats/symbol")
        steps, ends = sequence_length - 1, [0, *tenths(examples)]

        def write() -> None:
            written = sample_text(net, alphabet, sample_length, temperature, rng)
            click.echo(unannotate_capitals(written) if annotate else written)

        with save_on_interrupt(net, save, metadata=metadata):
            for round_ in range(1, 11 if examples else 1):
                count = ends[round_] - ends[round_ - 1]
                total = Metrics()
                bar = click.progressbar(length=count, label=f"round {round_}", file=sys.stderr) \
                    if sys.stderr.isatty() else None
                rate = schedule_rate(schedule, learning.rate, round_ - 1, 10)
                for first in range(0, count, CHUNK):  # offsets drawn a chunk at a time
                    offsets = rng.integers(0, len(codes) - sequence_length,
                                           size=min(CHUNK, count - first))
                    total += corpus.train(learning.with_rate(rate), offsets, steps,
                                          every=targets == "every", batch=batch, loss=loss)
                    if bar is not None:
                        bar.update(min(CHUNK, count - first))
                if bar is not None:
                    bar.render_finish()
                click.echo(report(round_, sequence_length, total, loss))
                record_round({"round": round_, "rate": rate,
                              "loss": total.loss / max(total.steps, 1),
                              "accuracy": total.correct / max(total.steps, 1)})
                if not np.isfinite(total.loss):
                    raise click.ClickException("training diverged: the network outputs NaN or "
                                               "Inf; lower --train_rate")
                write()
            if not examples:  # nothing to train: the model's writing only
                write()
        if save:
            net.save(save, metadata)


def check_loaded(net: RecurrentNetwork, load: str, output: str, symbols: int | None) -> None:
    """A usage error where --output (given) or --symbols describe another network than the
    model file `load` holds."""
    held = "softmax" if isinstance(net.layers[-1], Softmax) else "logit"
    if output != held and given("output"):
        raise click.BadParameter(f"{load} holds a network of {held} outputs; leave it out",
                                 param_hint="--output")
    width = int(net.input_shape.dims[0])
    if symbols is not None and symbols != width:
        raise click.BadParameter(f"{load} holds a network of {width} symbols; leave it out",
                                 param_hint="--symbols")


if __name__ == "__main__":
    main()
