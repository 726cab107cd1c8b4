"""Whole runs with 8-bit state against float32 state, over seeds, and how the square average's
EMA tracks its float32 twin: the output is docs/eight-bit-runs.txt (docs/eight-bit.md, "Accuracy").

    python bench/eight_bit_runs.py        # about 4 minutes on 2 cores

1. The square average's tracking. The same gradients (2¹⁶ values, magnitudes falling 100-fold
   over 400 steps, as they do while a model converges) are fed to a float32-state and an 8-bit
   step; printed: the mean and the 5th–95th percentiles of decoded ŝ / s at the end. With
   alpha = 0.99 an EMA step moves a value by about 1% of itself, less than half the E5M3 code
   spacing (6–12%): rounded to nearest its code would round back to where it was (the mean
   ratio was 0.955), which the step's dithered rounding (``quant8.code_unsigned_dithered``)
   makes right on average.
2. The tests' regression MLP (two hidden layers of 256, full batch, 400 cosine steps, lr 1e-3,
   threshold 0) for seeds 0–5: the final loss's change against the float32-state run of the
   same seed, for each variant at torch's alpha = 0.99, and plain and centered at alpha = 0.9.
"""

import statistics

import numpy as np

import fastrms
import fastrms.torch as ft
from fastrms import eight_bit
from fastrms.torch.curves import regression_final_loss  # the tests' run

VARIANTS = {"plain": {}, "momentum": dict(momentum=0.9), "centered": dict(centered=True),
            "momentum + centered": dict(momentum=0.9, centered=True)}
SEEDS = range(6)


def tracking(alpha, n=1 << 16, steps=400):
    """Decoded 8-bit square average over the float32 one after ``steps`` shrinking grads."""
    rng = np.random.default_rng(0)
    opts = [fastrms.RMSprop(convention="torch", lr=1e-12, alpha=alpha, state_bits=bits,
                            threshold=0) for bits in (32, 8)]
    params = [np.zeros(n, np.float32) for _ in opts]
    states = [opt.init(p) for opt, p in zip(opts, params)]
    for t in range(steps):
        g = (rng.standard_normal(n) * 10.0 ** (-2 * t / steps)).astype(np.float32)
        for opt, p, state in zip(opts, params, states):
            opt.step(p, g, state)
    ratio = eight_bit.decoded(states[1].square_avg, "square_avg") / states[0].square_avg
    return ratio.mean(), np.percentile(ratio, 5), np.percentile(ratio, 95)


def final_loss(bits, options, seed):
    return regression_final_loss(
        lambda params: ft.RMSprop(params, lr=1e-3, state_bits=bits, threshold=0, **options), seed)


def main():
    print("1. decoded 8-bit square average / float32 one, after 400 steps of grads falling "
          "100-fold (2^16 values)")
    for alpha in (0.99, 0.9):
        mean, low, high = tracking(alpha)
        print(f"   alpha {alpha}: mean {mean:.3f}, 5th-95th percentile {low:.3f}-{high:.3f}")
    print("\n2. regression MLP, final loss with 8-bit state against float32 state, seeds 0-5")
    runs = [(name, 0.99) for name in VARIANTS] + [("plain", 0.9), ("centered", 0.9)]
    for name, alpha in runs:
        options = dict(VARIANTS[name], alpha=alpha)
        losses = {bits: [final_loss(bits, options, seed) for seed in SEEDS] for bits in (32, 8)}
        changes = [eight / full - 1 for eight, full in zip(losses[8], losses[32])]
        spread = statistics.stdev(losses[32]) / statistics.mean(losses[32])
        print(f"   {name:20s} alpha {alpha}: per seed "
              + " ".join(f"{100 * c:+5.1f}%" for c in changes)
              + f"; mean loss {100 * (statistics.mean(losses[8]) / statistics.mean(losses[32]) - 1):+.1f}%"
              + f"; float32 seed-to-seed sd {100 * spread:.1f}%", flush=True)


if __name__ == "__main__":
    main()
