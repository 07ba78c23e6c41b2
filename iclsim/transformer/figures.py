"""Figures of setting 3, drawn only from a stored sweep result.

* ``transformer_risk_vs_label_noise`` — risk vs context label noise σ² per size (points:
  mean over usable seeds ± SE), the LSA ladder L_r(σ²) = L_r + σ² S_r (r = 0..d, grey lines
  behind), the Bayes floor and least squares; one panel per pretraining σ₀²;
* ``transformer_best_size`` — the best size vs σ² (argmin over {0: ŷ = 0} ∪ sizes, the
  engine's ``best_scale`` on the usable runs, marker size = bootstrap support) beside the
  LSA's best rank r*(σ²);
* ``transformer_rung_and_sensitivity`` — per size against parameter count: the clean rung ρ
  (where the clean risk sits on the LSA ladder) with its interval, and the local noise
  sensitivity dR/dσ² on the first σ² band with its interval over the grey S_r;
* ``transformer_training_curves`` — training loss vs step per size (dashed: runs not
  converged), with L_d and the trivial risk tr Λ;
* ``transformer_risk_vs_input_noise`` (only when ``eval.input_noise`` has several levels) —
  risk vs context input noise σ_x² per size at the first σ², over the LSA ladder
  R_r(σ², σ_x²) (Theorem B(b)), with least squares (no Bayes floor: not closed-form there).

The label-noise figures are drawn at the first σ_x² (0 by default).

Runs are shown at the first N (and σ₀², except in the first figure), each size at its tuned
learning rate and init scale; only converged runs enter the points
(:mod:`iclsim.transformer.analysis`).
"""

from __future__ import annotations

import numpy as np

from iclsim.plotting import add_footer, pyplot, save_figure, scale_colors
from iclsim.transformer.analysis import (
    best_size, first_cell, input_text, size_data, size_label, size_statistics, size_table,
)

__all__ = ["draw_all"]


def _footer(ds, fixed, skip=()) -> str:
    from iclsim.plotting import result_config

    cfg = result_config(ds)
    train, ev = cfg.get("train", {}), cfg.get("eval", {})
    if not input_text(ds):
        skip = (*skip, "input_noise")
    bits = [f"sweep {cfg.get('name', '?')} {ds.attrs.get('config_hash', '')}",
            f"training: {train.get('steps', '?')} steps × {train.get('batch', '?')} fresh prompts",
            "\n" + ", ".join(f"{k}={v:g}" for k, v in fixed.items() if k not in skip),
            f"evaluation: {ev.get('n_prompts', '?')} MC prompts per point",
            f"JAX dtype {ds.attrs.get('dtype', '?')}"]
    return "; ".join(bits).replace("; \n", "\n")


def _fixed(ds):
    """The first N, σ₀² and σ_x² (learning rate and init scale: each size tuned)."""
    cell, fixed = first_cell(ds)
    return cell, {k: v for k, v in fixed.items() if k not in ("learning_rate", "init_scale")}


def _n0(da):
    """At the first N and the first context input noise σ_x² (where those axes exist)."""
    return da.isel({k: 0 for k in ("n_context", "input_noise") if k in da.dims})


def risk_vs_noise(ds, out_dir, formats):
    """One panel per pretraining σ₀²: the sizes' curves over the ladder L_r(σ²) of that σ₀²
    (affine in σ², so the straight segments between the stored grid points are exact)."""
    plt = pyplot()
    _, fixed = _fixed(ds)
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
                        capsize=2, label=f"size {size_label(ds, size)}, "
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
    plt = pyplot()
    _, fixed = _fixed(ds)
    best, support = best_size(ds, **fixed)
    s2 = ds["label_noise"].values
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9, 4), layout="constrained")
    ax.plot(s2, best, color="C3", lw=1, zorder=1)
    ax.scatter(s2, best, s=20 + 80 * support, color="C3", zorder=2,
               label="best size (marker ∝ bootstrap support)")
    sizes = [0, *ds["size"].values]
    ax.set_yticks(sizes, ["0 (ŷ = 0)", *[size_label(ds, s) for s in ds["size"].values]],
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


def rung_figure(ds, out_dir, formats):
    """Clean rung ρ and local noise sensitivity (first σ² band) per size vs parameter count,
    with their intervals; grey: the rungs 0..d and the LSA slopes S_r."""
    plt = pyplot()
    _, fixed = _fixed(ds)
    st = size_statistics(ds, **fixed)
    counts = np.array([int(ds["param_count"].sel(size=sd.size)) for sd in st["datas"]])
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
    colors = scale_colors(plt, len(st["datas"]))
    d = ds["rank_all"].size - 1
    for r in range(d + 1):
        ax.axhline(r, color="0.85", lw=0.8, zorder=0)
        bx.axhline(float(st["slope_th"][r]), color="0.8", lw=0.8, zorder=0)
        bx.annotate(f"S_{r}", (counts.max(), float(st["slope_th"][r])), fontsize=6,
                    color="0.5", xytext=(4, 0), textcoords="offset points", va="center")
    for a, sd in enumerate(st["datas"]):
        r = st["rungs"][a]
        if np.isfinite(r["rung"]):
            ax.errorbar([counts[a]], [r["rung"]], [[r["rung"] - r["rung_lo"]],
                                                   [r["rung_hi"] - r["rung"]]],
                        color=colors[a], fmt="s", ms=7, capsize=3, mec="k",
                        label=f"size {size_label(ds, sd.size)} (n={r['n']})")
        if st["slopes"]:
            sl = st["slopes"][a]
            if np.isfinite(sl["slope"][0]):
                bx.errorbar([counts[a]], [sl["slope"][0]], [[sl["slope"][0] - sl["lo"][0]],
                                                            [sl["hi"][0] - sl["slope"][0]]],
                            color=colors[a], fmt="s", ms=7, capsize=3, mec="k")
    lim = (counts.min() / 1.5, counts.max() * 1.5)
    s2 = ds["label_noise"].values
    pct = f"{100 * st['level']:g} %"
    for x in (ax, bx):
        x.set_xscale("log")
        x.set_xlim(*lim)
        x.set_xlabel("parameters")
    ax.set_ylim(-0.5, d + 0.5)
    ax.set_ylabel("clean rung ρ (L_⌊ρ⌋ ≥ clean risk ≥ L_⌊ρ⌋+1)")
    ax.set_title(f"Where the clean risk sits on the LSA ladder ({pct} interval)")
    ax.legend(fontsize=7)
    band = f"[{s2[0]:g}, {s2[min(1, s2.size - 1)]:g}]"
    bx.set_ylabel(f"local slope dR/dσ² on σ² ∈ {band}")
    bx.set_title(f"Low-noise sensitivity, paired ({pct} interval); grey: LSA S_r")
    add_footer(fig, _footer(ds, fixed), height=0.08)
    paths = save_figure(fig, out_dir, "transformer_rung_and_sensitivity", formats)
    plt.close(fig)
    return paths


def training_curves(ds, out_dir, formats):
    plt = pyplot()
    _, fixed = _fixed(ds)
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    colors = scale_colors(plt, ds["size"].size)
    steps = ds["step"].values
    for a, sd in enumerate(size_data(ds, **fixed)):
        c = ds.sel(**fixed, size=sd.size)
        c = c.sel(**{k: v for k, v in (("learning_rate", sd.learning_rate),
                                       ("init_scale", sd.init_scale)) if k in c.dims})
        loss = c["loss"].transpose("seed", "step").values
        conv = (c["verdict"] == "converged").transpose("seed").values
        for i, row in enumerate(loss):
            ax.plot(steps, row, color=colors[a], lw=0.8, alpha=0.7, ls="-" if conv[i] else "--",
                    label=f"{size_label(ds, sd.size)}, lr {sd.learning_rate:g}" if i == 0
                    else None)
    ax.axhline(float(ds["trivial_risk"]), color="k", ls=":", lw=0.8, label="tr Λ (ŷ = 0)")
    lad = _n0(ds["ladder_risk"]).isel(train_label_noise=0, label_noise=0)
    ax.axhline(float(lad.isel(rank_all=-1)), color="k", ls="--", lw=0.8,
               label=f"L_d (σ²={float(ds['label_noise'][0]):g})")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (dashed: not converged)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    add_footer(fig, _footer(ds, fixed), height=0.06)
    paths = save_figure(fig, out_dir, "transformer_training_curves", formats)
    plt.close(fig)
    return paths


def risk_vs_input_noise(ds, out_dir, formats):
    """Risk vs σ_x² per size at the first σ² and σ₀², over the LSA ladder R_r(σ², σ_x²) (affine
    in σ_x², so straight segments between the stored grid points are exact)."""
    plt = pyplot()
    _, fixed = _fixed(ds)
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
                    label=f"size {size_label(ds, size)}")
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
    best size per noise level, the clean rung and local sensitivity, the training curves, and risk vs input
    noise when the sweep has more than one input-noise level (``docs/transformer.md``).

    Returns
    -------
    list of pathlib.Path
        The files written under ``out_dir``, one per figure and format in ``formats``.
    """
    paths = []
    draws = [risk_vs_noise, best_size_figure, rung_figure, training_curves]
    if "input_noise" in ds.dims and ds["input_noise"].size > 1:
        draws.append(risk_vs_input_noise)
    for draw in draws:
        paths += draw(ds, out_dir, formats)
    return paths
