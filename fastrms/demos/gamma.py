"""``gamma``: the chapter's exercises on γ, on the airfoil task.

γ = 1 freezes the leaky average at its start s = 0, so every step is η·g/√ε: plain SGD with a
learning rate 1/√ε = 1000 times η. A sweep of γ × η shows where RMSProp works.
"""

import numpy as np

from . import _plot
from .airfoil import BACKENDS, DEFAULT_SEED, LSTSQ_FLOOR, train
from .data import load_airfoil

GAMMAS = (0.5, 0.8, 0.9, 0.95, 0.99)
ETAS = (0.001, 0.003, 0.01, 0.03, 0.1)
EPS = 1e-6
QUICK = {"gammas": [0.9, 0.99], "etas": [0.01, 0.1]}


def sgd_stability_limit(X):
    """2/λ_max of the loss's Hessian [X 1]ᵀ[X 1]/n: SGD with a larger step diverges."""
    A = np.c_[X.astype(np.float64), np.ones(len(X))]
    return 2 / np.linalg.eigvalsh(A.T @ A / len(X)).max()


def sweep(gammas, etas, seed=DEFAULT_SEED, epochs=2, backend="auto", data=None):
    """Final losses, shape (len(gammas), len(etas))."""
    data = load_airfoil() if data is None else data
    def final(gamma, eta):
        return train(seed, eta, gamma, epochs, eps=EPS, backend=backend, data=data).losses[-1]

    return np.array([[final(gamma, eta) for eta in etas] for gamma in gammas])


def add_arguments(parser):
    parser.add_argument("--gammas", type=float, nargs="+", default=list(GAMMAS), metavar="G",
                        help="rows of the grid")
    parser.add_argument("--etas", type=float, nargs="+", default=list(ETAS), metavar="ETA",
                        help="columns of the grid")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="fastrms backend")


def run(args, say):
    data = load_airfoil()
    with np.errstate(over="ignore", invalid="ignore"):  # the γ = 1 run overflows on purpose
        frozen = train(args.seed, 0.01, 1.0, args.epochs, eps=EPS, backend=args.backend, data=data)
    first = ", ".join(f"{v:.3g}" for v in frozen.losses[:4])
    say(f"gamma = 1, lr 0.01: losses {first}, ... final {frozen.losses[-1]:.3g}")
    say(f"  With gamma = 1 the leaky average never leaves s = 0, so each step is lr*g/sqrt(eps) = "
        f"{0.01 / np.sqrt(EPS):g}*g: plain SGD with learning rate {0.01 / np.sqrt(EPS):g}, above "
        f"this problem's stability limit 2/lambda_max = {sgd_stability_limit(data[0]):.2f}, so the "
        "loss grows without bound.")
    grid = sweep(args.gammas, args.etas, args.seed, args.epochs, args.backend, data)
    say(f"final loss after {args.epochs} epochs (rows gamma, columns lr; floor {LSTSQ_FLOOR}):")
    say("gamma\\lr " + "".join(f"{eta:>9g}" for eta in args.etas))
    for gamma, row in zip(args.gammas, grid):
        say(f"{gamma:<9g}" + "".join(f"{v:9.3f}" for v in row))
    best = np.unravel_index(np.nanargmin(grid), grid.shape)
    say(f"best: gamma {args.gammas[best[0]]:g}, lr {args.etas[best[1]]:g}, loss {grid[best]:.4f}")
    if args.out is None:
        return None
    fig = _plot.figure()
    ax = fig.add_subplot()
    shown = np.log10(np.clip(grid - LSTSQ_FLOOR, 1e-4, None))  # distance to the floor, log scale
    image = ax.imshow(shown, cmap="viridis_r", aspect="auto")
    for (i, j), v in np.ndenumerate(grid):
        ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=9,
                color="white" if shown[i, j] > np.nanmean(shown) else "black")
    ax.set_xticks(range(len(args.etas)), [f"{e:g}" for e in args.etas])
    ax.set_yticks(range(len(args.gammas)), [f"{g:g}" for g in args.gammas])
    ax.set_xlabel("learning rate eta")
    ax.set_ylabel("gamma")
    ax.set_title(f"Final airfoil loss after {args.epochs} epochs (floor {LSTSQ_FLOOR})")
    fig.colorbar(image, ax=ax, label="log10(loss - floor)")
    return _plot.save(fig, args.out, "gamma")
