"""`mpiexec -n R python -m grenade_py.bench_distributed`: what one data-parallel step costs in
communication, against the step itself, and the speed-up on R devices that follows.

Per step a rank copies the flat gradient buffer to the host, Allreduces it (with the example
count) and copies it back. This times that for the MNIST MLP's buffer (784-512-10) and for a
buffer the size of Grenade's LeNet (25,620 parameters), and one MLP step at global batch 64 in
one process. Rank 0 prints. Projection: a step on R devices takes step / R + communication, so
the speed-up is step / (step / R + communication), taking the communication measured here.
"""
from __future__ import annotations

import click
import numpy as np

from grenade_py.bench import median_time
from grenade_py.distributed import Group, rank_device, world
from grenade_py.mnist import mnist_network
from grenade_py.optimizers import LearningParameters
from grenade_py.runner import fit

LENET_PARAMETERS = 250 + 4000 + 256 * 80 + 80 + 80 * 10 + 10


@click.command()
@click.option("--repeats", default=200, show_default=True, type=click.IntRange(min=1),
              help="Timed Allreduces per figure.")
def main(repeats: int) -> None:
    """Time the per-step communication of data-parallel training; print one table."""
    comm = world()
    device = rank_device(comm)
    ranks, lead = comm.Get_size(), comm.Get_rank() == 0
    mlp = mnist_network("mlp", device, seed=1)
    rows = []
    for name, size in (("MNIST MLP 784-512-10", mlp.flat["gradients"].size),
                       ("LeNet-sized buffer", LENET_PARAMETERS)):
        group = Group(comm, mlp)
        if size != mlp.flat["gradients"].size:
            group.host = np.empty(size + 1, dtype=group.host.dtype)
            gradients = device.zeros((size,))
        else:
            gradients = mlp.flat["gradients"]

        def step(group: Group = group, gradients=gradients) -> None:
            gradients.get(ary=group.host[:-1])
            group.host[-1] = 1
            comm.Allreduce(group.mpi.IN_PLACE, group.host, op=group.mpi.SUM)
            gradients.set(group.host[:-1])

        comm.Barrier()
        rows.append((name, size, median_time(step, repeats)))
    x = np.random.default_rng(0).uniform(size=(64 * 50, 784))
    y = np.eye(10)[np.random.default_rng(1).integers(0, 10, 64 * 50)]
    lp = LearningParameters(0.05, 0.9, 1e-4)
    single = median_time(lambda: fit(mlp, lp, x, y, batch_size=64, loss="cross_entropy"), 3) / 50
    if not lead:
        return
    click.echo(f"{ranks} ranks on {device.name}, {device.cl_device.max_compute_units} "
               "compute units each")
    click.echo(f"{'buffer':24s} {'values':>8s} {'comm/step':>10s}")
    for name, size, seconds in rows:
        click.echo(f"{name:24s} {size:8d} {seconds * 1e6:8.0f} us")
    comm_mlp = rows[0][2]
    click.echo(f"MNIST MLP step at batch 64, one process: {single * 1e6:.0f} us "
               f"(communication = {comm_mlp / single:.0%} of it)")
    for r in (2, 4, 8):
        click.echo(f"  projected speed-up on {r} devices: {single / (single / r + comm_mlp):.2f}x")


if __name__ == "__main__":
    main()
