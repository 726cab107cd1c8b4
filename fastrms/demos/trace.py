"""``trace``: RMSProp on f(x) = 0.1·x1² + 2·x2², the book's 2-D picture, through fastrms.

The two coordinates live in one 2-element float64 buffer (the book's scalars are Python floats)
and every step is one ``fastrms.rmsprop_update`` call on it.
"""

import numpy as np

import fastrms

from . import _plot

START = (-5.0, -2.0)


def f(x1, x2, rotated=False):
    """The book's ill-conditioned quadratic, or exercise 2's version rotated by 45°."""
    if rotated:
        return 0.1 * (x1 + x2) ** 2 + 2 * (x1 - x2) ** 2
    return 0.1 * x1**2 + 2 * x2**2


def gradient(x, out, rotated=False):
    """∇f at ``x``, written into ``out``."""
    x1, x2 = x
    if rotated:
        out[0] = 0.2 * (x1 + x2) + 4 * (x1 - x2)
        out[1] = 0.2 * (x1 + x2) - 4 * (x1 - x2)
    else:
        out[0] = 0.2 * x1
        out[1] = 4 * x2


def rmsprop_path(eta=0.4, gamma=0.9, steps=20, rotated=False, eps=1e-6, backend="auto"):
    """The points x_0 .. x_steps, shape (steps + 1, 2)."""
    x = np.array(START, dtype=np.float64)
    grad = np.zeros_like(x)
    square_avg = np.zeros_like(x)  # s1 = s2 = 0
    path = [x.copy()]
    for _ in range(steps):
        gradient(x, grad, rotated)
        fastrms.rmsprop_update(x, grad, square_avg, lr=eta, alpha=gamma, eps=eps, backend=backend)
        path.append(x.copy())
    return np.array(path)


def add_arguments(parser):
    parser.add_argument("--eta", type=float, default=0.4, help="learning rate η")
    parser.add_argument("--gamma", type=float, default=0.9, help="γ")
    parser.add_argument("--steps", type=int, default=20, help="steps")
    parser.add_argument("--rotated", action="store_true",
                        help="exercise 2: f(x) = 0.1 (x1 + x2)^2 + 2 (x1 - x2)^2")


def run(args, say):
    path = rmsprop_path(args.eta, args.gamma, args.steps, args.rotated)
    x1, x2 = path[-1]
    say(f"epoch {args.steps}, x1: {x1:f}, x2: {x2:f}")
    if args.rotated:
        plain = rmsprop_path(args.eta, args.gamma, args.steps)[-1]
        say(f"f = {f(x1, x2, True):.4f} here, {f(*plain):.4f} unrotated: the valley now runs along "
            "a diagonal, which RMSProp's per-coordinate scaling cannot follow")
    if args.out is None:
        return None
    fig = _plot.figure()
    ax = fig.add_subplot()
    # The window holds the path and the minimum at the origin, with a margin.
    lo = np.minimum(path.min(axis=0), 0.0) - 0.5
    hi = np.maximum(path.max(axis=0), 0.0) + 1.0
    g1, g2 = np.meshgrid(np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200))
    ax.contour(g1, g2, f(g1, g2, args.rotated), levels=20, colors="#1f77b4", linewidths=0.8)
    ax.plot(path[:, 0], path[:, 1], "-o", color="#ff7f0e", markersize=3)
    ax.set_xlabel("x1")
    ax.set_ylabel("x2")
    shape = "0.1 (x1 + x2)^2 + 2 (x1 - x2)^2" if args.rotated else "0.1 x1^2 + 2 x2^2"
    ax.set_title(f"RMSProp on f = {shape}\neta {args.eta}, gamma {args.gamma}, {args.steps} steps",
                 fontsize=10)
    return _plot.save(fig, args.out, "trace")
