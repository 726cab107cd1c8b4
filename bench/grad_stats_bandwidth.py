"""inspect_grads on the CPU against its roofline: GB/s read at 2^26 float32 and bfloat16 grads.

    python bench/grad_stats_bandwidth.py [--log2-size 26] [--repeat 11]

Rows, per dtype and thread count: "same traffic" (the roofline: the same bytes read by the same
chunked, parallel loop, as a plain float32 sum in 32 lanes; fastrms.cpu.grad_stats.same_traffic),
"chunk partials" (the Numba loop alone: unscale, square, lane sums, lane trees) and
"inspect_grads" (the whole call: checks, the loop, the pairwise tree on the host). Each row is the
median of --repeat samples (fastrms.bench.timing), the roofline measured right before the rows it
judges, in the same process; "of roofline" is the row's GB/s over the roofline's.
"""

import argparse
import platform

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--log2-size", type=int, default=26)
    parser.add_argument("--repeat", type=int, default=11)
    args = parser.parse_args()

    import numba

    from fastrms.bench.timing import median_seconds
    from fastrms.cpu import grad_stats as cpu
    from fastrms.dtypes import bfloat16_dtype
    from fastrms.grad_stats import inspect_grads, unscale_factors
    from fastrms.threads import resolve

    n = 1 << args.log2_size
    inv32, inv64 = unscale_factors(1024.0)
    rng = np.random.default_rng(0)
    base = rng.standard_normal(n, dtype=np.float32)
    print(f"{platform.processor() or platform.machine()}, {resolve()} threads available, "
          f"numba {numba.__version__}, numpy {np.__version__}; n = 2^{args.log2_size}, "
          f"median of {args.repeat}")
    print(f"{'dtype':<9} {'threads':>7}  {'row':<16} {'ms':>8} {'GB/s':>7} {'of roofline':>11}")
    for dtype in (np.dtype(np.float32), bfloat16_dtype()):
        g = base.astype(dtype)
        for threads in sorted({1, resolve()}):
            rows = {
                "same traffic": lambda: cpu.same_traffic(g, threads),
                "chunk partials": lambda: cpu.chunk_partials([g], inv32, inv64, threads),
                "inspect_grads": lambda: inspect_grads(g, 1024.0, threads=threads),
            }
            roofline = None
            for name, step in rows.items():
                seconds = median_seconds(step, args.repeat)
                rate = g.nbytes / seconds / 1e9
                roofline = roofline or rate
                print(f"{dtype.name:<9} {threads:>7}  {name:<16} {seconds * 1e3:>8.2f} "
                      f"{rate:>7.1f} {rate / roofline:>11.2f}")


if __name__ == "__main__":
    main()
