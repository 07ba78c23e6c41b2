"""Figures of setting 1, drawn only from a stored sweep result (an xarray Dataset).

Conventions (``docs/theory/linear.md``): risk is E[(ŷ − y_q)²] with a clean query
target (no factor 1/2); σ² is the context label-noise variance, σ_x² the
context input-noise variance, σ₀² the pretraining label-noise variance, N the
number of in-context examples, r the rank of W^{KQ}, L_r the optimal rank-r risk.

Theory is drawn as lines (oracle values stored in the result), simulation as
points with error bars: the mean over the non-diverged seeds ± its error, seed variance
and Monte Carlo error combined (:func:`iclsim.engine.analysis.seed_mean_error`; the Monte
Carlo term is 0 where the evaluation is exact).  Runs are shown
at the first learning rate, init scale and σ₀² of the sweep (printed in each
figure's footer).  Which figures are drawn depends on the axes the sweep varied:

* ``linear_risk_vs_label_noise`` — more than one evaluation σ² (Theorem B(a)):
  risk vs σ² per rank, the residual trained − oracle, and the best rank r*(σ²)
  (theory: the ``best_rank`` variable and the exact step function; simulation:
  argmin over the trained ranks and r = 0, whose risk is tr Λ exactly);
* ``linear_risk_vs_input_noise`` — more than one evaluation σ_x² (Theorem
  B(b)): the same panels against σ_x²;
* ``linear_risk_vs_context_length`` — more than one N: risk vs N per rank and the
  residual trained − oracle;
* ``linear_gamma_heatmaps`` — always: trained Γ, Γ_r and their difference in the
  eigenbasis of Λ (Uᵀ Γ U; Theorem A: diagonal, top-r entries only);
* ``linear_gamma_error`` — always: ‖Γ − Γ_r‖_F/‖Γ_r‖_F and |R(Γ) − L_r|/L_r per
  rank, marked by verdict;
* ``linear_training_curves`` — always: (training loss − L_r)/(L_(r−1) − L_r) against the
  step (1: stalled on the rank-(r − 1) plateau; Monte Carlo: trailing mean, seed-mean
  ± 2 errors).

The oracle risk is affine in σ² (at fixed σ_x²) and in σ_x² (at fixed σ²), so
the theory lines between the stored grid points are exact.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from iclsim.engine import analysis as A
from iclsim.engine import figures as F
from iclsim.plotting import result_config as _config
from iclsim.plotting import pyplot as _plt
from iclsim.plotting import scale_colors as _colors

__all__ = ["draw_all"]

_FIRST = ("learning_rate", "init_scale", "train_label_noise")
_MAX_HEATMAP_RANKS = 8
_VERDICT_STYLE = {
    "optimum_reached": dict(marker="o", color="C2", label="optimum reached"),
    "stuck_at_rank_k": dict(marker="X", color="C3", label="stuck at rank k < r"),
    "not_converged": dict(marker="^", color="C1", label="not converged"),
}


def _first(ds, var):
    """``ds[var]`` at the first learning rate, init scale and σ₀² (where those are dims)."""
    return A.first_cell(ds, var, _FIRST)


def _s0(ds):
    return float(ds["train_label_noise"].values[0])


def _sim(ds, var, **sel):
    """Mean over the non-diverged seeds and its error (engine ``seed_mean``)."""
    ok = ~_first(ds, "diverged")
    values = _first(ds, var).sel(**sel)
    se_var = "eval_se" if var == "eval_risk" else "test_se"
    se = _first(ds, se_var).sel(**sel)
    if var == "eval_risk" and ds.attrs.get("eval_method") == "exact":
        se = None  # eval_risk is exact; eval_se belongs to the Monte Carlo cross-check
    # every seed is evaluated on the sweep's one set of evaluation (test) prompts
    return A.seed_mean(values, se, ok=ok.sel(**{k: v for k, v in sel.items() if k in ok.dims}),
                       prompts="shared")


def _footer(ds) -> str:
    fixed = {"lr": ds.learning_rate.values[0], "init scale": ds.init_scale.values[0],
             "σ₀²": ds.train_label_noise.values[0]}
    parametrization = _config(ds).get("model", {}).get("parametrization", "?")
    return F.run_footer(ds, fixed, "simulated best rank", parametrization)


def _log_y(ax):
    """Log y-axis if the axes hold any finite positive data; else a note (e.g. all diverged)."""
    ys = [np.asarray(line.get_ydata(), float) for line in ax.get_lines()]
    ys = np.concatenate([y.ravel() for y in ys]) if ys else np.zeros(0)
    if np.any(np.isfinite(ys) & (ys > 0)):
        ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "no finite values (all runs diverged?)", transform=ax.transAxes,
                ha="center", va="center", fontsize=9, color="0.4")


def _trace(ds) -> float:
    return float(np.trace(ds["covariance"].values))


def _rank_legend(ax, plt, extra=(), **kw):
    from matplotlib.lines import Line2D

    handles, labels = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="0.3", lw=1.3), Line2D([], [], color="0.3", marker="o",
                                                               ls="none", ms=4)]
    labels += ["oracle (line)", "trained ± error (points)"]
    for h, lab in extra:
        handles.append(h)
        labels.append(lab)
    ax.legend(handles, labels, fontsize=7, **kw)


# ----------------------------------------------------------------------------- noise sweeps


def _best_rank_sim(ds, dim, n, other_index):
    """Simulated best rank per level of ``dim`` (engine ``best_scale``: r = 0 is tr Λ), for the
    runs pretrained at the first σ₀², at the ``other_index``-th level of the other noise."""
    other = "input_noise" if dim == "label_noise" else "label_noise"
    return A.best_scale_along(ds, dim, other, other_index=other_index, n_context=n,
                              train_label_noise=ds["train_label_noise"].values[0])


def risk_vs_noise(ds, kind, out_dir, formats):
    """Risk vs evaluation noise per rank, residuals and the best rank r* (Theorem B(a), B(b))."""
    plt = _plt()
    dim = "label_noise" if kind == "label" else "input_noise"
    other = "input_noise" if kind == "label" else "label_noise"
    sym = "σ²" if kind == "label" else "σ_x²"
    other_sym = "σ_x²" if kind == "label" else "σ²"
    other_value = float(ds[other].values[0])
    n = ds.n_context.values[0]
    s0 = _s0(ds)
    ranks = ds["rank"].values
    grid = ds[dim].values
    colors = _colors(plt, len(ranks))
    # Oracle risk of Γ_r (trained at σ₀²) on the same noisy prompts as the points.
    theory = ds["oracle_risk"].sel(n_context=n, train_label_noise=s0).isel({other: 0})
    theory = theory.transpose("rank_all", dim).values  # (d+1, levels)

    points = []
    for r in ranks:
        mean, err = _sim(ds, "eval_risk", n_context=n, rank=r)
        points.append((mean.isel({other: 0}).values, err.isel({other: 0}).values))
    fig, ax, ax_res, ax_best = F.risk_vs_noise(
        plt, grid=grid, scales=ranks, colors=colors, points=points,
        theory=[theory[r] for r in ranks], scale_symbol="ranks", figsize=(11.5, 5.6),
        jitter=0.006, residual_title="Residual trained − oracle (± error; 0 = exact agreement)")
    ax.plot(grid, theory[0], color="0.55", ls="--", lw=1, label="r = 0 (Γ = 0, risk tr Λ)")
    for color, r in zip(colors, ranks):
        ax.plot(grid, theory[r], color=color, lw=1.3, label=f"r = {r}")
    noise_name = ("context label-noise variance σ²" if kind == "label"
                  else "context input-noise variance σ_x²")
    ax.set_xlabel(noise_name)
    ax.set_ylabel("risk E[(ŷ − y_q)²] (clean query)")
    where = f"N = {n}" + (f", {other_sym} = {other_value:g}" if other_value else "")
    theorem = "B(a)" if kind == "label" else "B(b)"
    if kind == "label" and not other_value and s0 == 0.0:
        theorem += ": R_r = L_r + σ² S_r"
    ax.set_title(f"Risk of rank-r LSA vs {sym} ({where}; Theorem {theorem})", fontsize=10)
    _rank_legend(ax, plt, ncol=2)

    # r*: theory from the affine oracle lines (exact), simulation from the trained ranks.
    dense = np.linspace(float(grid.min()), float(grid.max()), 2001)
    lines = np.array([np.interp(dense, grid, row) for row in theory])  # exact: affine in noise
    all_ranks = ds["rank_all"].values
    trained = np.concatenate([[0], ranks])
    if s0 == 0.0:
        pred = ds["best_rank"].sel(n_context=n).isel({other: 0}).values
        pred_label = "best_rank (stored oracle r*)"
    else:
        pred = all_ranks[np.argmin(theory, axis=0)]
        pred_label = f"oracle r* (Γ_r trained at σ₀² = {s0:g})"
    sim_best = _best_rank_sim(ds, dim, n, 0)
    F.best_scale_panel(ax_best, dense=dense, theory_lines=lines, all_scales=all_ranks,
                       trained=trained, grid=grid, pred=pred, pred_label=pred_label,
                       sim_best=sim_best, agree_with=pred,
                       labels=("theory r* over r = 0..d", "theory over trained ranks ∪ {0}"),
                       xlabel=noise_name, ylabel="best rank r*",
                       title=f"Best rank r*({sym})", legend_loc="best")
    return F.finish(fig, _footer(ds), out_dir, f"linear_risk_vs_{kind}_noise", formats)


# ----------------------------------------------------------------------------- context length


def risk_vs_context_length(ds, out_dir, formats):
    """Risk vs N per rank (Theorem A's L_r as a function of N) and residuals."""
    plt = _plt()
    ranks = ds["rank"].values
    colors = _colors(plt, len(ranks))
    s0 = _s0(ds)
    s2, sx2 = float(ds.label_noise.values[0]), float(ds.input_noise.values[0])
    ns = ds.n_context.values
    clean = s0 == 0.0 and s2 == 0.0 and sx2 == 0.0
    grid_theory = ds["oracle_risk"].sel(train_label_noise=s0).isel(label_noise=0, input_noise=0)
    fig, (ax, ax_res) = plt.subplots(1, 2, figsize=(11.5, 4.8), layout="constrained",
                                     gridspec_kw=dict(width_ratios=(1.55, 1.0)))
    ax.axhline(_trace(ds), color="0.55", ls="--", lw=1, label="r = 0 (Γ = 0, risk tr Λ)")
    spread = np.exp((np.arange(len(ranks)) - (len(ranks) - 1) / 2) * 0.012)
    for k, (color, r) in enumerate(zip(colors, ranks)):
        if clean:
            ax.plot(ds.n_context_fine, ds["theory_risk_n"].sel(rank_all=r), color=color, lw=1.3,
                    label=f"r = {r}")
        else:  # the stored fine curve is clean: join the exact grid values instead
            ax.plot(ns, grid_theory.sel(rank_all=r), color=color, lw=1.3, label=f"r = {r}")
        mean, se = _sim(ds, "eval_risk", rank=r)
        mean = mean.isel(label_noise=0, input_noise=0).values
        se = se.isel(label_noise=0, input_noise=0).values
        ax.errorbar(ns, mean, yerr=se, fmt="o", ms=4, capsize=2, color=color)
        resid = mean - grid_theory.sel(rank_all=r).values
        ax_res.errorbar(ns * spread[k], resid, yerr=se, fmt="o", ms=3, capsize=1.5, color=color,
                        lw=0.8)
    ax.set_xscale("log")
    ax.set_ylim(0.0, 1.3 * _trace(ds))
    ax.set_xlabel("context length N (number of in-context examples)")
    ax.set_ylabel("risk E[(ŷ − y_q)²]" + (" (clean prompts)" if clean else ""))
    noise = "" if clean else f"; σ² = {s2:g}, σ_x² = {sx2:g}, σ₀² = {s0:g}"
    ax.set_title("Risk of rank-r LSA vs N (Theorem A: "
                 "L_r(N) = t − Σ_(i≤r) Nλ_i²/((N+1)λ_i + t)" + noise + ")", fontsize=9.5)
    _rank_legend(ax, plt, ncol=3, loc="upper right")
    ax_res.axhline(0.0, color="0.5", lw=0.8)
    ax_res.set_xscale("log")
    ax_res.set_xticks(ns, [str(int(v)) for v in ns])
    ax_res.minorticks_off()
    ax_res.set_xlabel("context length N")
    ax_res.set_ylabel("trained − oracle risk")
    ax_res.set_title("Residual trained − oracle (± error; 0 = exact agreement)\n"
                     "ranks share prompts at each N: residuals move together", fontsize=9)
    return F.finish(fig, _footer(ds), out_dir, "linear_risk_vs_context_length", formats)


# ----------------------------------------------------------------------------- Γ


def _shown_ranks(ranks):
    if len(ranks) <= _MAX_HEATMAP_RANKS:
        return ranks
    pick = np.unique(np.linspace(0, len(ranks) - 1, _MAX_HEATMAP_RANKS).round().astype(int))
    return ranks[pick]


def _eig_ticks(ax, d):
    ticks = np.arange(d) if d <= 10 else np.unique(np.linspace(0, d - 1, 5).astype(int))
    ax.set_xticks(ticks, [str(t + 1) for t in ticks], fontsize=6)
    ax.set_yticks(ticks, [str(t + 1) for t in ticks], fontsize=6)
    ax.tick_params(length=1.5, pad=1)


def gamma_heatmaps(ds, out_dir, formats):
    """Trained Γ, Γ_r and their difference in the eigenbasis of Λ (Theorem A)."""
    plt = _plt()
    n = ds.n_context.values[0]
    s0 = _s0(ds)
    ranks = _shown_ranks(ds["rank"].values)
    u = ds["eigenvectors"].values
    d = u.shape[0]
    gamma = _first(ds, "gamma").sel(n_context=n, seed=ds.seed.values[0])
    trained = [u.T @ gamma.sel(rank=r).values @ u for r in ranks]
    target = [u.T @ ds["gamma_opt"].sel(n_context=n, rank=r, train_label_noise=s0).values @ u
              for r in ranks]
    diff = [a - b for a, b in zip(trained, target)]
    vmax = np.nanmax(np.abs(np.array(target + trained)))
    vmax = vmax if np.isfinite(vmax) and vmax > 0 else 1.0
    dmax = np.nanmax(np.abs(np.array(diff))) if np.isfinite(np.array(diff)).any() else 0.0
    dmax = dmax if np.isfinite(dmax) and dmax > 0 else 1e-12
    fig, axes = plt.subplots(3, len(ranks), figsize=(1.55 * len(ranks) + 2.2, 5.9),
                             squeeze=False, layout="constrained")
    rows = ((trained, "trained Uᵀ Γ U", vmax), (target, "optimum Uᵀ Γ_r U", vmax),
            (diff, "difference", dmax))
    images = []
    for row, (mats, name, scale) in enumerate(rows):
        for k, r in enumerate(ranks):
            ax = axes[row, k]
            im = ax.imshow(mats[k], cmap="RdBu_r", vmin=-scale, vmax=scale)
            _eig_ticks(ax, d)
            if row == 0:
                ax.set_title(f"r = {r}", fontsize=9)
            if k == 0:
                ax.set_ylabel(f"{name}\nrow i", fontsize=8)
            if row == 2:
                ax.set_xlabel("column j", fontsize=7)
        images.append(im)
    fig.colorbar(images[0], ax=axes[:2, :], shrink=0.85, label="entry (i, j) of Uᵀ Γ U")
    fig.colorbar(images[2], ax=axes[2, :], shrink=0.85, label="trained − optimum",
                 format="%.1e")
    seed = int(ds.seed.values[0])
    theorem, denominator = ("Theorem A", "(N+1)λ_i + t") if s0 == 0.0 else (
        "Theorems A, B(d)", f"(N+1)λ_i + t + σ₀², σ₀² = {s0:g}")
    fig.suptitle(f"{theorem}: effective Γ in the eigenbasis of Λ "
                 "(i, j = 1..d, λ_1 ≥ … ≥ λ_d); "
                 f"Γ_r = U diag(γ_1..γ_r, 0, …) Uᵀ, γ_i = N/({denominator}); "
                 f"N = {n}, seed {seed}",
                 fontsize=9)
    return F.finish(fig, _footer(ds), out_dir, "linear_gamma_heatmaps", formats)


def gamma_error(ds, out_dir, formats):
    """‖Γ − Γ_r‖/‖Γ_r‖ and |R(Γ) − L_r|/L_r per rank, markers by verdict."""
    plt = _plt()
    from matplotlib.lines import Line2D

    s0 = _s0(ds)
    fig, (ax, ax_risk) = plt.subplots(1, 2, figsize=(11, 4.4), layout="constrained")
    ranks = ds["rank"].values
    seen = set()
    floor = 1e-16
    open_drawn = filled_drawn = False  # R(Γ) < L_r (open markers) / R(Γ) > L_r (filled)
    for c, n in enumerate(ds.n_context.values):
        color = f"C{c % 10}" if ds.n_context.size > 1 else "C0"
        ok = ~_first(ds, "diverged").sel(n_context=n)
        err = _first(ds, "gamma_error").sel(n_context=n).where(ok)
        verdict = _first(ds, "verdict").sel(n_context=n)
        ladder = ds["optimal_risk"].sel(n_context=n, train_label_noise=s0, rank_all=ranks)
        excess = ((_first(ds, "risk").sel(n_context=n) - ladder.values[:, None]) /
                  ladder.values[:, None]).where(ok)
        offset = (c - (ds.n_context.size - 1) / 2) * min(0.08, 0.4 / ds.n_context.size)
        for s in ds.seed.values:
            v = verdict.sel(seed=s).values
            e = err.sel(seed=s).values
            x = excess.sel(seed=s).values
            for name, style in _VERDICT_STYLE.items():
                m = v == name
                if not m.any():
                    continue
                seen.add(name)
                kw = dict(marker=style["marker"], ls="none", ms=5, alpha=0.6)
                ax.plot(ranks[m] + offset, e[m], mec=style["color"], mfc=style["color"], **kw)
                pos, neg = m & (x > 0), m & ~(x > 0) & np.isfinite(x)
                open_drawn |= bool(neg.any())
                filled_drawn |= bool(pos.any())
                ax_risk.plot(ranks[pos] + offset, np.maximum(x[pos], floor), mec=style["color"],
                             mfc=style["color"], **kw)
                ax_risk.plot(ranks[neg] + offset, np.maximum(-x[neg], floor), mec=style["color"],
                             mfc="none", **kw)
        label = f"N = {n}: mean over seeds" if ds.n_context.size > 1 else "mean over seeds"
        ax.plot(ranks + offset, err.mean("seed"), "-", color=color, lw=1, label=label)
    import matplotlib.transforms as mtransforms

    tie = np.isnan(_first(ds, "gamma_opt").isel(i=0, j=0)).any("n_context").values  # per rank
    for r, is_tie in zip(ranks, np.atleast_1d(tie)):
        if is_tie:  # λ_r = λ_(r+1): Γ_r is not unique, so no Γ error is defined
            blend = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
            ax.text(r, 0.03, "tie: Γ_r\nnot unique", transform=blend, ha="center", va="bottom",
                    fontsize=7, color="0.35")
    for a in (ax, ax_risk):
        _log_y(a)
        a.set_xlim(ranks.min() - 0.6, ranks.max() + 0.6)
        a.set_xlabel("rank r")
        a.set_xticks(ranks if ranks.size <= 16 else np.unique(np.linspace(
            ranks.min(), ranks.max(), 9).astype(int)))
    ax.set_ylabel("‖Γ − Γ_r‖_F / ‖Γ_r‖_F")
    ax.set_title("Distance of trained Γ to the rank-r optimum Γ_r (Theorem A)", fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    for name in _VERDICT_STYLE:
        if name in seen:
            st = _VERDICT_STYLE[name]
            handles.append(Line2D([], [], marker=st["marker"], color=st["color"], ls="none"))
            labels.append(st["label"])
    ax.legend(handles, labels, fontsize=7)
    ax_risk.set_ylabel("|R(Γ) − L_r| / L_r")
    ax_risk.set_title("Excess risk over L_r on the training distribution", fontsize=10)
    if open_drawn:  # say what open markers mean only where some are drawn
        kinds = [(Line2D([], [], marker="o", color="0.3", ls="none"), "R(Γ) > L_r")] * \
            filled_drawn
        kinds.append((Line2D([], [], marker="o", mec="0.3", mfc="none", ls="none"),
                      "R(Γ) < L_r (float32 rounding or MC error)"))
        ax_risk.legend(*zip(*kinds), fontsize=7, title="marker fill", title_fontsize=7)
    return F.finish(fig, _footer(ds), out_dir, "linear_gamma_error", formats)


#: Trailing window of the Monte Carlo training curves: the stored window means between
#: (1 − _TRAIL)·t and t are averaged at step t.
_TRAIL = 0.2


def trailing_mean(loss, steps, *, trail=_TRAIL):
    """Trailing averages of a stored Monte Carlo loss curve with their standard errors.

    ``loss`` (..., T) holds the means of consecutive windows of training steps (the
    result's ``loss``), ``steps`` (T,) the last step of each window.  At every ``t`` the
    windows ending in ((1 − trail)·t, t] (at least one) are averaged; the SE is their sample
    SD over √count (NaN for one window).  The windows are means over independent fresh
    prompts, so their scatter is the sampling noise plus the drift of the loss inside the
    trailing window: the SE is conservative where the curve still falls.
    Returns ``(mean, se)``, each shaped like ``loss``.
    """
    loss = np.asarray(loss, float)
    steps = np.asarray(steps, float)
    mean = np.full(loss.shape, np.nan)
    se = np.full(loss.shape, np.nan)
    for k, t in enumerate(steps):
        sel = (steps > (1.0 - trail) * t) & (steps <= t)
        part = loss[..., sel]
        count = np.sum(np.isfinite(part), axis=-1)
        # all-NaN slices (diverged runs, masked) give NaN, as documented: not a warning
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean[..., k] = np.nanmean(part, axis=-1) if part.shape[-1] else np.nan
            if part.shape[-1] > 1:
                sd = np.nanstd(part, axis=-1, ddof=1)
                se[..., k] = np.where(count > 1, sd / np.sqrt(count), np.nan)
    return mean, se


def training_curves(ds, out_dir, formats):
    """Excess training loss per rank in units of the rank's own gain, against the step.

    y = (loss − L_r) / (L_{r−1} − L_r): 1 is the rank-(r − 1) plateau (the run has not yet
    learnt its weakest direction: ``stuck_at_rank_k`` with k = r − 1), 0 is the optimum,
    ±0.1 the verdict tolerance of ``classify_runs`` (a tenth of that gain).  A stall shows
    as a curve that flattens at or above 1; a rank that converges falls through 1 to 0.

    Population mode: the stored loss is the exact risk R(Γ) (window means), drawn on a log
    axis down to the float32 resolution.  Monte Carlo mode: the stored window means of
    the batch loss are noisy (one window's SE is about 1/3 of L_7 − L_8 in the quickstart),
    and the result stores neither Γ nor its exact risk along the way, so each curve is a
    trailing average over the last 20 % of the steps (:func:`trailing_mean`), drawn with a
    band of ± 2 errors of the seed-mean (seed variance and the windows' SE combined,
    :func:`iclsim.engine.analysis.seed_mean_error`) on a symlog axis (linear within ±1, logarithmic above).  Its resolution
    grows with the step: it can tell a rank-(r − 1) plateau from the optimum once the band
    is narrower than 1.  Curves are means over the non-diverged seeds at the first N,
    learning rate, init scale and σ₀²; per-seed outcomes are in ``linear_gamma_error``.
    """
    plt = _plt()
    n = ds.n_context.values[0]
    s0 = _s0(ds)
    ranks = ds["rank"].values
    colors = _colors(plt, len(ranks))
    mode = _config(ds).get("train", {}).get("mode", "")
    exact = mode == "population"
    ok = ~_first(ds, "diverged").sel(n_context=n)
    loss = _first(ds, "loss").sel(n_context=n).where(ok)
    steps = ds["step"].values
    ladder = ds["optimal_risk"].sel(n_context=n, train_label_noise=s0).values  # L_0..L_d
    floors = [np.inf]

    def curves(k, r):
        gain = float(ladder[r - 1] - ladder[r])
        runs = loss.sel(rank=r).transpose("seed", "step").values
        if exact:
            excess = (np.nanmean(runs, axis=0) - ladder[r]) / gain
            resolution = float(np.finfo(np.float32).eps) * float(ladder[r]) / gain
            floors.append(resolution)
            return [(f"r = {r}", np.maximum(np.abs(excess), 0.1 * resolution), None,
                     dict(lw=1.1))]
        mean, se = trailing_mean(runs, steps)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a rank whose seeds all diverged
            seed_mean = np.nanmean(mean, axis=0)
        # the one error of a seed-mean; a single window has no SE of its own (taken as 0)
        seed_se = A.seed_mean_error(mean, np.nan_to_num(se), axis=0,
                                     prompts="independent")  # each seed its own stream
        return [(f"r = {r}", (seed_mean - ladder[r]) / gain, 2.0 * seed_se / gain,
                 dict(lw=1.1))]

    fig, ax = F.training_curves(plt, steps=steps, scales=ranks, colors=colors, curves=curves,
                                figsize=(7.5, 4.8))
    floor = min(floors)
    ax.axhline(1.0, color="C3", ls="--", lw=0.9, label="rank r − 1 plateau (L_(r−1))")
    if exact:
        _log_y(ax)
        ax.set_ylabel("|R(Γ) − L_r| / (L_(r−1) − L_r)")
        what = ("exact population risk R(Γ), mean over seeds; noise floor: float32 rounding "
                f"of R (down to {floor:.0e} here)")
    else:
        ax.axhline(0.0, color="0.3", lw=0.8)
        ax.axhspan(-0.1, 0.1, color="C2", alpha=0.12, lw=0, label="verdict tolerance (±0.1)")
        ax.set_yscale("symlog", linthresh=1.0, linscale=1.5)
        ax.set_ylim(bottom=-0.6)
        ax.set_ylabel("(loss − L_r) / (L_(r−1) − L_r)")
        what = ("Monte Carlo batch loss: trailing mean over the last 20 % of the steps, "
                "mean over seeds ± 2 errors")
    ax.set_xlabel("optimizer step (Adam; population mode: L-BFGS for the last half)" if exact
                  else "Adam step")
    ax.set_title(f"Excess training loss in units of the rank-r gain (N = {n}): 0 = optimum L_r, "
                 f"1 = stalled at rank r − 1\n{what}", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    return F.finish(fig, _footer(ds), out_dir, "linear_training_curves", formats)


def draw_all(ds, out_dir, formats=("png", "pdf")) -> list[Path]:
    """Draw every figure that the result's axes support; return the written paths."""
    plan = ((ds.n_context.size > 1, risk_vs_context_length), (True, gamma_heatmaps),
            (True, gamma_error))
    return F.draw_all(ds, out_dir, formats, plan, training=training_curves,
                      noise=(risk_vs_noise, {"label_noise": "label", "input_noise": "input"}))
