"""`python -m grenade_py.probe P:D`: run every kernel family once on device P:D, small.

`Device` runs this in a child process before trusting a PoCL that compiles for a generic CPU
(pip's pocl-binary-distribution 3.0, LLVM 14, on a CPU newer than its LLVM), whose compiler
aborts or crashes the process on some of grenade_py's kernels: a crash here costs a child, not
the user's process (nor its PoCL kernel cache: the child has one of its own). Exit status 0:
everything built and ran.
"""
from __future__ import annotations

import sys

import numpy as np

import grenade_py as g


def workload(spec: str) -> None:
    rng = np.random.default_rng(0)
    doubles = g.Device(spec).cl_device.double_fp_config
    for precision in ("float32", "float64") if doubles else ("float32",):
        device = g.Device(spec, precision=precision)
        mlp = g.Network([g.FullyConnected(7, 17), g.Gelu(), g.Dropout(0.3), g.BatchNorm(17),
                         g.FullyConnected(17, 3), g.Softmax()], input=g.D1(7), device=device,
                        seed=1)
        g.fit(mlp, g.Adam(0.01, clip_norm=1.0), rng.normal(size=(8, 7)),
              np.eye(3)[rng.integers(0, 3, 8)], batch_size=4, loss="cross_entropy")
        conv = g.Network([g.Convolution(1, 3, 3, 3, 1, 1), g.Relu(), g.Pooling(2, 2, 2, 2),
                          g.Deconvolution(3, 2, 2, 2, 1, 1), g.Reshape(), g.FullyConnected(32, 2),
                          g.Logit()], input=g.D2(8, 8), device=device, seed=1)
        g.fit(conv, g.SGD(0.01), rng.normal(size=(5, 8, 8)), rng.uniform(size=(5, 2)),
              batch_size=5)
        g.train(conv, g.SGD(0.01), rng.normal(size=(3, 8, 8)), rng.uniform(size=(3, 2)),
                per_example=True)  # the fused loop's convolution, pooling and deconvolution
        ff = [g.Network([g.FullyConnected(3, 17), g.Tanh(), g.FullyConnected(17, 2)],
                        input=g.D1(3), device=device, seed=s) for s in (1, 2)]
        g.train(ff[0], g.SGD(0.01), rng.normal(size=(4, 3)), rng.normal(size=(4, 2)),
                per_example=True)
        g.train_many(ff, g.Adam(0.01), rng.normal(size=(4, 3)), rng.normal(size=(4, 2)))
        rn = g.RecurrentNetwork([g.LSTM(3, 17), g.ConcatRecurrent(g.BasicRecurrent(17, 2),
                                                                  g.FullyConnected(17, 3)),
                                 g.FullyConnected(5, 3)], input=g.D1(3), device=device, seed=1)
        for summed in (False, True):
            g.train_sequences(rn, g.SGD(0.01), rng.normal(size=(2, 7, 3)),
                              rng.normal(size=(2, 7, 3)), np.ones((2, 7), bool), summed=summed)
        g.run_recurrent(rn, rng.normal(size=(7, 3)))
        device.queue.finish()


if __name__ == "__main__":
    workload(sys.argv[1])
    print("every kernel family built and ran")
