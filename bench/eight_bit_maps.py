"""Which 8-bit code maps the optimizer state gets (fastrms.quant8): each candidate measured by its
effect on one step, from float32 state quantised blockwise, against the float32 step.

    python bench/eight_bit_maps.py [--n 2^20] [--steps 20]

The setting is bitsandbytes' (tests/test_optim.py there): lr 0.01, alpha 0.9, params 0.1·randn,
grads 0.01·randn; torch's rule. At each step the float32 run's state is quantised (blocks of 256,
scale = the block's largest magnitude), one step is taken from it, and the params are compared
with the float32 step's: the mean |Δp| over elements and steps (and the mean |Δp| / |p|). Then
centered RMSprop on low-variance grads (mean 0.01, sd 0.001 and 0.0001), storing the square
average s or the variance v = s − a² in the unsigned map. Last, the block size, on i.i.d. grads
and on grads whose magnitude changes every 64 values (as across a model's rows and layers).
"""

import argparse

import numpy as np

from fastrms import quant8
from fastrms._spec import rule_for
from fastrms.reference import evaluate

BLOCK = quant8.BLOCK


def float_map(exponent_bits, mantissa_bits):
    """An unsigned 8-bit float with these field widths, biased so that 1.0 is its largest code's
    binade start: its code values (ascending, those ≤ 1)."""
    bias = (1 << exponent_bits) - 1
    codes = np.arange(256)
    exponent, mantissa = codes >> mantissa_bits, codes & ((1 << mantissa_bits) - 1)
    scale = 2.0 ** (np.maximum(exponent, 1) - bias)
    values = np.where(exponent >= 1, 1 + mantissa / 2 ** mantissa_bits, mantissa / 2 ** mantissa_bits)
    values = values * scale
    return values[values <= 1]


def signed_of(unsigned):
    return np.concatenate([-unsigned[::-1], unsigned[1:]])


LINEAR = np.arange(-127, 128) / 127.0


def nearest(v, table):
    hi = np.clip(np.searchsorted(table, v), 0, table.size - 1)
    lo = np.clip(hi - 1, 0, table.size - 1)
    return np.where(np.abs(v - table[lo]) <= np.abs(table[hi] - v), table[lo], table[hi])


def round_trip(x, table, block=BLOCK):
    """``x`` quantised blockwise with ``table`` (values in [−1, 1] or [0, 1]) and decoded."""
    n = x.size
    blocks = np.zeros(-(-n // block) * block, np.float32)
    blocks[:n] = x
    blocks = blocks.reshape(-1, block)
    scale = np.abs(blocks).max(axis=1, keepdims=True)
    v = blocks / np.where(scale > 0, scale, 1)
    return (nearest(v, table) * scale).astype(np.float32).reshape(-1)[:n]


def one_step_errors(rule, maps, n, steps, grads, variance=False, seed=0, block=BLOCK):
    rng = np.random.default_rng(seed)
    p = (0.1 * rng.standard_normal(n)).astype(np.float32)
    s = np.zeros(n, np.float32)
    b = np.zeros(n, np.float32) if rule.momentum else None
    a = np.zeros(n, np.float32) if rule.centered else None
    errors, relative, worst = [], [], []
    for t in range(steps):
        g = grads(rng, n)
        p32, s32, b32, a32, _ = evaluate(rule, p, g, s, b, a, step=t + 1)
        if t > 0:
            qa = round_trip(a, maps["a"], block) if a is not None else None
            if variance:  # store v = s − a², rebuild s = v + a² from the decoded values
                qs = (round_trip(np.maximum(s - a * a, 0), maps["s"], block)
                      + qa * qa).astype(np.float32)
            else:
                qs = round_trip(s, maps["s"], block)
            qb = round_trip(b, maps["b"], block) if b is not None else None
            with np.errstate(invalid="ignore", divide="ignore"):
                p8 = evaluate(rule, p, g, qs, qb, qa, step=t + 1)[0]
            d = np.abs(p8.astype(np.float64) - p32)
            errors.append(np.mean(d))
            relative.append(np.mean(d / (np.abs(p32) + 1e-9)))
            worst.append(np.max(d))
        p, s, b, a = p32, s32, b32, a32
    return np.mean(errors), np.mean(relative), np.max(worst)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="2^20")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    n = 2 ** int(args.n[2:]) if args.n.startswith("2^") else int(args.n)

    def randn(rng, size):
        return (0.01 * rng.standard_normal(size)).astype(np.float32)

    def rule(**given):
        return rule_for("torch", lr=0.01, alpha=0.9, eps=1e-8, **given)

    print(f"{n} elements, {args.steps} steps, blocks of {BLOCK}; mean |Δp| (mean |Δp|/|p|), max |Δp|")
    print("square average, plain RMSprop:")
    for e, m in ((3, 5), (4, 4), (5, 3), (6, 2)):
        err = one_step_errors(rule(), {"s": float_map(e, m)}, n, args.steps, randn)
        print(f"  E{e}M{m}{' (chosen)' if (e, m) == (5, 3) else '':10s} {err[0]:.2e} ({err[1]:.2e})  max {err[2]:.2e}")
    chosen_s = float_map(5, 3)
    assert np.array_equal(chosen_s, quant8.TABLES[quant8.UNSIGNED][:quant8.TOP_CODE[0] + 1])
    print("momentum buffer (momentum 0.9; square average E5M3):")
    for name, table in (("linear (chosen)", LINEAR), ("sign+E3M4", signed_of(float_map(3, 4))),
                        ("sign+E4M3", signed_of(float_map(4, 3)))):
        err = one_step_errors(rule(momentum=0.9), {"s": chosen_s, "b": table}, n, args.steps,
                              randn)
        print(f"  {name:16s} {err[0]:.2e} ({err[1]:.2e})  max {err[2]:.2e}")
    print("grad average (centered; square average E5M3):")
    for name, table in (("linear (chosen)", LINEAR), ("sign+E3M4", signed_of(float_map(3, 4)))):
        err = one_step_errors(rule(centered=True), {"s": chosen_s, "a": table}, n, args.steps,
                              randn)
        print(f"  {name:16s} {err[0]:.2e} ({err[1]:.2e})  max {err[2]:.2e}")
    print("centered, what the unsigned map stores (E5M3; grad average linear):")
    for label, mean, sd in (("randn", 0.0, 0.01), ("mean 0.01, sd 0.001", 0.01, 0.001),
                            ("mean 0.01, sd 0.0001", 0.01, 0.0001)):
        def grads(rng, size, mean=mean, sd=sd):
            return (mean + sd * rng.standard_normal(size)).astype(np.float32)
        for stored, variance in (("s", False), ("v = s − a² (chosen)", True)):
            err = one_step_errors(rule(centered=True), {"s": chosen_s, "a": LINEAR}, n,
                                  args.steps, grads, variance)
            print(f"  {label:22s} store {stored:20s} {err[0]:.2e} ({err[1]:.2e})  max {err[2]:.2e}")
    print("block size (the chosen maps; momentum 0.9 + centered, v stored; scales cost 8 bytes "
          "per block and step):")

    def uneven(rng, size):  # magnitudes that change every 64 values (lognormal, sigma 1)
        factor = np.exp(rng.standard_normal(-(-size // 64))).repeat(64)[:size]
        return (0.01 * factor * rng.standard_normal(size)).astype(np.float32)

    for label, grads in (("randn", randn), ("magnitudes varying per 64", uneven)):
        for block in (64, 128, 256, 1024, 4096):
            err = one_step_errors(rule(momentum=0.9, centered=True),
                                  {"s": chosen_s, "b": LINEAR, "a": LINEAR}, n, args.steps, grads,
                                  True, block=block)
            chosen = " (chosen)" if block == BLOCK else ""
            print(f"  {label:26s} {block:5d}{chosen:9s} {err[0]:.2e} ({err[1]:.2e})  "
                  f"max {err[2]:.2e}  scale bytes/value {8 / block:.3f}")


if __name__ == "__main__":
    main()
