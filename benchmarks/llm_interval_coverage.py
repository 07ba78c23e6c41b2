"""Coverage of the real-LM intervals (:mod:`iclsim.llm.stats`) by simulation; prints the table
quoted in that module's docstring.

Simulated data (numpy, vectorised over datasets): ``S`` seeds × ``Q`` queries of 0/1
correctness.  A seed's true accuracy is ``clip(0.7 + sd · z_s, 0, 1)`` (``z_s`` standard
normal, ``sd`` the between-seed sd); its queries are correct independently with that
probability (query ``j`` of seed ``s`` is correct iff ``U_sj < accuracy``).

* paired drop: the same seed at flip fraction p has accuracy
  ``clip(0.55 + sd · z_s + 0.05 · z'_s)`` (a drop of 0.15 with a seed-level drop effect of
  sd 0.05) and the SAME uniforms ``U_sj`` (the same queries: the two scores of a query are
  positively correlated, as for a real model);
* difference of drops: a second model on the same seeds and queries (same ``U_sj``) with its
  own seed effects, accuracy ``clip(0.75 + sd · y_s)`` at p = 0 and
  ``clip(0.70 + sd · y_s + 0.05 · y'_s)`` at p.

The true values are the expectations of the clipped normals (numerical integration).  The
"old" row is the two-stage bootstrap this module replaced (seeds, then queries within each
chosen seed, seed stage shrunk so that its variance is s²/S; percentile interval), the "z"
row the t interval with the normal quantile instead of t: both are wrong by design and show
that the check can fail.

    python benchmarks/llm_interval_coverage.py [--datasets 4000] [--queries 40] [--plan-only]

It also prints a planning table: the difference in sensitivity (difference of two models'
drops) detectable with 80 % power by the two-sided paired t test at the 5 % level
(:func:`iclsim.llm.stats.detectable_difference`, exact noncentral t) for S seeds × Q queries
per seed and flip fraction, with the sd of a seed's difference of drops predicted by
:func:`iclsim.llm.stats.planning_sd_of_drop_difference` (accuracy 0.75 at both p, between-
seed sd of each model's drop 0.05, independent scores at the two p: conservative).

The tests (``tests/test_llm_stats.py``) import the simulation from here.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from iclsim.llm import stats

ACC, DROP, DROP_SD = 0.7, 0.15, 0.05
ACC_B, DROP_B = 0.75, 0.05


def clipped_mean(mu: float, sd: float) -> float:
    """E clip(mu + sd · Z, 0, 1) by the trapezoid rule on ±10 sd (error < 1e-9)."""
    if sd == 0:
        return float(np.clip(mu, 0.0, 1.0))
    z = np.linspace(-10, 10, 200_001)
    f = np.clip(mu + sd * z, 0.0, 1.0) * np.exp(-z * z / 2) / np.sqrt(2 * np.pi)
    return float(np.trapezoid(f, z))


def simulate(rng, n_data: int, n_seeds: int, n_queries: int, sd: float, acc: float = ACC):
    """Dict of ``(n_data, S, Q)`` 0/1 arrays ``a0, ap`` (model A at p = 0 and p) and ``b0, bp``
    (model B), and the true values ``acc``, ``drop``, ``diff``."""
    shape = (n_data, n_seeds, 1)
    u = rng.random((n_data, n_seeds, n_queries))
    za, za2, zb, zb2 = (rng.standard_normal(shape) for _ in range(4))
    pa0 = np.clip(acc + sd * za, 0, 1)
    pap = np.clip(acc - DROP + sd * za + DROP_SD * za2, 0, 1)
    pb0 = np.clip(ACC_B + sd * zb, 0, 1)
    pbp = np.clip(ACC_B - DROP_B + sd * zb + DROP_SD * zb2, 0, 1)
    out = {name: (u < p).astype(np.float64) for name, p in
           (("a0", pa0), ("ap", pap), ("b0", pb0), ("bp", pbp))}
    ta0, tap = clipped_mean(acc, sd), clipped_mean(acc - DROP, np.hypot(sd, DROP_SD))
    tb0, tbp = clipped_mean(ACC_B, sd), clipped_mean(ACC_B - DROP_B, np.hypot(sd, DROP_SD))
    out.update(acc=ta0, drop=ta0 - tap, diff=(ta0 - tap) - (tb0 - tbp))
    return out


def covered(res, truth) -> np.ndarray:
    return (res["lo"] <= truth) & (truth <= res["hi"])


def t_coverage(data, kind: str, level: float = 0.95) -> float:
    """Fraction of datasets whose :mod:`iclsim.llm.stats` interval covers the truth; ``kind``:
    ``acc``, ``drop`` or ``diff``."""
    arrays, weights = {"acc": ((data["a0"],), (1.0,)),
                       "drop": ((data["a0"], data["ap"]), (1.0, -1.0)),
                       "diff": ((data["a0"], data["ap"], data["b0"], data["bp"]),
                                (1.0, -1.0, -1.0, 1.0))}[kind]
    res = stats.contrast_ci_batch(arrays, weights, level=level)
    return float(covered(res, data[kind]).mean())


def z_coverage(data, level: float = 0.95) -> float:
    """The t interval of the accuracy with the normal quantile: wrong on purpose."""
    from scipy.stats import norm

    x = data["a0"].mean(axis=2)
    half = norm.ppf((1 + level) / 2) * x.std(axis=1, ddof=1) / np.sqrt(x.shape[1])
    m = x.mean(axis=1)
    return float(((m - half <= data["acc"]) & (data["acc"] <= m + half)).mean())


def old_bootstrap_coverage(data, level: float = 0.95, n_boot: int = 400, seed: int = 0) -> float:
    """The replaced two-stage bootstrap of the accuracy (shrunk seed stage, percentile
    interval), re-implemented and vectorised over datasets."""
    v = data["a0"]
    n_data, n_seeds, n_queries = v.shape
    rng = np.random.default_rng(seed)
    rows = v.mean(axis=2)  # (D, S)
    grand = rows.mean(axis=1)
    plug = rows.var(axis=1)
    s2 = rows.var(axis=1, ddof=1)
    within = v.var(axis=2).mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.sqrt(np.clip(np.where(plug > 0, (s2 - within / n_queries) / plug, 0.0), 0, None))
    hits = np.zeros(n_data, bool)
    chunk = max(1, 2_000_000 // (n_boot * n_seeds * n_queries))
    for start in range(0, n_data, chunk):
        d = np.arange(start, min(start + chunk, n_data))
        s = rng.integers(n_seeds, size=(d.size, n_boot, n_seeds))
        q = rng.integers(n_queries, size=(d.size, n_boot, n_seeds, n_queries))
        both = v[d[:, None, None, None], s[..., None], q].mean(axis=(2, 3))
        seeds_only = rows[d[:, None, None], s].mean(axis=2)
        g = grand[d, None]
        means = g + c[d, None] * (seeds_only - g) + (both - seeds_only)
        lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2], axis=1)
        hits[d] = (lo <= data["acc"]) & (data["acc"] <= hi)
    return float(hits.mean())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", type=int, default=4000)
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--plan-only", action="store_true", help="only the planning table")
    args = ap.parse_args(argv)
    if args.plan_only:
        planning_table()
        return
    n, q = args.datasets, args.queries
    se = 100 * np.sqrt(0.95 * 0.05 / n)
    t0 = time.perf_counter()
    print(f"nominal 95 %; {n} datasets per cell (binomial SE of a coverage {se:.2f} points); "
          f"Q = {q} queries per seed; coverage in %")
    seeds = (3, 5, 10)
    print(f"{'interval, between-seed sd':<34}" + "".join(f"{s:>4} seeds" for s in seeds))
    rows = [("old two-stage bootstrap, 0.1", 0.1, "old"), ("t: accuracy, sd 0.1", 0.1, "acc"),
            ("t: accuracy, sd 0", 0.0, "acc"), ("t: paired drop, sd 0.1", 0.1, "drop"),
            ("t: difference of drops, sd 0.1", 0.1, "diff"),
            ("normal quantile (z), sd 0.1", 0.1, "z")]
    for label, sd, kind in rows:
        cells = []
        for i, s in enumerate(seeds):
            data = simulate(np.random.default_rng([args.seed, s, int(100 * sd)]), n, s, q, sd)
            cov = {"old": old_bootstrap_coverage, "z": z_coverage}.get(kind)
            cells.append(cov(data) if cov else t_coverage(data, kind))
        print(f"{label:<34}" + "".join(f"{100 * c:>10.1f}" for c in cells))
    print("near the ceiling (true accuracy 0.99, sd 0, Q = 40):")
    for s in seeds:
        data = simulate(np.random.default_rng([args.seed, s, 99]), n, s, q, 0.0, acc=0.99)
        res = stats.contrast_ci_batch([data["a0"]], [1.0])
        fall = res["method"] != "t"
        print(f"  {s:>2} seeds: coverage {100 * covered(res, data['acc']).mean():.1f} % "
              f"({100 * fall.mean():.0f} % of datasets use the Wilson fallback, which covers "
              f"{100 * covered(res, data['acc'])[fall].mean():.1f} % of them)")
    print(f"({time.perf_counter() - t0:.0f} s)")
    planning_table()


def planning_table(drop_sd: float = 0.05, acc: float = 0.75) -> None:
    queries, seeds = (16, 32, 64), (3, 5, 10, 20, 40)
    print(f"\ndetectable difference in sensitivity (80 % power, two-sided 5 %), accuracy "
          f"{acc:g}, between-seed sd of a drop {drop_sd:g}; rows: seeds, columns: queries per "
          f"seed and p (all tasks together); in brackets the predicted sd of a seed's "
          f"difference of drops")
    print(f"{'seeds':>6}" + "".join(f"{q:>16}" for q in queries))
    for n in seeds:
        cells = []
        for q in queries:
            sd = stats.planning_sd_of_drop_difference(q, drop_sd=drop_sd, acc=acc)
            cells.append(f"{stats.detectable_difference(sd, n):.3f} ({sd:.3f})")
        print(f"{n:>6}" + "".join(f"{c:>16}" for c in cells))


if __name__ == "__main__":
    main()
