"""Both settings side by side: model scale vs sensitivity to noise in the context.

The paper's claim, in the project's two exact settings: a larger model uses more
of the evaluation context's features, which lowers its clean risk but makes it
more sensitive to noise, so the best model scale falls as the context gets
noisier.

* Setting 1 (Theorem B(a), ``docs/theory/linear.md``): rank-r linear self-attention;
  with context label noise σ² the rank-r optimum has risk R_r(σ²) = L_r + σ² S_r,
  S_r increasing in r; the best rank r*(σ²) = #{i : τ_i > σ²} falls with σ².
* Setting 2 (Theorem D, ``docs/theory/parity.md``): m-head attention on sparse parity;
  with label-flip probability p the context signal is μ = 1 − 2p and the m-head
  optimum has risk R_m(μ); the best head count m*(μ) falls as μ falls.

* Optionally, setting 3 (``docs/transformer.md``): trained softmax transformers of several
  sizes on setting 1's data, risk vs σ² per size over the LSA ladder L_r(σ²), and the best
  size vs σ² beside the LSA's r*(σ²); and real language models (``docs/llm.md``).

:func:`draw` draws them from any number of stored sweep results (no training), one column
per result placed by its setting (linear, parity, transformer, llm, left to right):
``iclsim compare RESULT [RESULT ...] [--out DIR]``; :func:`scale_vs_noise` is the same figure
from named results.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from iclsim.engine import analysis as A
from iclsim.engine.setting import best_scale, tuning_word
from iclsim.plotting import add_footer, result_config, save_figure
from iclsim.plotting import pyplot as _plt

__all__ = ["scale_vs_noise", "draw", "place", "ORDER"]




def _first(da, dims):
    return A.first_cell(da, None, dims)


def _linear_panels(ds):
    """Theory (r = 0..d on the σ² grid), simulation mean ± error per trained rank, r* (theory,
    sim).

    Runs at the first N, learning rate, init scale and σ₀²; context input noise at
    its first value.  The oracle is affine in σ², so straight lines between the
    grid points are exact.
    """
    fixed = ("n_context", "learning_rate", "init_scale", "train_label_noise", "input_noise")
    grid = ds["label_noise"].values
    theory = _first(ds["oracle_risk"], fixed).transpose("rank_all", "label_noise").values
    ok = ~_first(ds["diverged"], fixed)
    mc_se = _first(ds["eval_se"], fixed)
    if ds.attrs.get("eval_method") == "exact":
        mc_se = None  # eval_risk is exact; eval_se is the Monte Carlo cross-check's
    mean, se = A.seed_mean(_first(ds["eval_risk"], fixed), mc_se, ok=ok, prompts="shared")
    mean = mean.transpose("rank", "label_noise").values
    se = se.transpose("rank", "label_noise").values
    scales = ds["rank"].values
    sim_best = best_scale(ds, **{d: ds[d].values[0] for d in ("n_context", "train_label_noise",
                                                              "input_noise")})
    return dict(grid=grid, fine=grid, lines=theory, scales=scales, mean=mean, se=se,
                sim_best=sim_best.transpose("label_noise").values,
                all_scales=ds["rank_all"].values)


def _parity_panels(ds):
    """Theory (m = 0..K on a fine p grid), simulation mean ± error per trained m (first
    q)."""
    fixed = ("n_context", "learning_rate", "init_scale", "bit_flip")
    grid = ds["label_flip"].values
    ok = ~_first(ds["diverged"], fixed)
    mean, se = A.seed_mean(_first(ds["eval_risk"], fixed), _first(ds["eval_se"], fixed), ok=ok,
                           prompts="shared")
    mean = mean.transpose("heads", "label_flip").values
    se = se.transpose("heads", "label_flip").values
    lines = _first(ds["theory_risk_label"], fixed).transpose("heads_all", "label_flip_fine")
    return dict(grid=grid, fine=ds["label_flip_fine"].values, lines=lines.values,
                grid_lines=_first(ds["optimal_risk"], fixed).transpose("heads_all",
                                                                       "label_flip").values,
                scales=ds["heads"].values, mean=mean, se=se,
                sim_best=best_scale(ds, n_context=ds["n_context"].values[0],
                                    bit_flip=ds["bit_flip"].values[0]).transpose(
                                        "label_flip").values,
                all_scales=ds["heads_all"].values)


def _risk_panel(ax, plt, panel, symbol, name):
    colors = plt.cm.viridis(np.linspace(0.0, 0.92, max(len(panel["scales"]), 1)))
    ax.plot(panel["fine"], panel["lines"][0], color="0.55", ls="--", lw=1,
            label=f"{symbol} = 0 (ŷ = 0)")
    for color, s in zip(colors, panel["scales"]):
        i = int(np.flatnonzero(panel["scales"] == s)[0])
        ax.plot(panel["fine"], panel["lines"][s], color=color, lw=1.3, label=f"{symbol} = {s}")
        ax.errorbar(panel["grid"], panel["mean"][i], yerr=panel["se"][i], fmt="o", ms=3.5,
                    capsize=1.5, color=color)
    ax.set_xlabel(name)
    ax.set_ylabel("risk E[(ŷ − y_q)²] (clean query)")
    ax.legend(fontsize=7, ncol=2, loc="upper left",
              title="lines: oracle; points: trained ± error", title_fontsize=7)


def _best_panel(ax, panel, fine_lines, symbol, name):
    dense_best = panel["all_scales"][np.argmin(fine_lines, axis=0)]
    ax.step(panel["dense"], dense_best, where="post", color="k", lw=1.2,
            label=f"theory {symbol}* (oracle)")
    sim = panel["sim_best"]
    grid_theory = panel["all_scales"][np.argmin(panel.get("grid_lines", panel["lines"]), axis=0)]
    ax.plot(panel["grid"], grid_theory, "s", mfc="none", mec="k", ms=8,
            label=f"{symbol}* at the evaluated levels")
    ax.plot(panel["grid"], sim, "o", color="C3", ms=4, label="trained models (argmin)")
    agree = int(np.sum(sim == grid_theory))
    ax.set_ylim(-0.5, panel["all_scales"].max() + 0.5)
    ax.set_yticks(panel["all_scales"])
    ax.grid(True, axis="y", lw=0.3)
    ax.set_xlabel(name)
    ax.set_ylabel(f"best scale {symbol}*")
    ax.legend(fontsize=7, loc="lower left")
    return agree, int(np.sum(np.isfinite(sim)))


def _llm_panels(top, bottom, plt, ds):
    """Real LMs: pooled accuracy vs p per model (top); the most accurate model per p (bottom)."""
    n = ds["n_params_model"].values
    order = np.argsort(n, kind="stable")
    models = [str(m) for m in ds["model"].values[order]]
    sel = dict(k=ds["k"].values[0], label_words=ds["label_words"].values[0],
               input_noise=ds["input_noise"].values[0])
    pre = "pooled_acc" if "pooled_acc_mean" in ds and ds.sizes["task"] > 1 else "acc"
    if pre == "acc":
        sel["task"] = ds["task"].values[0]
    p = ds["label_flip"].values
    colors = plt.cm.plasma(np.linspace(0.05, 0.8, max(len(models), 1)))
    means = []
    for color, model, size in zip(colors, models, n[order]):
        m = ds[f"{pre}_mean"].sel(model=model, **sel).transpose("label_flip").values
        lo = ds[f"{pre}_lo"].sel(model=model, **sel).transpose("label_flip").values
        hi = ds[f"{pre}_hi"].sel(model=model, **sel).transpose("label_flip").values
        means.append(m)
        label = f"{model} ({size / 1e6:.0f}M)" if size > 0 else model
        top.errorbar(p, m, yerr=[m - lo, hi - m], fmt="o-", ms=3.5, capsize=2, color=color,
                     label=label)
    top.axhline(0.5, color="0.5", ls="--", lw=0.8)
    top.set_ylim(-0.02, 1.02)
    top.set_xlabel("fraction of demonstration labels flipped p")
    top.set_ylabel("accuracy on clean queries")
    top.legend(fontsize=7, loc="lower left")
    top.set_title(f"Real LMs (sentiment, k = {int(sel['k'])} demonstrations)\nthe paper: larger "
                  "models follow flipped labels more", fontsize=9.5)
    table = np.array(means)
    best = np.where(np.isfinite(table).any(axis=0),
                    np.argmax(np.nan_to_num(table, nan=-1.0), axis=0), -1)
    bottom.plot(p[best >= 0], best[best >= 0], "o-", color="C3", ms=5,
                label="most accurate model (mean)")
    bottom.set_yticks(range(len(models)), models, fontsize=7)
    bottom.set_ylim(-0.5, len(models) - 0.5)
    bottom.set_xlabel("fraction of demonstration labels flipped p")
    bottom.set_ylabel("best model (by size)")
    bottom.grid(True, axis="y", lw=0.3)
    bottom.legend(fontsize=7, loc="lower left")
    bottom.set_title("Most accurate model vs p (models ordered by parameter count)", fontsize=9)


def _transformer_panels(top, bottom, plt, ds):
    """Trained transformers: risk vs σ² per size (mean over usable seeds ± SE) over the grey LSA
    ladder L_r(σ²) and the Bayes floor (top); the best size vs σ² beside the LSA's r*(σ²) on a
    second axis (bottom).  At the first value of every other axis (N, learning rate, init
    scale, σ₀², context input noise σ_x²), as in :mod:`iclsim.transformer.figures`; trivial and
    diverged runs are left out (:func:`iclsim.transformer.sweep.usable`)."""
    from iclsim.transformer.sweep import _first, best_size, size_table

    _, fixed = _first(ds)
    tab = size_table(ds, **fixed)
    best, support = best_size(ds, **fixed)
    cell = ds.sel(**fixed)
    s2 = ds["label_noise"].values
    ladder = cell["ladder_risk"].transpose("label_noise", "rank_all").values
    ranks = ds["rank_all"].values
    for r in ranks:
        top.plot(s2, ladder[:, r], color="0.78", lw=0.9, zorder=0,
                 label="LSA ladder L_r(σ²), r = 0..d" if r == 0 else None)
        top.annotate(f"r={int(r)}", (s2[-1], float(ladder[-1, r])), fontsize=6, color="0.5",
                     xytext=(2, 0), textcoords="offset points", va="center")
    bayes = cell["bayes_risk"].transpose("label_noise").values
    if np.isfinite(bayes).any():
        top.plot(s2, bayes, color="k", ls="--", lw=1, label="Bayes floor")
    sizes = ds["size"].values
    colors = plt.cm.cividis(np.linspace(0.0, 0.85, max(len(sizes), 1)))
    for a, size in enumerate(sizes):
        c = ds.sel(size=size)
        label = (f"size {int(size)}: h={int(c['size_heads'])}, d={int(c['size_width'])}, "
                 f"L={int(c['size_layers'])} (n={int(tab['n_ok'][a])})")
        top.errorbar(s2, tab["risk"][a], yerr=tab["se"][a], fmt="o-", ms=3.5, lw=1, capsize=1.5,
                     color=color_of(colors, a), label=label)
    top.set_xlabel("context label-noise variance σ²")
    top.set_ylabel("risk E[(ŷ − y_q)²] (clean query)")
    top.legend(fontsize=7, loc="upper left", title="points: mean over usable seeds ± SE",
               title_fontsize=7)
    n = int(ds["n_context"].values[0])
    top.set_title(f"Setting 3: trained softmax transformers (d = {ranks.max()}, N = {n})\n"
                  "over the LSA ladder (grey): do larger sizes lose more with noise?",
                  fontsize=9.5)
    ok = np.isfinite(best)
    bottom.plot(s2[ok], best[ok], "o-", color="C3", ms=5, label="best size (trained, argmin)")
    bottom.set_yticks([0, *sizes])
    bottom.set_ylim(-0.5, sizes.max() + 0.5)
    bottom.set_ylabel("best size (0: ŷ = 0)", color="C3")
    bottom.set_xlabel("context label-noise variance σ²")
    bottom.grid(True, axis="y", lw=0.3)
    twin = bottom.twinx()
    r_star = cell["best_rank"].transpose("label_noise").values
    twin.step(s2, r_star, where="post", color="k", lw=1.2, label="LSA r*(σ²) (oracle)")
    twin.set_ylim(-0.5, ranks.max() + 0.5)
    twin.set_ylabel("LSA best rank r*", color="k")
    handles = bottom.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    bottom.legend(handles[0] + more[0], handles[1] + more[1], fontsize=7, loc="lower left")
    mean_support = float(np.mean(support[ok])) if ok.any() else float("nan")
    bottom.set_title(f"Best transformer size vs σ² beside the LSA's r*(σ²) (mean bootstrap "
                     f"support {mean_support:.2f})", fontsize=9)
    return best, r_star


def color_of(colors, a):
    return colors[a % len(colors)]


def _name(ds):
    cfg = result_config(ds)
    return f"{cfg.get('name', '?')} {ds.attrs.get('config_hash', '')}".strip()


#: Where each setting's column goes (left to right), its noise axis and a preset that has it.
ORDER = ("linear", "parity", "transformer", "llm")
NOISE_AXIS = {"linear": "label_noise", "parity": "label_flip", "transformer": "label_noise",
              "llm": "label_flip"}
PRESETS = {"linear": "sweeps/linear_label_noise.toml", "parity": "sweeps/parity_label_flip.toml",
           "transformer": "sweeps/transformer_label_noise.toml", "llm": "sweeps/llm_quick.toml"}
_LIN_NAME = "context label-noise variance σ²"
_PAR_NAME = "context label-flip probability p"


def place(results) -> dict:
    """``{setting: result}`` in column order (:data:`ORDER`) for any number of results.

    Raises ``ValueError`` (one line) for a result of no comparable setting, two results of
    one setting, or a result with fewer than 2 evaluation noise levels.
    """
    placed = {}
    for ds in results:
        setting = ds.attrs.get("setting", "?")
        if setting not in NOISE_AXIS:
            raise ValueError(f"a {setting} result has no column; compare takes results of "
                             + ", ".join(ORDER))
        if setting in placed:
            raise ValueError(f"two {setting} results: give one result per setting")
        dim = NOISE_AXIS[setting]
        if dim not in ds.dims or ds.sizes[dim] < 2:
            raise ValueError(f"{setting} result: needs at least 2 evaluation {dim} values "
                             f"(eval.{dim}), e.g. from {PRESETS[setting]}")
        placed[setting] = ds
    if not placed:
        raise ValueError("compare needs at least one result")
    return {name: placed[name] for name in ORDER if name in placed}


def _linear_column(top, bottom, plt, ds) -> str:
    lin = _linear_panels(ds)
    _risk_panel(top, plt, lin, "r", _LIN_NAME)
    top.set_title(f"Setting 1: in-context linear regression, rank-r LSA (d = "
                  f"{lin['all_scales'].max()}, N = {int(ds['n_context'].values[0])})\n"
                  "Theorem B(a): R_r(σ²) = L_r + σ² S_r, slope S_r grows with r", fontsize=9.5)
    # Best scale: the linear oracle is affine in σ², so interpolation is exact on a dense grid.
    lin["dense"] = np.linspace(float(lin["grid"].min()), float(lin["grid"].max()), 2001)
    dense = np.array([np.interp(lin["dense"], lin["grid"], row) for row in lin["lines"]])
    agree, count = _best_panel(bottom, lin, dense, "r", _LIN_NAME)
    bottom.set_title(f"Best rank r*(σ²) = #{{i : τ_i > σ²}} falls with noise "
                     f"(trained = theory at {agree}/{count} levels)", fontsize=9)
    return _name(ds)


def _parity_column(top, bottom, plt, ds) -> str:
    par = _parity_panels(ds)
    _risk_panel(top, plt, par, "m", _PAR_NAME)
    top.set_title(f"Setting 2: in-context sparse parity, m attention heads (K = "
                  f"{par['all_scales'].max()}, N = {int(ds['n_context'].values[0])})\n"
                  "Theorem D: R_m(μ), μ = 1 − 2p; more heads, more sensitive to flips",
                  fontsize=9.5)
    par["dense"] = par["fine"]
    agree, count = _best_panel(bottom, par, par["lines"], "m", _PAR_NAME)
    bottom.set_title(f"Best head count m*(p) falls with noise (trained = theory at "
                     f"{agree}/{count} levels)", fontsize=9)
    return _name(ds)


def _transformer_column(top, bottom, plt, ds) -> str:
    _transformer_panels(top, bottom, plt, ds)
    return f"{_name(ds)} (trivial and diverged runs left out; SE = √(seed var/n + MC SE²))"


def _llm_column(top, bottom, plt, ds) -> str:
    _llm_panels(top, bottom, plt, ds)
    return (f"{_name(ds)} (accuracy pooled over tasks, "
            f"{100 * float(ds.attrs.get('confidence', 0.95)):g} % t intervals over seeds)")


_COLUMNS = {"linear": _linear_column, "parity": _parity_column,
            "transformer": _transformer_column, "llm": _llm_column}


def draw(results, out_dir, formats=("png", "pdf")) -> list[Path]:
    """Draw ``scale_vs_noise.<fmt>`` from any number of stored results, one column per result
    placed by its setting (:func:`place`: linear, parity, transformer, llm, left to right).

    Each column is what :func:`scale_vs_noise` describes for its setting: risk (accuracy for
    language models) vs the context noise per model scale on top, the best scale vs the
    noise below.
    """
    placed = place(results)
    plt = _plt()
    ncol = len(placed)
    fig, axes = plt.subplots(2, ncol, figsize=(6 * ncol, 8), layout="constrained",
                             gridspec_kw=dict(height_ratios=(1.6, 1.0)), squeeze=False)
    ordinal = {1: [""], 2: ["left", "right"], 3: ["left", "middle", "right"],
               4: ["first column", "second", "third", "fourth"]}[ncol]
    parts = []
    for col, (setting, ds) in enumerate(placed.items()):
        text = _COLUMNS[setting](axes[0, col], axes[1, col], plt, ds)
        parts.append(f"{ordinal[col]}: {text}" if ordinal[col] else text)
    fig.suptitle("Scale vs noise sensitivity: larger models use more features, gain on clean "
                 "prompts and lose more when the context is noisy, so the best scale falls as "
                 "noise grows", fontsize=10.5)
    add_footer(fig, "; ".join(parts) + "; trained points: mean over non-diverged seeds at the "
               "first value of every other axis; error bars ± the error of the seed-mean (seed "
               "variance and Monte Carlo error combined); simulated best "
               f"scale: {tuning_word('best')}", height=0.025)
    paths = save_figure(fig, out_dir, "scale_vs_noise", formats)
    plt.close(fig)
    return paths


def scale_vs_noise(linear_ds, parity_ds, out_dir, formats=("png", "pdf"), llm_ds=None,
                   transformer_ds=None) -> list[Path]:
    """Draw ``scale_vs_noise.<fmt>``: risk vs context label noise per model scale, both settings.

    Left column, setting 1: risk R_r(σ²) = L_r + σ² S_r per rank r (Theorem B(a))
    and the best rank r*(σ²).  Right column, setting 2: risk R_m(μ), μ = 1 − 2p,
    per head count m (Theorem D) and the best head count m*(p).  Theory from the
    oracle values stored in each result, simulation from its trained runs (mean
    over non-diverged seeds at the first value of every other axis; the best scale
    from :func:`iclsim.engine.setting.best_scale`: each scale at its best-tuned learning rate
    and init scale, seeds averaged; the footer says so).

    With ``llm_ds`` (a result of ``setting = "llm"``) a third column shows real language
    models: accuracy on clean queries vs the fraction p of flipped demonstration labels per
    model (pooled over tasks, t intervals over seeds), and the most accurate model at each p
    (models ordered by parameter count): what real models do beside the theory's law.

    With ``transformer_ds`` (a result of ``setting = "transformer"``) a column before the LLM
    one shows trained softmax transformers: risk vs σ² per size (mean over usable seeds ± SE)
    over the LSA ladder L_r(σ²) stored in the result, and the best size vs σ² beside the LSA's
    r*(σ²) (:func:`iclsim.transformer.sweep.best_size`).

    Any subset of the four, in any order: :func:`draw`.

    Raises ``ValueError`` (naming the argument) when a result is of the wrong
    setting or has a single evaluation noise level.
    """
    named = {"linear": linear_ds, "parity": parity_ds, "transformer": transformer_ds,
             "llm": llm_ds}
    for setting, ds in named.items():
        got = None if ds is None else ds.attrs.get("setting", "?")
        if ds is not None and got != setting:
            raise ValueError(f"{setting} result: expected a {setting} sweep result, got a {got} one")
    return draw([ds for ds in named.values() if ds is not None], out_dir, formats)
