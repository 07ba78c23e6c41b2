"""``python -m iclsim.linear``: setting 1 end to end on the canonical example.

Trains ranks 1..8 (population mode; Monte Carlo mode with the reduced and the
block parametrisations; the full LSA from random and block-structured inits),
prints per rank L_r, the trained risk, the relative error ‖Γ − Γ_r‖_F/‖Γ_r‖_F and
the verdict, then evaluates the trained models on noisy prompts and compares the
best rank with the oracle's r*(σ²).  Writes a figure to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np

from iclsim import linear
from iclsim.report import format_table

CANONICAL_LAMBDA = (4.0, 2.5, 1.5, 1.0, 0.6, 0.35, 0.2, 0.1)
CANONICAL_N = 20
NOISE_LEVELS = (0.0, 16.0, 40.0, 100.0)


def canonical_covariance(rotation_seed: int | None = 0) -> np.ndarray:
    """Λ = U diag(λ) Uᵀ for the canonical spectrum, U a random rotation (None: U = I)."""
    lam = np.asarray(CANONICAL_LAMBDA)
    if rotation_seed is None:
        return np.diag(lam)
    rng = np.random.default_rng(rotation_seed)
    q, r = np.linalg.qr(rng.standard_normal((lam.size, lam.size)))
    u = q * np.sign(np.diag(r))
    cov = (u * lam) @ u.T
    return 0.5 * (cov + cov.T)


def _rank_table(res, title):
    rows = []
    for row in res.summary_rows():
        verdicts = ", ".join(f"{v} x{c}" if v != "stuck_at_rank_k" else f"stuck x{c}" for v, c in row["verdicts"].items())
        stuck = sorted({int(k) for k in res.stuck_rank[res.rank == row["rank"]] if k >= 0})
        if stuck:
            verdicts += f" (at rank {','.join(map(str, stuck))})"
        rows.append(
            (row["rank"], row["L_r"], row["risk"], row["test_risk"], row["test_se"],
             row["gamma_error_mean"], row["gamma_error_max"], verdicts)
        )
    headers = ("r", "L_r", "risk", "test risk", "test SE", "err mean", "err max", "verdicts")
    return format_table(rows, headers, title)


def _noise_table(res, cov, n, key, n_prompts):
    s2 = np.asarray(NOISE_LEVELS)
    mean, se = linear.evaluate(key, res.params, cov, n, label_noise=s2, n_prompts=n_prompts)
    # Rank 0 (Γ = 0) needs no training: its risk is exactly t = tr Λ at every σ².
    ranks = np.concatenate([[0], np.unique(res.rank)])
    sim = np.array([np.full(len(s2), np.trace(cov))]
                   + [mean[res.rank == r].mean(axis=0) for r in ranks[1:]])  # (ranks, levels)
    sim_se = np.array([np.zeros(len(s2))] + [se[res.rank == r].max(axis=0) for r in ranks[1:]])
    theory = linear.optimal_risks(cov, n, label_noise=s2)  # (levels, d+1)
    rows = []
    for j, level in enumerate(s2):
        best_sim = int(ranks[np.argmin(sim[:, j])])
        pred = linear.best_rank(cov, n, label_noise=level).rank
        cells = [f"{sim[i, j]:.3f}±{sim_se[i, j]:.3f} ({theory[j, r]:.3f})" for i, r in enumerate(ranks)]
        rows.append((f"{level:g}", *cells, best_sim, pred))
    headers = ("σ²", *[f"r={r}" for r in ranks], "best r (sim)", "r* (theory)")
    title = (
        "Noisy evaluation (context label noise σ², clean query), MC-trained reduced models:\n"
        "simulated risk ± SE (oracle R_r(σ²) = L_r + σ² S_r); r = 0 is Γ = 0, risk tr Λ exactly"
    )
    return format_table(rows, headers, title), (s2, ranks, sim, sim_se, theory)


def _figure(path, noise, cov, n):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s2, ranks, sim, sim_se, _ = noise
    grid = np.linspace(0, s2.max(), 101)
    theory = linear.optimal_risks(cov, n, label_noise=grid)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.cm.viridis(np.linspace(0, 0.95, len(ranks)))
    for i, r in enumerate(ranks):
        ax.plot(grid, theory[:, r], color=colors[i], lw=1.2, label=f"r = {r}")
        ax.errorbar(s2, sim[i], yerr=sim_se[i], fmt="o", color=colors[i], ms=4, capsize=2)
    ax.set_xlabel("context label-noise variance σ²")
    ax.set_ylabel("risk E[(ŷ − y_q)²]")
    ax.set_title(f"Setting 1, canonical example (d = 8, N = {n}): lines theory, points trained")
    ax.legend(ncol=3, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _say(text: str) -> None:
    """A status line, shown at once (the sections take minutes on 2 cores)."""
    print(text, flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iclsim.linear", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8000, help="Monte Carlo Adam steps (default 8000)")
    parser.add_argument("--batch", type=int, default=1024, help="prompts per Monte Carlo step (default 1024)")
    parser.add_argument("--lr", type=float, default=0.02, help="Monte Carlo learning rate (default 0.02)")
    parser.add_argument("--init-scale", type=float, default=0.1, help="Monte Carlo init scale (default 0.1)")
    parser.add_argument("--adam-b1", type=float, default=0.99,
                        help="Adam β1 for Monte Carlo (default 0.99: with 0.9 the weakest direction, "
                             "λ = 0.1, follows the sign of a noisy gradient and rank 8 stays on the "
                             "rank-7 plateau)")
    parser.add_argument("--average-tail", type=float, default=0.25,
                        help="Polyak-average the last fraction of Monte Carlo iterates (default 0.25)")
    parser.add_argument("--full-steps", type=int, default=2000,
                        help="steps of the full-LSA runs (random vs block init; default 2000, batch 256)")
    parser.add_argument("--population-steps", type=int, default=3000,
                        help="steps of the population-mode runs (default 3000: Adam, then an "
                             "L-BFGS finish)")
    parser.add_argument("--seeds", type=int, default=4, help="seeds per rank (default 4)")
    parser.add_argument("--eval-prompts", type=int, default=65536, help="held-out prompts per run")
    parser.add_argument("--quick", action="store_true", help="small run (1000 steps, batch 128, 2 seeds)")
    parser.add_argument("--out", default="results/linear", help="output folder for the figure")
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.batch, args.seeds, args.eval_prompts = 1000, 128, 2, 16384
        args.full_steps = 1000

    start = time.perf_counter()
    cov = canonical_covariance(0)
    n = CANONICAL_N
    ranks = range(1, 9)
    key = jax.random.key(args.seed)
    print(f"Canonical example: λ = {CANONICAL_LAMBDA}, N = {n}, Λ = U diag(λ) Uᵀ with a random U")
    print(f"JAX {jax.__version__} on {jax.devices()[0].platform} x{jax.device_count()}\n",
          flush=True)

    _say(f"training: population mode, reduced, ranks 1..8 x {args.seeds} seeds ...")
    pop = linear.train(key, cov, n, ranks, mode="population", parametrization="reduced",
                       loo=False, sampler="statistic", adam_b1=0.9, average_tail=0.0,
                       seeds=args.seeds, steps=args.population_steps, learning_rate=0.05, eval_prompts=args.eval_prompts,
                       progress=True)
    print(_rank_table(pop, f"Population mode, reduced Γ = A Bᵀ, {args.population_steps} steps, "
                           f"{args.seeds} seeds "
                           f"[{pop.wall_time:.1f} s]"))
    mc_kwargs = dict(mode="monte_carlo", seeds=args.seeds, steps=args.steps, batch=args.batch,
                     learning_rate=args.lr, init_scale=args.init_scale, adam_b1=args.adam_b1,
                     average_tail=args.average_tail, eval_prompts=args.eval_prompts,
                     loo=False, sampler="statistic",
                     progress=True)
    results = {}
    for par in ("reduced", "block"):
        _say(f"\ntraining: Monte Carlo, {par}, {args.steps} steps x batch {args.batch} ...")
        res = linear.train(key, cov, n, ranks, parametrization=par, **mc_kwargs)
        results[par] = res
        print()
        print(_rank_table(res, f"Monte Carlo mode, {par}, {args.steps} steps x batch {args.batch}, "
                               f"lr {args.lr}, init scale {args.init_scale}, β1 {args.adam_b1}, "
                               f"tail average {args.average_tail}, {args.seeds} seeds "
                               f"[{res.wall_time:.1f} s]"))
    for init in ("random", "block"):
        _say(f"\ntraining: Monte Carlo, full LSA, {init} init, {args.full_steps} steps ...")
        res = linear.train(key, cov, n, ranks, parametrization="full", init=init,
                           **{**mc_kwargs, "steps": args.full_steps, "batch": 256})
        print()
        print(_rank_table(res, f"Monte Carlo mode, full LSA, {init} init, {args.full_steps} steps x "
                               f"batch 256, lr {args.lr}, init scale {args.init_scale} "
                               f"[{res.wall_time:.1f} s]"))
        ok = sum(v == "optimum_reached" for v in res.verdict)
        stuck = sum(v == "stuck_at_rank_k" for v in res.verdict)
        print(f"full LSA, {init} init: {ok}/{len(res.verdict)} runs reach L_r, {stuck} stuck at a lower rank")

    _say("\nevaluating the reduced runs on noisy prompts ...")
    table, noise = _noise_table(results["reduced"], cov, n, jax.random.fold_in(key, 99), args.eval_prompts)
    print()
    print(table)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "linear_label_noise.png")
    _figure(path, noise, cov, n)
    print(f"\nfigure: {path}")
    print(f"total wall time: {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
