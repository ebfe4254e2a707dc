"""Data-parallel training over MPI: one process per OpenCL device, one Allreduce per step.

    mpiexec -n R python -m grenade_py.mnist --data DIR --distributed

From the library, pass a communicator to `fit`:

    from mpi4py import MPI
    from grenade_py.distributed import rank_device
    device = rank_device(MPI.COMM_WORLD)         # before any other OpenCL call in the process
    net = Network(layers, input=D1(784), device=device, seed=1)
    fit(net, params, x, y, batch_size=64, comm=MPI.COMM_WORLD, ...)  # every rank, all the data

Every rank holds the whole dataset and draws the same permutation (rank 0's seed, broadcast; a
rank given another says so in a warning); each global batch
of `batch_size` rows is split into R contiguous shards, rank r taking rows [n r / R, n (r+1) / R).
Each rank computes its shard's gradient sum divided by the global batch size, then one Allreduce of
the network's flat gradient buffer (with the example count appended) gives every rank the batch's
average gradient, and every rank applies the same update. The parameters and momentum are
broadcast from rank 0 first, so all ranks start alike. R ranks give the weights one process gives,
to the re-association of float sums, but where a BatchNorm is: it normalises each shard by the
shard's own statistics, as PyTorch's DistributedDataParallel does without SyncBatchNorm (fit
warns), and after each epoch every rank takes rank 0's running statistics (`share_states`).

Grenade's per-example training is inherently serial (each step needs the weights the previous
example left), so a distributed `fit` refuses batch_size 1. Needs `pip install mpi4py mpich`
(the [mpi] extra: MPI for Python, and MPICH from wheels).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import click
import numpy as np
import pyopencl as cl

from grenade_py.device import Device, Launch
from grenade_py.execution import Step, update_of
from grenade_py.layers import BatchNorm, Dropout
from grenade_py.network import Network
from grenade_py.optimizers import Optimizer

log = logging.getLogger("grenade_py")

#: Seconds a failing rank waits between printing its error and aborting the job (mpiexec
#: forwards output asynchronously, and an abort can overtake it).
ABORT_GRACE_S = 0.5


def _mpi() -> Any:
    try:
        from mpi4py import MPI
    except ImportError:
        raise ImportError("distributed training needs mpi4py and an MPI runtime: "
                          "pip install mpi4py mpich (the [mpi] extra)") from None
    return MPI


def world() -> Any:
    """MPI.COMM_WORLD (starting MPI)."""
    return _mpi().COMM_WORLD


def rank_device(comm: Any, precision: str = "float32") -> Device:
    """This rank's device, by its rank among the ranks on its node: the GPUs in turn; on a node
    without GPUs the default (CPU) device, with PoCL's thread count (and that of Intel's CPU
    runtime) capped to the node's cores divided among its ranks, so ranks do not oversubscribe
    the cores. Call it before any other OpenCL call in the process: the drivers read the cap
    once, when OpenCL starts."""
    local = comm.Split_type(_mpi().COMM_TYPE_SHARED)
    local_rank, local_size = local.Get_rank(), local.Get_size()
    threads = str(max(1, (os.cpu_count() or 1) // local_size))
    # PoCL >= 3.1, older PoCL, Intel's (a 1024^3 product with it 1: 1.01 cores busy, not 1.97)
    for name in ("POCL_CPU_MAX_CU_COUNT", "POCL_MAX_PTHREAD_COUNT",
                 "CL_CONFIG_CPU_TBB_NUM_WORKERS"):
        os.environ.setdefault(name, threads)
    gpus = [f"{p}:{d}" for p, platform in enumerate(cl.get_platforms())
            for d, device in enumerate(platform.get_devices())
            if device.type & cl.device_type.GPU]
    spec = gpus[local_rank % len(gpus)] if gpus else None
    return Device(spec, precision=precision)


class Alone:
    """fit's hook for its work across processes, in one process: every batch whole, each step
    by `Step.descend`, nothing to agree on or share. `Group` is its form over MPI ranks."""

    #: How errors name this process's part of a batch (its start).
    share = ""

    def start(self, seed: int | None, **settings: Any) -> int | None:
        """The seed to shuffle by, once the processes agree on `settings` (fit's)."""
        return seed

    def shard(self, n: int) -> tuple[int, int]:
        """This process's rows [first, last) of a batch of n."""
        return 0, n

    def descend(self, step: Step | None, optimizer: Optimizer, n: int,
                measure: list[Launch] | None) -> None:
        """The optimiser's step on a batch of n rows whose forward pass `step` ran (over this
        process's shard of them; None where that is empty), measured by `measure`."""
        assert step is not None
        step.descend(optimizer, 1.0 / n, measure)

    def agree(self, value: Any, name: str) -> Any:
        """`value`, as the processes agree on it."""
        return value

    def epoch_totals(self, totals: np.ndarray) -> np.ndarray:
        """An epoch's sums (loss, correct, count) over the processes, once every process
        holds the same layer states."""
        return totals


class Group(Alone):
    """The ranks of a communicator training one network in `fit`: the check that every rank was
    given the same fit, shards, the broadcast of the starting parameters, the per-step
    Allreduce of the flat gradient buffer, and rank 0's BatchNorm statistics on every rank after
    each epoch."""

    def __init__(self, comm: Any, net: Network) -> None:
        self.mpi = _mpi()
        self.comm, self.net = comm, net
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.share = f"this process's share (of {self.size}) of "
        gradients = net.flat["gradients"]
        self.host = np.empty(gradients.size + 1, dtype=gradients.dtype)  # + the example count
        layers = [layer for _, layer, _ in net.nodes(net.input_shape)]
        #: What a rank whose shard of a batch is empty runs for the forward pass it skips:
        #: each Dropout's step counter advances, as the other ranks' forward passes advance
        #: theirs (else its masks lag theirs from the next batch on).
        self.idle = [layer.advance() for layer in layers if isinstance(layer, Dropout)]
        #: The layers whose state each rank moves by its own shards (`share_states`).
        self.norms = [layer for layer in layers if isinstance(layer, BatchNorm)]
        if self.rank == 0 and self.size > 1 and self.norms:
            log.warning("BatchNorm normalises each rank's shard of a batch by the shard's own "
                        "statistics, as PyTorch's DistributedDataParallel does without "
                        "SyncBatchNorm: %d ranks do not reach one process's weights",
                        self.size)

    def start(self, seed: int | None, **settings: Any) -> int | None:
        """Rank 0's seed, once every rank's network and `settings` are rank 0's
        (`check_same`), with rank 0's parameters and momentum (`broadcast`)."""
        if settings["batch_size"] == 1:
            raise ValueError("batch_size 1 is Grenade's per-example training, which is serial "
                             "(each step needs the weights the last one left): give distributed "
                             "training a larger global batch")
        self.check_same(**settings)
        seed = self.agree(seed, "seed")
        self.broadcast()
        return seed

    def descend(self, step: Step | None, optimizer: Optimizer, n: int,
                measure: list[Launch] | None) -> None:
        """The shard's backward pass, the Allreduce of the gradients, and the update."""
        rows = 0 if step is None else step.rows
        if step is not None:
            step.backward(1.0 / n, measure=measure)
        self.allreduce_gradients(rows, n)
        update_of(self.net)(optimizer)

    def epoch_totals(self, totals: np.ndarray) -> np.ndarray:
        self.share_states()
        return self.sum(totals)

    def agree(self, value: Any, name: str) -> Any:
        """Rank 0's `value` on every rank; a rank whose own differed says so (logged)."""
        chosen = self.comm.bcast(value, root=0)
        if chosen != value:
            log.warning("rank %d: using rank 0's %s %r, not this rank's %r", self.rank, name,
                        chosen, value)
        return chosen

    def check_same(self, **settings: Any) -> None:
        """ValueError on a rank whose network or fit `settings` differ from rank 0's, naming
        them: steps that do not pair up hang a job (a rank with more epochs waits for the
        others forever) or end it in an MPI error, and other optimisers or networks leave the
        ranks with other weights. Arrays (the data) are compared by a digest of their bytes."""
        mine = {"network": self.net.spec()} | {
            name: digest(value) if name == "data" else value for name, value in settings.items()}
        first = self.comm.bcast(mine if self.rank == 0 else None, root=0)
        differ = [name if isinstance(value, (dict, tuple, list)) or name == "data"
                  else f"{name} {value!r} (rank 0's {first[name]!r})"
                  for name, value in mine.items() if value != first[name]]
        if differ:
            raise ValueError(f"rank {self.rank}'s fit differs from rank 0's in "
                             f"{', '.join(differ)}: every rank of a distributed fit takes the "
                             "same network, data, batch_size, epochs, optimiser and schedule")

    def shard(self, n: int) -> tuple[int, int]:
        """This rank's rows [first, last) of a global batch of n."""
        return n * self.rank // self.size, n * (self.rank + 1) // self.size

    def broadcast(self) -> None:
        """Rank 0's parameters and momentum on every rank."""
        for role in ("parameters", "momentum"):
            values = self.net.flat[role].get()
            self.comm.Bcast(values, root=0)
            self.net.flat[role].set(values)

    def share_states(self) -> None:
        """Rank 0's BatchNorm running statistics on every rank (each rank moves them by its own
        shards'), so that validation, on_epoch and a saved model see one network whichever
        rank runs them. Nothing where the network has no BatchNorm (the same on every rank:
        `check_same`)."""
        if not self.norms:
            return
        states = self.comm.bcast([layer.get_state() for layer in self.norms]
                                 if self.rank == 0 else None, root=0)
        for layer, state in zip(self.norms, states, strict=True):
            if self.rank:
                layer.set_state(state)

    def allreduce_gradients(self, rows: int, n: int) -> None:
        """Sum every rank's gradient buffer (each holding its shard's sum / n) in place."""
        gradients = self.net.flat["gradients"]
        if rows == 0:  # a batch of fewer rows than ranks leaves some shards empty
            gradients.fill(0)
            for launch in self.idle:
                launch()
        gradients.get(ary=self.host[:-1])
        self.host[-1] = rows
        self.comm.Allreduce(self.mpi.IN_PLACE, self.host, op=self.mpi.SUM)
        if self.host[-1] != n:
            raise RuntimeError(f"rank {self.rank}: the ranks' shards add up to {self.host[-1]} "
                               f"examples, not the batch's {n}; are all ranks running the same "
                               "fit with the same data, batch size and seed?")
        gradients.set(self.host[:-1])

    def sum(self, values: np.ndarray) -> np.ndarray:
        """The element-wise sum of `values` over the ranks."""
        total = np.array(values, dtype=np.float64)
        self.comm.Allreduce(self.mpi.IN_PLACE, total, op=self.mpi.SUM)
        return total


def digest(arrays: tuple[np.ndarray, ...]) -> str:
    """A digest of the arrays' bytes (MNIST's 24k images and labels: 80 ms)."""
    hashed = hashlib.blake2b()
    for array in arrays:
        hashed.update(np.ascontiguousarray(array).data)
    return hashed.hexdigest()


#: How many abort_on_error blocks this process is inside (fit guards itself when none is).
_guards = 0


def guarded() -> bool:
    """Whether an abort_on_error block is active (fit then leaves the failure to it, so that
    what the block's body does on an error, such as saving a model, happens first)."""
    return _guards > 0


@contextlib.contextmanager
def abort_on_error(comm: Any) -> Iterator[None]:
    """End the whole job when this rank fails: print the error with the rank and abort, so no
    rank waits forever in a collective for a rank that is gone. `fit(..., comm=)` runs inside
    one unless it is already inside one."""
    global _guards
    _guards += 1
    try:
        yield
    except SystemExit as e:
        if e.code not in (0, None):
            comm.Abort(e.code if isinstance(e.code, int) else 1)
        raise
    except BaseException as e:  # any failure must end every rank
        message = (e.format_message() if isinstance(e, click.ClickException)
                   else f"{type(e).__name__}: {e}")
        print(f"rank {comm.Get_rank()} of {comm.Get_size()}: {message}", file=sys.stderr,
              flush=True)
        # mpiexec forwards a rank's output asynchronously and an abort can overtake it: under
        # load the job once ended with the message lost. Give the forwarding a moment.
        time.sleep(ABORT_GRACE_S)
        comm.Abort(1)
        # MPICH's Abort can return before the process manager ends this process, and the
        # caller then went on as if its block had succeeded (a distributed fit "returned").
        sys.stdout.flush()
        os._exit(1)
    finally:
        _guards -= 1


def ends_the_job_on_error(func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` run inside abort_on_error when it is given a communicator `comm` of
    several ranks and no such block is active: a rank that fails ends the job rather than hang
    the others (alone, it raises as usual)."""
    signature = inspect.signature(func)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        comm = signature.bind(*args, **kwargs).arguments.get("comm")
        if comm is None or comm.Get_size() == 1:
            return func(*args, **kwargs)
        if guarded():
            return func(*args, **kwargs)
        with abort_on_error(comm):
            return func(*args, **kwargs)
    return wrapper


def as_rank(command: click.Command) -> None:
    """Run a CLI as one rank of `mpiexec` when its arguments include --distributed: MPI starts
    before the flags are read, so a rank that refuses its flags (or fails in any way) ends the
    whole job with its error instead of leaving the others waiting; otherwise as usual."""
    if "--distributed" not in sys.argv[1:]:
        command()
        return
    comm = world()
    with abort_on_error(comm):
        command(standalone_mode=False)
