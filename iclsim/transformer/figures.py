"""Figures of setting 3, drawn only from a stored sweep result.

* ``transformer_risk_vs_label_noise`` — risk vs context label noise σ² per size (points:
  mean over usable seeds ± SE), the LSA ladder L_r(σ²) = L_r + σ² S_r (r = 0..d, grey lines
  behind), the Bayes floor and least squares; one panel per pretraining σ₀²;
* ``transformer_best_size`` — the best size vs σ² (argmin over {0: ŷ = 0} ∪ sizes, the
  engine's ``best_scale`` on the usable runs, marker size = bootstrap support) beside the
  LSA's best rank r*(σ²);
* ``transformer_effective_rank`` — effective rank (with its interval) and the fitted noise
  slope S against parameter count, per run and per size, with S_r of the ladder;
* ``transformer_training_curves`` — training loss vs step per size, with L_d and the
  trivial risk tr Λ;
* ``transformer_risk_vs_input_noise`` (only when ``eval.input_noise`` has several levels) —
  risk vs context input noise σ_x² per size at the first σ², over the LSA ladder
  R_r(σ², σ_x²) (Theorem B(b)), with least squares (no Bayes floor: not closed-form there).

The label-noise figures are drawn at the first σ_x² (0 by default).

Runs are shown at the first value of N, learning rate, init scale (and σ₀², except in the
first figure); trivial and
diverged runs are left out (:func:`iclsim.transformer.sweep.usable`).
"""

from __future__ import annotations

import numpy as np

from iclsim.plotting import add_footer, pyplot, save_figure, scale_colors

__all__ = ["draw_all"]


def _footer(ds, fixed, skip=()) -> str:
    from iclsim.plotting import result_config

    cfg = result_config(ds)
    train, ev = cfg.get("train", {}), cfg.get("eval", {})
    from iclsim.transformer.sweep import _input_text

    if not _input_text(ds):
        skip = (*skip, "input_noise")
    bits = [f"sweep {cfg.get('name', '?')} {ds.attrs.get('config_hash', '')}",
            f"training: {train.get('steps', '?')} steps × {train.get('batch', '?')} fresh prompts",
            "\n" + ", ".join(f"{k}={v:g}" for k, v in fixed.items() if k not in skip),
            f"evaluation: {ev.get('n_prompts', '?')} MC prompts per point",
            f"JAX dtype {ds.attrs.get('dtype', '?')}"]
    return "; ".join(bits).replace("; \n", "\n")


def _n0(da):
    """At the first N and the first context input noise σ_x² (where those axes exist)."""
    return da.isel({k: 0 for k in ("n_context", "input_noise") if k in da.dims})


def risk_vs_noise(ds, out_dir, formats):
    """One panel per pretraining σ₀²: the sizes' curves over the ladder L_r(σ²) of that σ₀²
    (affine in σ², so the straight segments between the stored grid points are exact)."""
    from iclsim.transformer.sweep import _first, _size_label, size_table

    plt = pyplot()
    _, fixed = _first(ds)
    s0s = ds["train_label_noise"].values
    s2 = ds["label_noise"].values
    fig, axes = plt.subplots(1, s0s.size, figsize=(7.5 * s0s.size, 5.2), layout="constrained",
                             squeeze=False)
    colors = scale_colors(plt, ds["size"].size)
    top = float(ds["trivial_risk"])
    for ax, s0 in zip(axes[0], s0s):
        sel = {**fixed, "train_label_noise": s0}
        tab = size_table(ds, **sel)
        ladder = _n0(ds["ladder_risk"]).sel(train_label_noise=s0)
        for r in ds["rank_all"].values:
            curve = ladder.sel(rank_all=r).values
            ax.plot(s2, curve, color="0.75", lw=0.9, zorder=0)
            ax.annotate(f"r={int(r)}", (s2[-1], float(curve[-1])), fontsize=6, color="0.5",
                        xytext=(2, 0), textcoords="offset points", va="center")
        ax.errorbar(s2, _n0(ds["bayes_risk"]).values, _n0(ds["bayes_se"]).values, color="k",
                    ls="--", lw=1, label="Bayes floor (posterior mean)")
        ax.errorbar(s2, _n0(ds["ols_risk"]).values, _n0(ds["ols_se"]).values, color="k",
                    ls=":", lw=1, label="least squares")
        for a, size in enumerate(ds["size"].values):
            ax.errorbar(s2, tab["risk"][a], tab["se"][a], color=colors[a], marker="o", ms=4,
                        capsize=2, label=f"size {_size_label(ds, size)}, "
                        f"{int(ds['param_count'].sel(size=size))} params")
        finite = tab["risk"][np.isfinite(tab["risk"])]
        ax.set_ylim(0, max(top, float(finite.max()) if finite.size else top) * 1.15)
        ax.set_xlabel("context label noise σ² (evaluation)")
        ax.set_ylabel("risk E[(ŷ − y_q)²]")
        ax.set_title("Trained transformers vs the LSA ladder L_r(σ²) (grey)"
                     + (f"\npretrained at σ₀² = {s0:g}" if s0s.size > 1 else ""))
        ax.legend(fontsize=7, loc="upper left")
    add_footer(fig, _footer(ds, fixed, skip=("train_label_noise",)), height=0.06)
    paths = save_figure(fig, out_dir, "transformer_risk_vs_label_noise", formats)
    plt.close(fig)
    return paths


def best_size_figure(ds, out_dir, formats):
    from iclsim.transformer.sweep import _first, _size_label, best_size

    plt = pyplot()
    _, fixed = _first(ds)
    best, support = best_size(ds, **fixed)
    s2 = ds["label_noise"].values
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9, 4), layout="constrained")
    ax.plot(s2, best, color="C3", lw=1, zorder=1)
    ax.scatter(s2, best, s=20 + 80 * support, color="C3", zorder=2,
               label="best size (marker ∝ bootstrap support)")
    sizes = [0, *ds["size"].values]
    ax.set_yticks(sizes, ["0 (ŷ = 0)", *[_size_label(ds, s) for s in ds["size"].values]],
                  fontsize=7)
    ax.set_xlabel("context label noise σ²")
    ax.set_title("Trained transformers: best size")
    ax.legend(fontsize=7)
    r_star = _n0(ds["best_rank"]).values
    bx.step(s2, r_star, where="post", color="k")
    bx.plot(s2, r_star, "ko", ms=4)
    bx.set_xlabel("context label noise σ²")
    bx.set_ylabel("r*")
    bx.set_title("LSA theory: best rank r*(σ²)")
    add_footer(fig, _footer(ds, fixed), height=0.08)
    paths = save_figure(fig, out_dir, "transformer_best_size", formats)
    plt.close(fig)
    return paths


def effective_rank_figure(ds, out_dir, formats):
    from iclsim.transformer.sweep import _first, size_table

    plt = pyplot()
    cell, fixed = _first(ds)
    tab = size_table(ds, **fixed)
    ok = ~(cell["diverged"] | (cell["verdict"] == "trivial"))
    counts = ds["param_count"].values
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
    colors = scale_colors(plt, ds["size"].size)
    for a, size in enumerate(ds["size"].values):
        c = cell.sel(size=size)
        good = ok.sel(size=size).values
        x = np.full(good.sum(), counts[a]) * (1 + 0.03 * (np.arange(good.sum()) - good.sum() / 2))
        ax.scatter(x, c["effective_rank"].values[good], color=colors[a], s=12, alpha=0.6)
        bx.errorbar(x, c["noise_slope"].values[good], c["noise_slope_se"].values[good],
                    color=colors[a], fmt="o", ms=3, alpha=0.6)
        r, lo, hi = tab["eff"][a]
        if r >= 0:
            ax.errorbar([counts[a]], [r], [[r - lo], [hi - r]], color=colors[a], fmt="s", ms=7,
                        capsize=3, mec="k")
            bx.errorbar([counts[a]], [tab["slope"][a]], [tab["slope_se"][a]], color=colors[a],
                        fmt="s", ms=7, capsize=3, mec="k")
    d = ds["rank_all"].size - 1
    lim = (counts.min() / 1.5, counts.max() * 1.5)
    ax.set_xscale("log")
    ax.set_xlim(*lim)
    ax.set_ylim(-0.5, d + 0.5)
    ax.set_xlabel("parameters")
    ax.set_ylabel("effective rank (fit to L_r(σ²))")
    ax.set_title("Effective rank vs parameter count\n(dots: runs; squares: size mean, interval)")
    slope = ds["ladder_slope"]
    slope = _n0(slope).isel(train_label_noise=0) if "train_label_noise" in slope.dims else slope
    for r in range(d + 1):
        bx.axhline(float(slope.sel(rank_all=r)), color="0.8", lw=0.8, zorder=0)
        bx.annotate(f"S_{r}", (counts.max(), float(slope.sel(rank_all=r))), fontsize=6,
                    color="0.5", xytext=(4, 0), textcoords="offset points", va="center")
    bx.set_xscale("log")
    bx.set_xlim(*lim)
    bx.set_xlabel("parameters")
    bx.set_ylabel("fitted noise slope S (risk ≈ a + S σ²)")
    bx.set_title("Noise slope vs parameter count (grey: LSA S_r)")
    add_footer(fig, _footer(ds, fixed), height=0.08)
    paths = save_figure(fig, out_dir, "transformer_effective_rank", formats)
    plt.close(fig)
    return paths


def training_curves(ds, out_dir, formats):
    from iclsim.transformer.sweep import _first, _size_label

    plt = pyplot()
    cell, fixed = _first(ds)
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    colors = scale_colors(plt, ds["size"].size)
    steps = ds["step"].values
    for a, size in enumerate(ds["size"].values):
        loss = cell["loss"].sel(size=size).values
        for i, row in enumerate(loss):
            ax.plot(steps, row, color=colors[a], lw=0.8, alpha=0.7,
                    label=_size_label(ds, size) if i == 0 else None)
    ax.axhline(float(ds["trivial_risk"]), color="k", ls=":", lw=0.8, label="tr Λ (ŷ = 0)")
    lad = _n0(ds["ladder_risk"]).isel(train_label_noise=0, label_noise=0)
    ax.axhline(float(lad.isel(rank_all=-1)), color="k", ls="--", lw=0.8,
               label=f"L_d (σ²={float(ds['label_noise'][0]):g})")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    add_footer(fig, _footer(ds, fixed), height=0.06)
    paths = save_figure(fig, out_dir, "transformer_training_curves", formats)
    plt.close(fig)
    return paths


def risk_vs_input_noise(ds, out_dir, formats):
    """Risk vs σ_x² per size at the first σ² and σ₀², over the LSA ladder R_r(σ², σ_x²) (affine
    in σ_x², so straight segments between the stored grid points are exact)."""
    from iclsim.transformer.sweep import _first, _size_label, best_size, size_table

    plt = pyplot()
    _, fixed = _first(ds)
    base = {k: v for k, v in fixed.items() if k != "input_noise"}
    sx2 = ds["input_noise"].values
    v0 = float(ds["label_noise"].values[0])
    tabs = [size_table(ds, **base, input_noise=u) for u in sx2]
    risk = np.array([t["risk"][:, 0] for t in tabs]).T  # (sizes, σ_x²)
    se = np.array([t["se"][:, 0] for t in tabs]).T
    best, support = best_size(ds, axis="input_noise", **base, label_noise=v0)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained",
                                 gridspec_kw=dict(width_ratios=(1.6, 1.0)))
    colors = scale_colors(plt, ds["size"].size)
    c = ds.isel(n_context=0).sel(train_label_noise=base.get("train_label_noise",
                                                            ds["train_label_noise"].values[0]),
                                 label_noise=v0)
    for r in ds["rank_all"].values:
        curve = c["ladder_risk"].sel(rank_all=r).transpose("input_noise").values
        ax.plot(sx2, curve, color="0.75", lw=0.9, zorder=0)
        ax.annotate(f"r={int(r)}", (sx2[-1], float(curve[-1])), fontsize=6, color="0.5",
                    xytext=(2, 0), textcoords="offset points", va="center")
    ax.errorbar(sx2, c["ols_risk"].values, c["ols_se"].values, color="k", ls=":", lw=1,
                label="least squares")
    for a, size in enumerate(ds["size"].values):
        ax.errorbar(sx2, risk[a], se[a], color=colors[a], marker="o", ms=4, capsize=2,
                    label=f"size {_size_label(ds, size)}")
    top = float(ds["trivial_risk"])
    finite = risk[np.isfinite(risk)]
    ax.set_ylim(0, max(top, float(finite.max()) if finite.size else top) * 1.15)
    ax.set_xlabel("context input noise σ_x² (evaluation)")
    ax.set_ylabel("risk E[(ŷ − y_q)²]")
    ax.set_title(f"Trained transformers vs the LSA ladder R_r(σ², σ_x²) (grey), σ² = {v0:g}\n"
                 "no Bayes floor with input noise (posterior not closed-form)", fontsize=9.5)
    ax.legend(fontsize=7, loc="upper left")
    ax_b = bx.twinx()
    bx.plot(sx2, best, color="C3", lw=1, zorder=1)
    bx.scatter(sx2, best, s=20 + 80 * support, color="C3", zorder=2,
               label="best size (marker ∝ support)")
    bx.set_yticks([0, *ds["size"].values])
    bx.set_ylim(-0.5, ds["size"].values.max() + 0.5)
    bx.set_ylabel("best size (red)")
    r_star = c["best_rank"].transpose("input_noise").values
    ax_b.step(sx2, r_star, where="post", color="k", lw=1)
    ax_b.set_ylim(-0.5, ds["rank_all"].values.max() + 0.5)
    ax_b.set_ylabel("LSA r*(σ², σ_x²) (black)")
    bx.set_xlabel("context input noise σ_x²")
    bx.set_title("Best size vs σ_x², beside the LSA's best rank", fontsize=9.5)
    add_footer(fig, _footer(ds, base), height=0.08)
    paths = save_figure(fig, out_dir, "transformer_risk_vs_input_noise", formats)
    plt.close(fig)
    return paths


def draw_all(ds, out_dir, formats) -> list:
    """Every figure of a transformer sweep result ``ds``: risk vs label noise per size, the
    best size per noise level, the effective rank, the training curves, and risk vs input
    noise when the sweep has more than one input-noise level (``docs/transformer.md``).

    Returns
    -------
    list of pathlib.Path
        The files written under ``out_dir``, one per figure and format in ``formats``.
    """
    paths = []
    draws = [risk_vs_noise, best_size_figure, effective_rank_figure, training_curves]
    if "input_noise" in ds.dims and ds["input_noise"].size > 1:
        draws.append(risk_vs_input_noise)
    for draw in draws:
        paths += draw(ds, out_dir, formats)
    return paths
