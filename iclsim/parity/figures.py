"""Figures of setting 2, drawn only from a stored sweep result (an xarray Dataset).

Conventions (``docs/theory/parity.md``): risk is E[(ŷ − y_q)²] with a clean query
target; m is the number of attention heads; features j = 1..K are ranked by
importance π₁ ≥ … ≥ π_K and live on blocks B_j of k bits; p is the context
label-flip probability, q the context bit-flip probability, and the context
signal is μ = (1 − 2p)(1 − 2q)^k.  R_m(μ) is the risk of the clean m-head optimum
(Theorem D, (3)); γ_j its readout ((1)); m* the best head count.

Theory is drawn as lines (oracle values stored in the result), simulation as
points with error bars: the mean over the non-diverged seeds ± its error, seed
variance and the Monte Carlo error of the held-out evaluation (whose prompts are shared
by all runs) combined (:func:`iclsim.engine.analysis.seed_mean_error`).  Runs are shown at the first learning rate, init scale and
N of the sweep (printed in each figure's footer).  Figures:

* ``parity_attention_mass`` — always: per trained m, the attention mass of each
  head on each block for the best seed (lowest exact loss), heads sorted by
  their block; the top-m target cells (head → block j, j ≤ m) are framed;
* ``parity_readout`` — always: trained readout c_h against γ_j of the block the
  head attends to, and the relative deviation |c_h − γ_j|/γ_j per block;
* ``parity_risk_vs_label_flip`` — more than one evaluation p: risk vs p per m,
  residual trained − oracle, best m (sim) and m* (theory) vs p;
* ``parity_risk_vs_bit_flip`` — more than one evaluation q: the same against q;
* ``parity_training_curves`` — always: training loss − R_m against the step.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from iclsim.engine import analysis as A
from iclsim.engine import figures as F
from iclsim.plotting import result_config as _config
from iclsim.plotting import pyplot as _plt
from iclsim.plotting import scale_colors as _colors

__all__ = ["draw_all", "attention_mass", "readout", "risk_vs_noise", "training_curves",
           "best_heads_sim"]

_FIRST = ("learning_rate", "init_scale", "n_context")
_VERDICT_STYLE = {
    "optimum_reached": dict(marker="o", color="C2", label="optimum reached"),
    "not_converged": dict(marker="^", color="C1", label="not converged (top-m blocks)"),
    "collapsed": dict(marker="X", color="C3", label="collapsed (heads share a block)"),
    "wrong_feature": dict(marker="s", color="C4", label="wrong feature (not top-m)"),
}


def _first(ds, var):
    """``ds[var]`` at the first learning rate, init scale and N (where those are dims)."""
    return A.first_cell(ds, var, _FIRST)


def _n(ds) -> int:
    return int(ds.n_context.values[0])


def _footer(ds) -> str:
    fixed = {"N": _n(ds), "lr": ds.learning_rate.values[0],
             "init scale": ds.init_scale.values[0]}
    protocol = _config(ds).get("train", {}).get("protocol", "?")
    return F.run_footer(ds, fixed, "best m (sim)", protocol)


def _problem(ds) -> str:
    pi = ds["pi"].values
    return (f"K = {pi.size}, k = {int(ds.attrs.get('k', 0)) or '?'}, "
            f"π = ({', '.join(f'{v:.3g}' for v in pi)})")


def _ok(ds):
    return ~_first(ds, "diverged")


def _sim(ds, **sel):
    """Mean eval_risk over the non-diverged seeds and its error (engine ``seed_mean``)."""
    ok = _ok(ds).sel(**{k: v for k, v in sel.items() if k in ("heads",)})
    return A.seed_mean(_first(ds, "eval_risk").sel(**sel), _first(ds, "eval_se").sel(**sel),
                       ok=ok, prompts="shared")  # one set of evaluation prompts per sweep


def best_heads_sim(ds, dim, other_index=0):
    """Simulated best m per level of ``dim`` (engine ``best_scale``, best-tuned over learning
    rate and init scale: m = 0 has risk 1), at
    the first N and the ``other_index``-th level of the other noise; NaN where every run
    diverged."""
    other = "bit_flip" if dim == "label_flip" else "label_flip"
    return A.best_scale_along(ds, dim, other, other_index=other_index,
                              n_context=ds["n_context"].values[0])


# ----------------------------------------------------------------------------- attention


def _best_seed(ds, m):
    """Seed with the lowest exact loss (5) among non-diverged runs of m heads (or the first)."""
    risk = _first(ds, "risk").sel(heads=m).where(_ok(ds).sel(heads=m)).values
    return int(ds.seed.values[int(np.nanargmin(risk))]) if np.isfinite(risk).any() else int(
        ds.seed.values[0])


def attention_mass(ds, out_dir, formats):
    """Per m: heads × blocks attention mass of the best seed; target top-m cells framed."""
    plt = _plt()
    from matplotlib.patches import Rectangle

    heads = ds["heads"].values
    n_blocks = ds.block.size
    cols = min(len(heads), 6)
    rows = -(-len(heads) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(2.35 * cols + 1.2, 8.5), 2.2 * rows + 1.3),
                             squeeze=False, layout="constrained")
    image = None
    for i, m in enumerate(heads):
        ax = axes[i // cols, i % cols]
        seed = _best_seed(ds, m)
        run = dict(heads=m, seed=seed)
        mass = _first(ds, "block_mass").sel(**run).values[:m]  # (m, K)
        verdict = str(_first(ds, "verdict").sel(**run).values)
        order = np.argsort(np.nanargmax(np.nan_to_num(mass, nan=-1.0), axis=1), kind="stable")
        shown = mass[order] if np.isfinite(mass).any() else np.zeros((m, n_blocks))
        image = ax.imshow(shown, cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
        for h in range(m):  # target: the top-m blocks, one head each (up to head order)
            ax.add_patch(Rectangle((h - 0.5, h - 0.5), 1, 1, fill=False, ec="C3", lw=1.6))
            if np.isfinite(shown[h]).any():
                j = int(np.nanargmax(shown[h]))
                ax.text(j, h, f"{shown[h, j]:.3f}"[1:] if shown[h, j] < 1 else "1",
                        ha="center", va="center", fontsize=6.5,
                        color="w" if shown[h, j] > 0.5 else "k")
        ax.axvline(m - 0.5, color="C3", lw=0.8, ls=":")
        ax.set_xticks(np.arange(n_blocks), [str(j + 1) for j in range(n_blocks)], fontsize=7)
        ax.set_yticks(np.arange(m), [str(int(h) + 1) for h in order], fontsize=7)
        ax.set_title(f"m = {m} (seed {seed})\n{verdict.replace('_', ' ')}", fontsize=8.5)
        ax.set_xlabel("block j (feature, by importance)", fontsize=7)
        if i % cols == 0:
            ax.set_ylabel("head h (sorted by block)", fontsize=7)
    for i in range(len(heads), rows * cols):
        axes[i // cols, i % cols].axis("off")
    fig.colorbar(image, ax=axes, shrink=0.8, label="attention mass Σ_(b∈B_j) α_hb")
    fig.suptitle("Theorem C: the m-head optimum puts one head on each of the top-m feature "
                 "blocks\nred frames: optimum (head → block j ≤ m, up to head order); dotted: "
                 "top-m boundary; numbers: each head's largest block mass\n"
                 f"{_problem(ds)}; N = {_n(ds)}; best seed per m (lowest exact loss (5))",
                 fontsize=9)
    return F.finish(fig, _footer(ds), out_dir, "parity_attention_mass", formats)


def readout(ds, out_dir, formats):
    """Trained readout c_h vs γ_j of the head's block, and the relative deviation."""
    plt = _plt()
    from matplotlib.lines import Line2D

    heads = ds["heads"].values
    colors = _colors(plt, len(heads))
    gamma = ds["gamma"].isel(n_context=0).values
    fig, (ax, ax_dev) = plt.subplots(1, 2, figsize=(11, 4.6), layout="constrained")
    lo, hi = 0.0, float(np.nanmax(gamma)) * 1.08
    ax.plot([lo, hi], [lo, hi], color="0.5", lw=0.9, ls="--")
    ax_dev.axhline(0.02, color="0.5", lw=0.9, ls=":")
    seen = set()
    offsets = (np.arange(len(heads)) - (len(heads) - 1) / 2) * 0.05
    ok = _ok(ds)
    for color, off, m in zip(colors, offsets, heads):
        for s in ds.seed.values:
            run = dict(heads=m, seed=s)
            if not bool(ok.sel(**run)):
                continue
            c = _first(ds, "readout").sel(**run).values[:m]
            block = _first(ds, "assigned_block").sel(**run).values[:m]
            verdict = str(_first(ds, "verdict").sel(**run).values)
            style = _VERDICT_STYLE.get(verdict, _VERDICT_STYLE["not_converged"])
            seen.add(verdict)
            target = gamma[block]
            ax.plot(target, c, ls="none", marker=style["marker"], ms=5, mfc=color, mec=color,
                    alpha=0.75)
            dev = np.abs(c - target) / target
            ax_dev.plot(block + 1 + off, np.maximum(dev, 1e-7), ls="none",
                        marker=style["marker"], ms=5, mfc=color, mec=color, alpha=0.75)
    for j, g in enumerate(gamma):
        ax.annotate(f"γ_{j + 1}", (g, lo), xytext=(0, 3), textcoords="offset points",
                    fontsize=7, ha="center", color="0.35")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, max(hi, float(np.nanmax(np.nan_to_num(_first(ds, "readout").values,
                                                            nan=0.0))) * 1.05))
    ax.set_xlabel("γ_j = Nπ_j / ((N − 1)π_j + 1) of the block j the head attends to")
    ax.set_ylabel("trained readout c_h")
    ax.set_title(f"Theorem C (1): trained readout c_h vs γ_j (N = {_n(ds)})\n"
                 "every head of every non-diverged run; dashed: c = γ", fontsize=9.5)
    handles = [Line2D([], [], color=c, marker="o", ls="none") for c in colors]
    labels = [f"m = {m}" for m in heads]
    for name, st in _VERDICT_STYLE.items():
        if name in seen:
            handles.append(Line2D([], [], color="0.3", marker=st["marker"], ls="none"))
            labels.append(st["label"])
    ax.legend(handles, labels, fontsize=7, ncol=2, loc="upper left")
    ax_dev.set_yscale("log")
    ax_dev.set_xticks(np.arange(1, gamma.size + 1))
    ax_dev.set_xlabel("block j the head attends to (argmax of its block mass)")
    ax_dev.set_ylabel("|c_h − γ_j| / γ_j")
    ax_dev.set_title("Relative readout error per head (all seeds)\n"
                     "dotted: the 2% tolerance of the verdict", fontsize=9.5)
    return F.finish(fig, _footer(ds), out_dir, "parity_readout", formats)


# ----------------------------------------------------------------------------- noise


def risk_vs_noise(ds, kind, out_dir, formats):
    """Risk vs p (or q) per m: oracle lines R_m(μ), trained points, residuals, m* (Theorem D)."""
    plt = _plt()
    dim = "label_flip" if kind == "label" else "bit_flip"
    other = "bit_flip" if kind == "label" else "label_flip"
    sym, other_sym = ("p", "q") if kind == "label" else ("q", "p")
    other_value = float(ds[other].values[0])
    n = _n(ds)
    heads = ds["heads"].values
    grid = ds[dim].values
    fine = ds[f"{dim}_fine"].values
    lines = ds[f"theory_risk_{kind if kind == 'label' else 'bit'}"].isel(n_context=0).values
    theory = ds["optimal_risk"].isel(n_context=0).isel({other: 0}).transpose("heads_all", dim)
    theory = theory.values
    colors = _colors(plt, len(heads))

    points = []
    for m in heads:
        mean, err = _sim(ds, heads=m)
        points.append((mean.isel({other: 0}).values, err.isel({other: 0}).values))
    fig, ax, ax_res, ax_best = F.risk_vs_noise(
        plt, grid=grid, scales=heads, colors=colors, points=points,
        theory=[theory[m] for m in heads], scale_symbol="m", figsize=(11.5, 5.8),
        jitter=0.005,
        residual_title="Residual trained − R_m(μ) (± error; 0 = exact agreement)")
    ax.plot(fine, lines[0], color="0.55", ls="--", lw=1, label="m = 0 (ŷ = 0, risk 1)")
    for color, m in zip(colors, heads):
        ax.plot(fine, lines[m], color=color, lw=1.3, label=f"m = {m}")
    _excess_inset(ax, ds, fine, lines, grid, heads, colors, other)
    from matplotlib.lines import Line2D

    handles, labels = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="0.3", lw=1.3),
                Line2D([], [], color="0.3", marker="o", ls="none", ms=4)]
    labels += ["oracle R_m(μ) (line)", "trained ± error (points)"]
    ax.legend(handles, labels, fontsize=7, ncol=2, loc="upper left")
    name = ("context label-flip probability p" if kind == "label"
            else "context bit-flip probability q")
    ax.set_xlabel(name)
    ax.set_ylabel("risk E[(ŷ − y_q)²] (clean query)")
    where = f"N = {n}" + (f", {other_sym} = {other_value:g}" if other_value else "")
    k = int(ds.attrs.get("k", 0))
    power = "".join("⁰¹²³⁴⁵⁶⁷⁸⁹"[int(c)] for c in str(k)) if k else "^k"
    mu_text = "μ = 1 − 2p" if kind == "label" else f"μ = (1 − 2q){power}"
    if other_value:
        mu_text = "μ = (1 − 2p)(1 − 2q)^k"
    ax.set_title(f"Risk of clean-trained m-head models vs {sym} ({where}; Theorem D: "
                 f"R_m(μ), {mu_text})", fontsize=9.5)

    heads_all = ds["heads_all"].values
    trained = np.concatenate([[0], heads])
    pred = ds["best_heads"].isel(n_context=0).isel({other: 0}).values
    agree_with = pred
    if set(trained) != set(heads_all):  # compare with the best of what was trained
        agree_with = trained[np.argmin(theory[trained], axis=0)]
    F.best_scale_panel(ax_best, dense=fine, theory_lines=lines, all_scales=heads_all,
                       trained=trained, grid=grid, pred=pred,
                       pred_label="best_heads (stored m*)", sim_best=best_heads_sim(ds, dim),
                       agree_with=agree_with,
                       labels=("theory m* over m = 0..K", "theory over trained m ∪ {0}"),
                       xlabel=name, ylabel="best head count m*",
                       title=f"Best head count m*({sym})", legend_loc="lower left",
                       yticks=heads_all)
    return F.finish(fig, _footer(ds), out_dir, f"parity_risk_vs_{kind}_flip", formats)


def _excess_inset(ax, ds, fine, lines, grid, heads, colors, other):
    """Inset: R_m(μ) − min_m' R_m'(μ) where m* < K, so the crossings that set m* are visible."""
    heads_all = ds["heads_all"].values
    m_star = heads_all[np.argmin(lines, axis=0)]
    falling = np.flatnonzero(m_star < heads_all.max())
    if falling.size == 0 or grid.size < 2:
        return
    span = float(fine.max() - fine.min()) or 1.0
    lo = max(float(fine[falling[0]]) - 0.08 * span, float(fine.min()))
    sel = fine >= lo
    best = lines.min(axis=0)
    inset = ax.inset_axes([0.5, 0.05, 0.47, 0.34])
    inset.axhline(0.0, color="0.5", lw=0.6)
    at = grid >= lo
    best_grid = np.interp(grid, fine, best)
    for color, m in zip(colors, heads):
        inset.plot(fine[sel], lines[m][sel] - best[sel], color=color, lw=1.0)
        mean, se = _sim(ds, heads=m)
        mean = mean.isel({other: 0}).values
        inset.errorbar(grid[at], mean[at] - best_grid[at], yerr=se.isel({other: 0}).values[at],
                       fmt="o", ms=2.5, capsize=1, color=color, lw=0.6)
    inset.plot(fine[sel], lines[0][sel] - best[sel], color="0.55", ls="--", lw=0.8)
    inset.set_xlim(lo, float(fine.max()) + 0.02 * span)
    inset.set_ylim(-0.003, 0.03)
    inset.tick_params(labelsize=6)
    inset.set_title("zoom: risk − min_m R_m(μ) (0 = best m) where m* < K", fontsize=7)


# ----------------------------------------------------------------------------- training


def training_curves(ds, out_dir, formats):
    """|training loss − R_m| against the step, per m (every seed; first lr, init scale, N)."""
    plt = _plt()
    heads = ds["heads"].values
    colors = _colors(plt, len(heads))
    cfg = _config(ds).get("train", {})
    mode, protocol = cfg.get("mode", ""), cfg.get("protocol", "")
    loss = _first(ds, "loss").where(_ok(ds))
    steps = ds["step"].values

    def curves(k, m):
        target = float(ds["clean_risk"].isel(n_context=0).sel(heads_all=m))
        return [(f"m = {m}", np.maximum(np.abs(loss.sel(heads=m, seed=s).values - target), 1e-9),
                 None, dict(lw=0.9, alpha=0.7)) for s in ds.seed.values]

    fig, ax = F.training_curves(plt, steps=steps, scales=heads, colors=colors, curves=curves,
                                figsize=(8, 4.8))
    if mode == "population":
        resolution = float(np.finfo(np.float32).eps) * float(
            np.nanmax(ds["clean_risk"].isel(n_context=0).values))
        ax.axhline(resolution, color="0.5", ls=":", lw=1, label="float32 resolution of the loss")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("|training loss − R_m|")
    what = {"population": "exact population loss (5)",
            "monte_carlo": "Monte Carlo batch loss (noisy: floor ≈ its SE)"}.get(mode, "loss")
    extra = ("\nprogressive protocol: head h joins at step (h − 1)·steps/m, so the gap falls "
             "in m stages" if protocol == "progressive" else "")
    window = int(steps[1] - steps[0]) if steps.size > 1 else 1
    ax.set_title(f"Training loss vs the m-head optimum R_m (N = {_n(ds)})\n{what}; every seed; "
                 f"windows of {window} steps{extra}", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    return F.finish(fig, _footer(ds), out_dir, "parity_training_curves", formats)


def draw_all(ds, out_dir, formats=("png", "pdf")) -> list[Path]:
    """Draw every figure that the result's axes support; return the written paths."""
    return F.draw_all(ds, out_dir, formats, ((True, attention_mass), (True, readout)),
                      noise=(risk_vs_noise, {"label_flip": "label", "bit_flip": "bit"}),
                      training=training_curves)
