"""Train a small MLP with fastrms on one flat buffer: NumPy on the CPU, or CuPy on a GPU.

    python examples/numpy_flat_training.py            # NumPy arrays, the Numba kernel
    python examples/numpy_flat_training.py --cupy     # the same code on CuPy arrays, CUDA kernel

All weights live in one ``fastrms.FlatBuffer``: the model computes with its views, writes its
gradients into the matching grad views, and one ``opt.step`` call updates every weight.
"""

import argparse

import numpy as np

import fastrms


def train(xp, steps=300, seed=0, verbose=True):
    """Fit y = sin(3x) with a 1-32-1 tanh MLP; ``xp`` is numpy or cupy. Returns the losses."""
    rng = np.random.default_rng(seed)
    x = xp.asarray(np.linspace(-1, 1, 256, dtype=np.float32)[:, None])
    y = xp.sin(3 * x)
    init = [rng.standard_normal((1, 32)), np.zeros(32), rng.standard_normal((32, 1)) / 6, np.zeros(1)]
    flat = fastrms.FlatBuffer([xp.asarray(w, dtype=xp.float32) for w in init])
    w1, b1, w2, b2 = flat.views  # the model's weights: views of flat.data
    gw1, gb1, gw2, gb2 = flat.grad_views  # where their gradients go: views of flat.grad

    opt = fastrms.RMSprop(lr=0.003, convention="torch")  # torch's defaults and formula
    state = opt.init(flat.data)  # square_avg: one buffer with the same layout

    losses = []
    for step in range(steps):
        h = xp.tanh(x @ w1 + b1)  # forward
        err = h @ w2 + b2 - y
        losses.append(float((err**2).mean()))
        d = 2 * err / len(x)  # backward, written straight into the grad views
        gw2[...] = h.T @ d
        gb2[...] = d.sum(0)
        dh = (d @ w2.T) * (1 - h * h)
        gw1[...] = x.T @ dh
        gb1[...] = dh.sum(0)
        opt.step(flat.data, flat.grad, state)  # one fused call for all four weights
        if verbose and step % 50 == 0:
            print(f"step {step:4d}  loss {losses[-1]:.5f}")
    return losses


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cupy", action="store_true", help="run on a GPU through CuPy")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args(argv)
    if args.cupy:
        import cupy as xp
    else:
        xp = np
    losses = train(xp, args.steps)
    print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f} after {args.steps} steps ({xp.__name__})")


if __name__ == "__main__":
    main()
