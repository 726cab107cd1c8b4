"""``weights``: the leaky average's weights (1−γ)·γᵗ on the gradient t steps back."""

import numpy as np

from . import _plot

GAMMAS = (0.95, 0.9, 0.8, 0.7)
TERMS = 40


def leaky_weights(gamma, terms=TERMS):
    """(1−γ)·γᵗ, t = 0..terms−1: the share of s owed to the squared gradient t steps back."""
    return (1 - gamma) * gamma ** np.arange(terms)


def add_arguments(parser):
    parser.add_argument("--gammas", type=float, nargs="+", default=list(GAMMAS), metavar="G",
                        help="values of γ, one line each")


def run(args, say):
    for gamma in args.gammas:
        w = leaky_weights(gamma)
        say(f"gamma={gamma:.2f}: weight of t=0 {w[0]:.4f}, t=10 {w[10]:.4f}, "
            f"sum over t<{TERMS} {w.sum():.4f}, "
            f"effective window 1/(1-gamma) = {1 / (1 - gamma):.0f}")
    if args.out is None:
        return None
    fig = _plot.figure()
    ax = fig.add_subplot()
    for gamma in args.gammas:
        ax.plot(np.arange(TERMS), leaky_weights(gamma), label=f"gamma = {gamma:.2f}")
    ax.set_xlabel("time t (steps back)")
    ax.set_ylabel("weight (1 - gamma) gamma^t")
    ax.set_title("Leaky-average weights of past squared gradients")
    ax.legend()
    return _plot.save(fig, args.out, "weights")
