"""Time the cutoff frontier's computation (ohlora_eval/review/frontier.py) on synthetic r:
the default grid (19^3 triples) over 2,000 vectors, without a re-test and with 50 or all
2,000 of them re-tested k=20 times. Best of 5, in seconds.

    PYTHONPATH=. python scripts/frontier_timing.py
"""

from __future__ import annotations

import time

import numpy as np

from ohlora_eval.review import frontier as F


def best_of(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    rng = np.random.default_rng(0)
    grid = F.cutoff_grid(0.80, 0.98, 0.01)
    grids = (grid, grid, grid)
    n, k = 2000, 20
    abs_r = rng.uniform(0.7, 1.0, (n, 3))
    own = {"eyes": 0.92, "mouth": 0.88, "pose": 0.88}

    def retest(m: int) -> F.Repetitions:
        rows = np.arange(m)
        noisy = abs_r[rows][:, None, :] + rng.normal(0, 0.03, (m, k, 3))
        return F.Repetitions(rows, np.clip(noisy, 0, 1), own)

    def run(m: int | None, reps: F.Repetitions | None) -> None:
        fr = F.frontier(abs_r, grids, retest=reps)
        fr.table()
        F.strictest(fr, 20)
        if m:
            F.strictest(fr, 20, "reliable")
            F.strictest(fr, 20, "reliable_here")
            F.most_expected(fr)

    print(f"{len(grid) ** 3:,} cutoff triples x {n:,} vectors (frontier, table, answers):")
    for m in (None, 50, n):
        label = "no re-test" if not m else f"{m:,} re-tested x k={k}"
        reps = retest(m) if m else None
        print(f"  {label:>24}: {best_of(lambda m=m, reps=reps: run(m, reps)):.3f} s")


if __name__ == "__main__":
    main()
