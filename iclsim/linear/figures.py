"""Figures of setting 1, drawn only from a stored sweep result (an xarray Dataset).

Theory is drawn as lines (the oracle values stored in the result), simulation as
points with ±1 SE error bars (mean over non-diverged seeds; the SE shown is the
largest per-run SE of the held-out evaluation).  Which figures are drawn depends
on the axes the sweep varied:

* ``linear_risk_vs_label_noise`` — more than one evaluation σ²;
* ``linear_risk_vs_input_noise`` — more than one evaluation σ_x²;
* ``linear_risk_vs_context_length`` — more than one N;
* ``linear_gamma_heatmaps`` and ``linear_gamma_error`` — always: trained Γ vs Γ_r
  in the eigenbasis of Λ (Uᵀ Γ U), and ‖Γ − Γ_r‖/‖Γ_r‖ per rank.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["draw_all"]

_FIRST = dict(learning_rate=0, init_scale=0, train_label_noise=0)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out_dir, stem, formats):
    paths = []
    for fmt in formats:
        path = Path(out_dir) / f"{stem}.{fmt}"
        tmp = path.with_name(f".{path.name}.tmp.{fmt}")
        fig.savefig(tmp, dpi=130, format=fmt)
        tmp.replace(path)
        paths.append(path)
    return paths


def _colors(plt, n):
    return plt.cm.viridis(np.linspace(0.0, 0.92, n))


def _sim(ds, var, **sel):
    """Mean over seeds of non-diverged runs and the max SE."""
    ok = ~ds["diverged"].isel(**_FIRST)
    values = ds[var].isel(**_FIRST).sel(**sel).where(ok.sel(**{k: v for k, v in sel.items()
                                                              if k in ok.dims}))
    se_var = "eval_se" if var == "eval_risk" else "test_se"
    se = ds[se_var].isel(**_FIRST).sel(**sel)
    return values.mean("seed"), se.max("seed")


def _context(ds):
    sel = {k: float(ds[k].values[0]) for k in ("learning_rate", "init_scale", "train_label_noise")}
    return ", ".join(f"{k}={v:g}" for k, v in sel.items())


def risk_vs_noise(ds, kind, out_dir, formats):
    plt = _plt()
    dim = "label_noise" if kind == "label" else "input_noise"
    other = "input_noise" if kind == "label" else "label_noise"
    fine = f"{dim}_fine"
    theory_var = f"theory_risk_{kind}"
    n = ds.n_context.values[0]
    ranks = ds["rank"].values
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colors = _colors(plt, len(ranks))
    theory = ds[theory_var].sel(n_context=n)
    ax.plot(ds[fine], theory.sel(rank_all=0), color="0.55", ls="--", lw=1, label="r = 0 (Γ = 0)")
    for color, r in zip(colors, ranks):
        ax.plot(ds[fine], theory.sel(rank_all=r), color=color, lw=1.3, label=f"r = {r}")
        mean, se = _sim(ds, "eval_risk", n_context=n, rank=r)
        mean, se = mean.isel({other: 0}), se.isel({other: 0})
        ax.errorbar(ds[dim], mean, yerr=se, fmt="o", ms=4, capsize=2, color=color)
    label = "context label-noise variance σ²" if kind == "label" else "context input-noise variance σ_x²"
    ax.set_xlabel(label)
    ax.set_ylabel("risk E[(ŷ − y_q)²]")
    ax.set_title(f"Risk vs {kind} noise per rank (N = {n}): lines = oracle R_r, points = trained ± SE",
                 fontsize=10)
    ax.legend(fontsize=7, ncol=3)
    fig.text(0.01, 0.01, _context(ds), fontsize=6, color="0.4")
    fig.tight_layout()
    paths = _save(fig, out_dir, f"linear_risk_vs_{kind}_noise", formats)
    plt.close(fig)
    return paths


def risk_vs_context_length(ds, out_dir, formats):
    plt = _plt()
    ranks = ds["rank"].values
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colors = _colors(plt, len(ranks))
    for color, r in zip(colors, ranks):
        ax.plot(ds.n_context_fine, ds["theory_risk_n"].sel(rank_all=r), color=color, lw=1.3,
                label=f"r = {r}")
        mean, se = _sim(ds, "eval_risk", rank=r)
        mean = mean.isel(label_noise=0, input_noise=0)
        se = se.isel(label_noise=0, input_noise=0)
        ax.errorbar(ds.n_context, mean, yerr=se, fmt="o", ms=4, capsize=2, color=color)
    ax.set_xscale("log")
    ax.set_xlabel("context length N (in-context examples)")
    ax.set_ylabel("clean risk E[(ŷ − y_q)²]")
    ax.set_title("Risk vs context length per rank: lines = oracle L_r(N), points = trained ± SE",
                 fontsize=10)
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    paths = _save(fig, out_dir, "linear_risk_vs_context_length", formats)
    plt.close(fig)
    return paths


def gamma_heatmaps(ds, out_dir, formats):
    plt = _plt()
    n = ds.n_context.values[0]
    ranks = ds["rank"].values
    u = ds["eigenvectors"].values
    fig, axes = plt.subplots(2, len(ranks), figsize=(1.9 * len(ranks) + 1, 4.2), squeeze=False)
    trained_all = [u.T @ ds["gamma"].isel(**_FIRST).sel(n_context=n, rank=r, seed=0).values @ u
                   for r in ranks]
    target_all = [u.T @ ds["gamma_opt"].isel(train_label_noise=0).sel(n_context=n, rank=r).values @ u
                  for r in ranks]
    vmax = np.nanmax(np.abs(np.array(target_all + trained_all)))
    vmax = vmax if np.isfinite(vmax) and vmax > 0 else 1.0
    for k, r in enumerate(ranks):
        for row, (mat, name) in enumerate(((trained_all[k], "trained"), (target_all[k], "Γ_r"))):
            ax = axes[row, k]
            im = ax.imshow(mat, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"r = {r}: {name}", fontsize=8)
    fig.colorbar(im, ax=axes, shrink=0.8, label="entry of Uᵀ Γ U")
    fig.suptitle(f"Effective Γ in the eigenbasis of Λ (λ decreasing left→right, top→bottom), "
                 f"N = {n}, seed 0", fontsize=9)
    paths = _save(fig, out_dir, "linear_gamma_heatmaps", formats)
    plt.close(fig)
    return paths


def gamma_error(ds, out_dir, formats):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for n in ds.n_context.values:
        err = ds["gamma_error"].isel(**_FIRST).sel(n_context=n).where(
            ~ds["diverged"].isel(**_FIRST).sel(n_context=n))
        ranks = ds["rank"].values
        for s in ds.seed.values:
            ax.plot(ranks, err.sel(seed=s), "o", color="C0", alpha=0.4, ms=4)
        ax.plot(ranks, err.mean("seed"), "-", color="C0", label=f"N = {n}: mean over seeds")
    ax.set_yscale("log")
    ax.set_xlabel("rank r")
    ax.set_ylabel("‖Γ − Γ_r‖_F / ‖Γ_r‖_F")
    ax.set_title("Distance of trained Γ to the rank-r optimum (Theorem A)", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths = _save(fig, out_dir, "linear_gamma_error", formats)
    plt.close(fig)
    return paths


def draw_all(ds, out_dir, formats=("png", "pdf")) -> list[Path]:
    """Draw every figure that the result's axes support; return the written paths."""
    paths = []
    if ds.label_noise.size > 1:
        paths += risk_vs_noise(ds, "label", out_dir, formats)
    if ds.input_noise.size > 1:
        paths += risk_vs_noise(ds, "input", out_dir, formats)
    if ds.n_context.size > 1:
        paths += risk_vs_context_length(ds, out_dir, formats)
    paths += gamma_heatmaps(ds, out_dir, formats)
    paths += gamma_error(ds, out_dir, formats)
    return paths
