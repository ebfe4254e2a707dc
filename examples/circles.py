"""Grenade's two circles, as library calls rather than the CLI.

    python examples/circles.py
"""
import numpy as np

from grenade_py import (
    D1,
    FullyConnected,
    LearningParameters,
    Logit,
    Network,
    Relu,
    Tanh,
    run_net,
    train,
)


def main(examples: int = 100_000, seed: int = 1) -> float:
    data_seed, weights_seed = np.random.SeedSequence(seed).spawn(2)  # independent streams
    rng = np.random.default_rng(data_seed)
    net = Network([FullyConnected(2, 40), Tanh(), FullyConnected(40, 10), Relu(),
                   FullyConnected(10, 1), Logit()], input=D1(2), seed=weights_seed)
    x = rng.uniform(-1, 1, size=(examples, 2))
    centres = np.array([[0.33, 0.33], [-0.33, -0.33]])
    y = (np.linalg.norm(x[:, None] - centres, axis=2) <= 0.33).any(axis=1, keepdims=True)
    train(net, LearningParameters(0.01, 0.9, 0.0005), x, y.astype(float), per_example=True)

    test = rng.uniform(-1, 1, size=(10_000, 2))
    truth = (np.linalg.norm(test[:, None] - centres, axis=2) <= 0.33).any(axis=1)
    accuracy = float(np.mean((run_net(net, test)[:, 0] > 0.5) == truth))
    print(f"{net}\naccuracy on 10,000 fresh points: {accuracy:.3f}")
    return accuracy


if __name__ == "__main__":
    main()
