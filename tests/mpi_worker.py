"""One rank of the distributed tests (run by tests/test_distributed.py under mpiexec).

    mpiexec -n R python tests/mpi_worker.py OUT BATCH VARIANT [FAIL_RANK [bare] | stopE | epochsE]

Trains a float64 network with `fit(..., comm=COMM_WORLD)` on fixed data (each rank passing
another seed: rank 0's is used); every rank writes a checksum of its parameters, rank 0 also
the parameters and a saved model. VARIANT: "sgd" (the
network under LearningParameters), "dropout-adam" (with a Dropout layer, under Adam) or "bn-sgd"
(with a BatchNorm after the first layer, under momentum without L2). With
FAIL_RANK, that rank raises in the middle of training instead; with "bare", outside an
abort_on_error block (as a library user would call fit). With stopE, rank 0's on_epoch alone
returns False after epoch E: every rank stops there. With epochsE, the ranks but 0 ask for E
epochs (rank 0 for 3).
"""
import contextlib
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from grenade_py import (
    D1,
    Adam,
    BatchNorm,
    Dropout,
    FullyConnected,
    LearningParameters,
    Network,
    Softmax,
    Tanh,
    fit,
)
from grenade_py.distributed import abort_on_error, rank_device, world

OPTIMIZERS = {"sgd": LearningParameters(0.1, 0.9, 0.001), "dropout-adam": Adam(0.01),
              "bn-sgd": LearningParameters(0.1, 0.9, 0.0)}


def data():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(50, 3))
    return x, np.eye(4)[rng.integers(0, 4, 50)]


def network(device, variant="sgd"):
    dropout = [Dropout(0.3)] if variant == "dropout-adam" else []
    norm = [BatchNorm(6)] if variant == "bn-sgd" else []
    return Network([FullyConnected(3, 6), *norm, Tanh(), *dropout, FullyConnected(6, 4),
                    Softmax()], input=D1(3), device=device, seed=3)


def main():
    out, batch, variant = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    option = sys.argv[4] if len(sys.argv) > 4 else "-1"
    fail = -1 if option.startswith(("stop", "epochs")) else int(option)
    stop = int(option[4:]) if option.startswith("stop") else None
    comm = world()
    with contextlib.nullcontext() if sys.argv[5:] == ["bare"] else abort_on_error(comm):
        net = network(rank_device(comm, "float64"), variant)
        if comm.Get_rank() != 0:  # rank 0's start must reach every rank
            net.set_parameters([{k: v * 0 + 7 for k, v in p.items()} for p in
                                net.get_parameters()])
        x, y = data()

        def maybe_fail(record):
            if comm.Get_rank() == fail:
                raise RuntimeError("this rank failed on purpose")
            return False if comm.Get_rank() == 0 and record["epoch"] == stop else None

        seed = 4 if comm.Get_rank() == 0 else 4 + comm.Get_rank()  # rank 0's seed is used
        epochs = int(option[6:]) if option.startswith("epochs") and comm.Get_rank() else 3
        history = fit(net, OPTIMIZERS[variant], x, y, batch_size=batch, epochs=epochs,
                      seed=seed, loss="cross_entropy", on_epoch=maybe_fail, comm=comm)
        flat = net.flat["parameters"].get()
        (out / f"rank{comm.Get_rank()}.json").write_text(json.dumps({
            "checksum": hashlib.sha256(flat.tobytes()).hexdigest(),
            "loss": history[-1]["loss"], "threads": net.device.cl_device.max_compute_units,
            "epochs": len(history), "states": [layer.get_state() for layer in net.layers]}))
        if comm.Get_rank() == 0:
            np.savez(out / "params.npz", *[v for p in net.get_parameters() for v in p.values()])
            net.save(out / "model.gnpy")


if __name__ == "__main__":
    main()
