"""Loss-curve spread over 100 steps, all 128 option combinations of the adapter's tests:
fastrms.torch.RMSprop against torch.optim.RMSprop on one device, and torch's own implementations
against each other (for-loop vs foreach there; torch on the CPU vs torch on the device). The
model, data, options and measure are the tests' own, from ``fastrms.torch.curves``.

    python bench/loss_curve_spread.py [--device cuda]

Prints the combinations where any spread exceeds 0.5%, then the worst 12 and a summary. Its
output on an NVIDIA H200 is docs/loss-curve-spread-h200.txt; it is what ``curve_bound`` in the
tests cites. (Not a pytest file: it runs ~4 × 128 × 100 training steps.)
"""

import argparse

import numpy as np
import torch

from fastrms.torch import RMSprop
from fastrms.torch import curves as t  # the tests' model, data, options and measure


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    device = parser.parse_args(argv).device
    curve, rel = t.loss_curve, t.mean_relative_difference
    rows = []
    for kw in t.OPTIONS:
        base = t.make_mlp(seed=3, device=device)
        ref = curve(m := t.twin(base), torch.optim.RMSprop(m.parameters(), foreach=True, **kw))
        loop = curve(m := t.twin(base), torch.optim.RMSprop(m.parameters(), foreach=False, **kw))
        ours = curve(m := t.twin(base), RMSprop(m.parameters(), **kw))
        cpu_model = t.twin(base).cpu()
        cpu = curve(cpu_model, torch.optim.RMSprop(cpu_model.parameters(), **kw))
        rows.append((rel(ours, ref), rel(loop, ref), rel(cpu, ref), rel(ours, loop),
                     t.option_id(kw)))
        if max(rows[-1][:4]) > 0.005:
            print("  ".join(f"{x:.5f}" for x in rows[-1][:4]), rows[-1][4], flush=True)
    rows.sort(reverse=True)
    print("ours-vs-foreach  forloop-vs-foreach  torchcpu-vs-foreach  ours-vs-forloop  options")
    for r in rows[:12]:
        print("  ".join(f"{x:.5f}" for x in r[:4]), r[4])
    spreads = np.array([r[:4] for r in rows])
    print("max", spreads.max(0), "mean", spreads.mean(0))
    print("combos over 1%:", (spreads > 0.01).sum(0))


if __name__ == "__main__":
    main()
