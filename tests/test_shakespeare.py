"""The Shakespeare example (Grenade's shakespeare.hs) on the real corpus, which it reads from
../shared/data/shakespeare beside the project (the data tests skip with the reason when it is
absent), and its text encoding."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import grenade_py as g
from grenade_py.network_file import read_metadata
from grenade_py.shakespeare import annotate_capitals, sample_text, unannotate_capitals
from grenade_py.shakespeare import main as shakespeare_main

SHAKESPEARE = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "shakespeare" \
    / "plays.txt"
needs_plays = pytest.mark.skipif(not SHAKESPEARE.exists(),
                                 reason=f"the Shakespeare corpus is not at {SHAKESPEARE}")


def nats(output: str) -> list[float]:
    return [float(m) for m in re.findall(r"round \d+: ([\d.]+) nats/symbol", output)]


@needs_plays
def test_shakespeare_learns_beyond_symbol_frequencies(tmp_path) -> None:
    """Ten short rounds on the plays: the last round's cross entropy beats the model that knows
    only the symbols' frequencies, and a saved model resumes where it stopped."""
    runner = CliRunner()
    common = ["--data", str(SHAKESPEARE), "--seed", "1", "--sample-length", "40", "--output",
              "softmax", "--targets", "every", "--batch", "16", "-r", "0.003", "--momentum",
              "0.9"]
    model = tmp_path / "plays.gpy"
    first = runner.invoke(shakespeare_main, [*common, "-e", "8000", "--save", str(model)])
    assert first.exit_code == 0, first.output
    baseline = float(re.search(r"frequencies scores ([\d.]+) nats", first.output).group(1))
    curve = nats(first.output)
    assert len(curve) == 10 and curve[-1] < baseline - 0.3 and curve[-1] < curve[0]
    assert read_metadata(model)["alphabet"][0] == "\n"
    resumed = runner.invoke(shakespeare_main, [*common, "-e", "400", "--load", str(model)])
    assert resumed.exit_code == 0, resumed.output
    assert nats(resumed.output)[0] < curve[0]


@needs_plays
def test_shakespeare_grenade_encoding_and_bad_input(tmp_path) -> None:
    runner = CliRunner()
    result = runner.invoke(shakespeare_main, ["--data", str(SHAKESPEARE), "-e", "20",
                                              "--sample-length", "30", "--annotate-capitals",
                                              "--seed", "2"])
    assert result.exit_code == 0, result.output
    assert "alphabet of 51" in result.output
    assert len(re.findall(r"round \d+: [\d.]+ squared error", result.output)) == 10
    too_many = runner.invoke(shakespeare_main, ["--data", str(SHAKESPEARE), "-e", "0",
                                                "--annotate-capitals", "--symbols", "40"])
    assert too_many.exit_code != 0 and "51 distinct symbols, more than --symbols 40" in \
        too_many.output
    assert "--data PATH" in runner.invoke(shakespeare_main, ["-e", "0"]).output
    alien = tmp_path / "alien.gpy"
    g.RecurrentNetwork([g.LSTM(2, 2)], input=g.D1(2)).save(alien)
    refused = runner.invoke(shakespeare_main, ["--data", str(SHAKESPEARE), "--load", str(alien)])
    assert refused.exit_code != 0 and "holds no alphabet" in refused.output


def test_text_encoding_round_trips() -> None:
    text = "King Lear: O, REASON not the need!"
    assert annotate_capitals(text) == "^king ^lear: ^o, ^r^e^a^s^o^n not the need!"
    assert unannotate_capitals(annotate_capitals(text)) == text


def test_shakespeare_with_adam_and_a_schedule(tmp_path) -> None:
    """Adam with a step schedule over the rounds, and clipped SGD in summed batches, on a small
    synthetic text beat the model that knows only the symbols' frequencies."""
    text = tmp_path / "text.txt"
    text.write_text("abcabd" * 400)
    runner = CliRunner()
    common = ["--data", str(text), "--seed", "1", "--sample-length", "10", "--output",
              "softmax", "--targets", "every", "-s", "12"]
    result = runner.invoke(shakespeare_main, [*common, "-e", "2000", "--optimizer", "adam",
                                              "-r", "0.01", "--schedule", "step:5:0.5"])
    assert result.exit_code == 0, result.output
    baseline = float(re.search(r"frequencies scores ([\d.]+) nats", result.output).group(1))
    assert nats(result.output)[-1] < baseline - 0.3
    clipped = runner.invoke(shakespeare_main, [*common, "-e", "4000", "--batch", "8", "-r",
                                               "0.05", "--clip-norm", "1"])
    assert clipped.exit_code == 0, clipped.output
    assert nats(clipped.output)[-1] < baseline - 0.3


def test_temperatures_that_cannot_sample_are_refused_before_training(tmp_path) -> None:
    text = tmp_path / "text.txt"
    text.write_text("abcabd" * 50)
    for bad in ("nan", "1e-320", "inf"):
        result = CliRunner().invoke(shakespeare_main, ["--data", str(text), "-e", "10", "-t", bad])
        assert result.exit_code == 2 and "--temperature" in result.output, result.output
        assert "round 1" not in result.output


def test_an_error_after_training_began_saves_what_was_trained(tmp_path, monkeypatch) -> None:
    text, model = tmp_path / "text.txt", tmp_path / "m.gnpy"
    text.write_text("abcabd" * 50)

    def broken(*args, **kwargs):
        raise RuntimeError("sampling broke")

    monkeypatch.setattr("grenade_py.shakespeare.sample_text", broken)
    result = CliRunner().invoke(shakespeare_main, ["--data", str(text), "-e", "20", "-s", "5",
                                                   "--save", str(model)])
    assert isinstance(result.exception, RuntimeError)
    assert "saved what was trained" in result.output and model.exists()
    g.RecurrentNetwork.load(model)


def test_a_loaded_model_refuses_options_that_describe_another(tmp_path) -> None:
    """With --load, the file's network trains: --output, --symbols or --annotate-capitals that
    contradict it are usage errors (they were silently ignored); agreeing ones are welcome."""
    text = tmp_path / "text.txt"
    text.write_text("To be, or not to be, that is the question.\n" * 4)
    model = tmp_path / "m.gpy"
    runner = CliRunner()
    common = ["--data", str(text), "-e", "0", "--sample-length", "0"]
    made = runner.invoke(shakespeare_main, [*common, "--output", "softmax", "--save", str(model)])
    assert made.exit_code == 0, made.output
    width = len(read_metadata(model)["alphabet"])
    for args, message in ((["--output", "logit"], "--output: .* holds a network of softmax "
                                                  "outputs; leave it out"),
                          (["--symbols", str(width + 1)], f"--symbols: .* holds a network of "
                                                          f"{width} symbols"),
                          (["--annotate-capitals"], "--annotate-capitals: .* was trained "
                                                    "without it")):
        result = runner.invoke(shakespeare_main, [*common, "--load", str(model), *args])
        assert result.exit_code == 2 and re.search(message, result.output), result.output
    for args in ([], ["--output", "softmax", "--symbols", str(width)]):
        result = runner.invoke(shakespeare_main, [*common, "--load", str(model), *args])
        assert result.exit_code == 0, result.output


def test_every_window_asked_for_trains(tmp_path) -> None:
    """-e below 10 trains its windows (each round took -e // 10 of them: none), and a batch
    no round can fill is a usage error (every round trained nothing, reporting 0 targets)."""
    text = tmp_path / "text.txt"
    text.write_text("To be, or not to be, that is the question.\n" * 4)
    runner = CliRunner()
    common = ["--data", str(text), "--sample-length", "0", "--sequence-length", "20"]
    result = runner.invoke(shakespeare_main, [*common, "-e", "5"])
    assert result.exit_code == 0, result.output
    targets = [int(n) for n in re.findall(r"over (\d+) targets", result.output)]
    assert len(targets) == 10 and sum(targets) == 5
    result = runner.invoke(shakespeare_main, [*common, "-e", "100", "--batch", "11"])
    assert result.exit_code == 2
    assert "11 is more than the 10 windows of a round (-e 100 in 10 rounds)" in result.output


def test_no_windows_only_writes_a_sample(tmp_path) -> None:
    """-e 0 trains nothing and reports no rounds (it printed ten of "0 targets", each with a
    sample): it writes one sample of the model (a loaded one's: saved again, unchanged)."""
    text = tmp_path / "text.txt"
    text.write_text("To be, or not to be, that is the question.\n" * 4)
    runner = CliRunner()
    common = ["--data", str(text), "--sequence-length", "20", "--seed", "2"]
    made = runner.invoke(shakespeare_main, [*common, "-e", "20", "--sample-length", "0",
                                            "--save", str(tmp_path / "m")])
    assert made.exit_code == 0, made.output
    result = runner.invoke(shakespeare_main, [*common, "-e", "0", "--sample-length", "30",
                                              "--load", str(tmp_path / "m"), "--save",
                                              str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    assert "round" not in result.output
    sample = result.output.split("nats/symbol\n", 1)[1][:-1]  # echo's newline after it
    assert len(sample) == 30 and set(sample) <= set(text.read_text())
    a, b = (g.RecurrentNetwork.load(tmp_path / name) for name in ("m", "again"))
    for x, y in zip(a.get_parameters(), b.get_parameters(), strict=True):
        assert x.keys() == y.keys() and all((x[k] == y[k]).all() for k in x)


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_tiny_temperatures_sample_the_most_likely_symbol(precision) -> None:
    """At 1e-300 (float32 logarithms over it overflowed to -inf and numpy refused the NaN
    probabilities: a traceback after training) every symbol drawn is the most likely one."""
    alphabet = list("abcde")
    net = g.RecurrentNetwork([g.LSTM(5, 8), g.FullyConnected(8, 5), g.Logit()], input=g.D1(5),
                             device=g.Device(precision=precision), seed=3)
    text = sample_text(net, alphabet, 12, 1e-300, np.random.default_rng(0))
    x, state, greedy = np.zeros((1, 5)), None, []
    for _ in range(12):
        y, state = g.run_recurrent(net, x, state)
        greedy.append(alphabet[int(np.argmax(y[0]))])
        x = np.zeros((1, 5))
        x[0, int(np.argmax(y[0]))] = 1
    assert text == "".join(greedy)
    assert len(set(sample_text(net, alphabet, 200, 1e3, np.random.default_rng(0)))) == 5
