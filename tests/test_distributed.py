"""Data-parallel fit over MPI: R ranks reach the weights one process reaches, every rank holds
the same parameters, a rank's failure ends the job. Runs `mpiexec` (MPICH from the `mpich` wheel,
which the test extra installs)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import MNIST_DIR
from mpi_worker import OPTIMIZERS, data, network

from grenade_py import D1, BatchNorm, Network, fit

pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install '.[mpi]')")
MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which(
    "mpiexec")
WORKER = Path(__file__).with_name("mpi_worker.py")


def mpirun(ranks, *args, timeout=120):
    if MPIEXEC is None:
        pytest.skip("no mpiexec found (pip install mpich)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "MPI", "HYDRA"))}
    return subprocess.run([MPIEXEC, "-n", str(ranks), sys.executable, str(WORKER),
                           *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=env)


@pytest.mark.parametrize("ranks, batch, variant", [(2, 15, "sgd"), (3, 4, "sgd"),
                                                   (2, 15, "dropout-adam"),
                                                   (3, 4, "dropout-adam")])
def test_ranks_reach_the_weights_of_one_process(device64, tmp_path, ranks, batch, variant):
    """50 examples: batches of 15 end with 5 (shards 2 and 3); batches of 4 over 3 ranks end
    with 2 (shards 0, 1, 1: a rank with nothing to do). With Dropout each shard draws the masks
    of its rows in the whole batch, a rank with nothing to do advances its Dropout's counter
    as the others' forward passes do, and Adam's steps count alike on every rank."""
    result = mpirun(ranks, tmp_path, batch, variant)
    assert result.returncode == 0, result.stderr
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(ranks)]
    assert len({r["checksum"] for r in reports}) == 1  # the same parameters on every rank
    assert len({json.dumps(r["states"]) for r in reports}) == 1
    if "Portable Computing Language" in device64.cl_device.platform.name:  # capped per rank
        assert all(r["threads"] == max(1, (os.cpu_count() or 1) // ranks) for r in reports)
    single = network(device64, variant)
    x, y = data()
    history = fit(single, OPTIMIZERS[variant], x, y, batch_size=batch, epochs=3, seed=4,
                  loss="cross_entropy")
    stored = np.load(tmp_path / "params.npz")
    expected = [v for p in single.get_parameters() for v in p.values()]
    for index, value in enumerate(expected):
        np.testing.assert_allclose(stored[f"arr_{index}"], value, rtol=1e-12, atol=1e-14)
    assert reports[0]["loss"] == pytest.approx(history[-1]["loss"], rel=1e-12)
    loaded = Network.load(tmp_path / "model.gnpy", device=device64)  # in one process
    np.testing.assert_array_equal(loaded.get_parameters()[0]["weights"],
                                  stored["arr_0"])


def test_batch_norm_normalises_each_shard_by_its_own_statistics(device64, tmp_path):
    """As PyTorch's DistributedDataParallel without SyncBatchNorm: each shard (7 and 8 rows of
    a batch of 15, 2 and 3 of the last) is normalised by its own statistics, and the gradient
    is the global batch's average. The oracle is PyTorch, each rank a replica of the module
    (float64, momentum without L2 as torch's SGD takes it); rank 0's running statistics are
    every rank's after fit. One process's weights differ."""
    torch = pytest.importorskip("torch")
    result = mpirun(2, tmp_path, 15, "bn-sgd")
    assert result.returncode == 0, result.stderr
    assert "do not reach one process's weights" in result.stderr
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert len({r["checksum"] for r in reports}) == 1
    assert reports[0]["states"] == reports[1]["states"]
    start = network(device64, "bn-sgd").get_parameters()
    x, y = data()
    replicas = []
    for _ in range(2):
        module = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.BatchNorm1d(6),
                                     torch.nn.Tanh(), torch.nn.Linear(6, 4)).double()
        with torch.no_grad():
            for index in (0, 1, 3):  # Linear, BatchNorm1d (gamma, beta), Linear
                w, b = start[index].values()
                module[index].weight.copy_(torch.from_numpy(w))
                module[index].bias.copy_(torch.from_numpy(b))
        replicas.append(module)
    parameters = [list(m.parameters()) for m in replicas]
    velocity = [torch.zeros_like(p) for p in parameters[0]]
    rng = np.random.default_rng(4)
    xt, labels = torch.from_numpy(x), torch.from_numpy(y.argmax(1))
    for _ in range(3):
        order = rng.permutation(len(x))
        for first in range(0, len(x), 15):
            batch = order[first:first + 15]
            for rank, module in enumerate(replicas):
                rows = batch[len(batch) * rank // 2:len(batch) * (rank + 1) // 2]
                module.zero_grad()
                loss = torch.nn.functional.cross_entropy(module(xt[rows]), labels[rows],
                                                         reduction="sum")
                (loss / len(batch)).backward()
            with torch.no_grad():
                for k, v in enumerate(velocity):
                    v.mul_(0.9).add_(parameters[0][k].grad + parameters[1][k].grad)
                    for ps in parameters:
                        ps[k].sub_(0.1 * v)
    stored = np.load(tmp_path / "params.npz")
    expected = [t.detach().numpy() for t in parameters[0]]
    for index, value in enumerate(expected):
        np.testing.assert_allclose(stored[f"arr_{index}"], value, rtol=1e-12, atol=1e-14)
    norm = replicas[0][1]
    state = reports[1]["states"][1]
    np.testing.assert_allclose(state["running_mean"], norm.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(state["running_var"], norm.running_var.numpy(), rtol=1e-12)
    single = network(device64, "bn-sgd")
    fit(single, OPTIMIZERS["bn-sgd"], x, y, batch_size=15, epochs=3, seed=4,
        loss="cross_entropy")
    assert not np.allclose(single.get_parameters()[0]["weights"], stored["arr_0"], rtol=1e-6)


def test_rank_0s_on_epoch_stops_every_rank(device64, tmp_path):
    """Only rank 0's on_epoch returns False (after epoch 2 of 3): every rank stops there, with
    the weights of one process's 2 epochs."""
    result = mpirun(2, tmp_path, 15, "sgd", "stop2")
    assert result.returncode == 0, result.stderr
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["epochs"] for r in reports] == [2, 2]
    assert len({r["checksum"] for r in reports}) == 1
    single = network(device64)
    fit(single, OPTIMIZERS["sgd"], *data(), batch_size=15, epochs=2, seed=4,
        loss="cross_entropy")
    stored = np.load(tmp_path / "params.npz")
    expected = [v for p in single.get_parameters() for v in p.values()]
    for index, value in enumerate(expected):
        np.testing.assert_allclose(stored[f"arr_{index}"], value, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("guard", ["", "bare"])
def test_a_failing_rank_ends_the_job(tmp_path, guard):
    """Inside the worker's own abort_on_error block, or as a library user calls fit (bare):
    fit's own guard ends the job."""
    start = time.perf_counter()
    result = mpirun(2, tmp_path, 15, "sgd", 1, *[guard] * bool(guard), timeout=60)
    assert result.returncode != 0
    assert "rank 1 of 2: RuntimeError: this rank failed on purpose" in result.stderr
    assert time.perf_counter() - start < 30
    assert not (tmp_path / "rank1.json").exists()  # nothing after its fit ran


def test_a_rank_whose_fit_differs_ends_the_job(tmp_path):
    """Rank 1 asks for 4 epochs where rank 0 asks for 3 (it waited for rank 0 forever in its
    4th): the job ends at once, naming what differs."""
    result = mpirun(2, tmp_path, 15, "sgd", "epochs4", timeout=60)
    assert result.returncode != 0
    assert ("rank 1 of 2: ValueError: rank 1's fit differs from rank 0's in epochs 4 (rank 0's "
            "3), rates: every rank of a distributed fit takes the same network, data, "
            "batch_size, epochs, optimiser and schedule") in result.stderr
    assert not list(tmp_path.glob("rank*.json"))


def mnist_ranks(*per_rank: list[str], timeout: int = 60) -> subprocess.CompletedProcess:
    """`mpiexec` of the mnist CLI, one rank per argument list (a short distributed run)."""
    if MPIEXEC is None:
        pytest.skip("no mpiexec found (pip install mpich)")
    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST not found at {MNIST_DIR}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "MPI", "HYDRA"))}
    command = [MPIEXEC]
    for arguments in per_rank:
        command += [":"] * (len(command) > 1) + ["-n", "1", sys.executable, "-m",
                                                 "grenade_py.mnist", "--data", str(MNIST_DIR),
                                                 "--distributed", "--epochs", "1", "--limit",
                                                 "256", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def test_a_rank_refusing_its_flags_ends_the_job():
    """Rank 1's flags are refused before anything trains: the job ends at once with its error
    (it waited forever: the rank had exited before MPI started)."""
    result = mnist_ranks([], ["--epochs", "-3"])
    assert result.returncode != 0
    assert "rank 1 of 2: Invalid value for '--epochs'" in result.stderr


def test_only_rank_0_checks_where_it_saves(tmp_path):
    """Only rank 0 saves: another rank's --save (a folder its node lacks) does not stop the
    job, and rank 0's model is written."""
    result = mnist_ranks(["--save", str(tmp_path / "model.gnpy")],
                         ["--save", str(tmp_path / "missing" / "model.gnpy")])
    assert result.returncode == 0, result.stderr
    assert Network.load(tmp_path / "model.gnpy").input_shape == D1(784)


def test_per_example_training_is_refused(device64):
    from mpi4py import MPI

    net = network(device64)
    x, y = data()
    with pytest.raises(ValueError, match="per-example training, which is serial"):
        fit(net, OPTIMIZERS["sgd"], x, y, batch_size=1, comm=MPI.COMM_SELF)


def test_a_share_of_one_row_that_batch_norm_cannot_train_on_is_named(device64):
    """Every rank's share of each batch and of the last one (here one rank's: all of it)."""
    from mpi4py import MPI

    net = Network([BatchNorm(3)], input=D1(3), device=device64)
    x, y = np.zeros((7, 3)), np.zeros((7, 3))
    with pytest.raises(ValueError, match=r"^this process's share \(of 1\) of the last batch of "
                       r"each epoch has 1 example \(7 in batches of 3: choose a batch_size that "
                       r"leaves more\), and BatchNorm 3 on D1 3 cannot train on one row"):
        fit(net, OPTIMIZERS["sgd"], x, y, batch_size=3, comm=MPI.COMM_SELF)
