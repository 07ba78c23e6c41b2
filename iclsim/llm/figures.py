"""Figures of an LLM sweep, drawn only from the stored result.

* ``llm_accuracy_vs_flip`` — accuracy vs the flipped fraction p per model (colour by
  parameter count), one panel per task and one pooled over tasks, with t intervals over
  seeds (Wilson on the pooled counts when the seeds do not vary, so an all-correct cell has
  a non-zero bar); chance (0.5) dashed.  At the first k, label words and input noise q.
* ``llm_sensitivity`` — the sensitivity (accuracy drop from p = 0 to
  p = ``eval.sensitivity_flip``) against parameter count: per task (small markers) and
  pooled (large, with paired t intervals over seeds).  One marker and colour per model kind
  (base / instruct / random / unknown); only models of the same kind are joined by a line.
  Whether the drop grows with size is the question the figure shows data for; the titles
  state what is plotted, not the answer.
* ``llm_accuracy_vs_input_noise`` — accuracy vs the corrupted fraction q at p = 0 per
  model, pooled over tasks (only when the sweep has several q).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from iclsim.engine import analysis as A
from iclsim.engine import figures as F
from iclsim.plotting import pyplot, result_config

__all__ = ["draw_all"]


def _colors(plt, n):
    return plt.cm.plasma(np.linspace(0.05, 0.8, max(n, 1)))


def _models(ds):
    n = ds["n_params_model"].values
    order = np.argsort(n, kind="stable")
    return [str(m) for m in ds["model"].values[order]], n[order]


#: marker and colour per model kind (``ds["kind"]``)
_KIND_STYLE = {"base": ("s", "C0"), "instruct": ("o", "C3"), "random": ("x", "C2"),
               "unknown": ("D", "C7")}


def _kinds(ds, models) -> list[str]:
    if "kind" not in ds:
        return ["unknown"] * len(models)
    kind = {str(m): str(k) for m, k in zip(ds["model"].values, ds["kind"].values)}
    return [kind.get(m, "unknown") for m in models]


def _label(model, n):
    from iclsim.llm.report import params_text

    return f"{model} ({params_text(int(n))})"


def _footer(ds, fixed) -> str:
    cfg = result_config(ds)
    ev = cfg.get("eval", {})
    level = 100 * float(ds.attrs.get("confidence", 0.95))
    return (f"sweep {cfg.get('name', '?')} {ds.attrs.get('config_hash', '')}; "
            + ", ".join(f"{k} = {v}" for k, v in fixed.items())
            + f"; {ds.sizes['seed']} seed(s) × {ev.get('n_queries', '?')} clean queries per "
            f"point; bars: {level:g} % Student t intervals over seeds (unit: a seed's mean "
            f"over its queries, averaged over tasks when pooled; paired per seed for drops), "
            f"Wilson on the pooled counts (Newcombe for drops) when the seeds do not vary")


def _first(ds):
    return A.first_coords(ds, ("k", "label_words", "input_noise"))


def accuracy_vs_flip(ds, out_dir, formats) -> list[Path]:
    plt = pyplot()
    sel = _first(ds)
    tasks = [str(t) for t in ds["task"].values]
    panels = tasks + (["pooled"] if len(tasks) > 1 else [])
    ncol = min(len(panels), 3)
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(max(4.3 * ncol, 7.5), 3.4 * nrow + 0.9),
                             squeeze=False, layout="constrained", sharey=True)
    models, sizes = _models(ds)
    colors = _colors(plt, len(models))
    p = ds["label_flip"].values
    step = 0.012 * (float(p.max() - p.min()) or 1.0)  # models side by side: bars stay readable
    for ax, panel in zip(axes.flat, panels):
        pre = "pooled_acc" if panel == "pooled" else "acc"
        for j, (color, model, n) in enumerate(zip(colors, models, sizes)):
            shift = step * (j - (len(models) - 1) / 2)
            cell = dict(model=model, **sel) if panel == "pooled" else dict(model=model,
                                                                           task=panel, **sel)
            m = ds[f"{pre}_mean"].sel(**cell).values
            lo, hi = ds[f"{pre}_lo"].sel(**cell).values, ds[f"{pre}_hi"].sel(**cell).values
            ax.errorbar(p + shift, m, yerr=[m - lo, hi - m], fmt="o-", ms=3.5, lw=1.2,
                        capsize=2, color=color, label=_label(model, n))
        ax.axhline(0.5, color="0.5", ls="--", lw=0.8)
        ax.set_title("pooled over tasks" if panel == "pooled" else f"task {panel}", fontsize=9.5)
        ax.set_xlabel("fraction of demonstration labels flipped p")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(True, lw=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy on clean queries")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7, loc="lower left")
    fig.suptitle("Real language models: accuracy on clean queries vs fraction p of flipped "
                 "demonstration labels\n(does the drop with p depend on model size?)",
                 fontsize=10)
    return F.finish(fig, _footer(ds, sel), out_dir, "llm_accuracy_vs_flip", formats)


def sensitivity(ds, out_dir, formats) -> list[Path]:
    if "sensitivity_mean" not in ds:
        return []
    plt = pyplot()
    sel = _first(ds)
    sf = ds.attrs.get("sensitivity_flip", 0.5)
    models, sizes = _models(ds)
    fig, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
    markers = "sD^vP*X"
    x = np.where(sizes > 0, sizes, np.nan).astype(float)
    n_tasks = ds.sizes["task"]
    for j, task in enumerate(ds["task"].values if n_tasks > 1 else ()):
        m = np.array([float(ds["sensitivity_mean"].sel(model=mm, task=task, **sel))
                      for mm in models])
        ax.plot(x * (1 + 0.03 * (j - (n_tasks - 1) / 2)), m, markers[j % len(markers)], ms=5,
                mfc="none", color="0.45", label=f"task {task}")
    pooled = "pooled_sensitivity" if ds.sizes["task"] > 1 else "sensitivity"
    cell = {} if ds.sizes["task"] > 1 else {"task": ds["task"].values[0]}
    m = np.array([float(ds[f"{pooled}_mean"].sel(model=mm, **cell, **sel)) for mm in models])
    lo = np.array([float(ds[f"{pooled}_lo"].sel(model=mm, **cell, **sel)) for mm in models])
    hi = np.array([float(ds[f"{pooled}_hi"].sel(model=mm, **cell, **sel)) for mm in models])
    kinds = _kinds(ds, models)
    what = "pooled over tasks" if ds.sizes["task"] > 1 else "mean"
    for i, kind in enumerate(dict.fromkeys(kinds)):  # one style per kind, sizes ascending
        idx = [j for j, k in enumerate(kinds) if k == kind]
        ax.errorbar(x[idx], m[idx], yerr=[m[idx] - lo[idx], hi[idx] - m[idx]],
                    fmt=_KIND_STYLE.get(kind, ("o", "C7"))[0] + "-",
                    color=_KIND_STYLE.get(kind, ("o", f"C{i}"))[1], ms=6, capsize=3,
                    label=f"{kind} models, {what}")
    ax.set_xscale("log")
    finite = x[np.isfinite(x)]
    if finite.size:
        ax.set_xlim(finite.min() / 2, finite.max() * 2)
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    from iclsim.llm.report import params_text

    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: params_text(int(round(v)))))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.axhline(0.0, color="0.5", lw=0.8, ls="--")
    ax.set_xlabel("parameters")
    ax.set_ylabel(f"accuracy drop p = 0 → {sf:g}")
    ax.set_title(f"Accuracy drop from p = 0 to p = {sf:g} vs parameter count\n(does it grow "
                 "with size? lines join models of one kind only)", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(True, lw=0.3)
    return F.finish(fig, _footer(ds, sel), out_dir, "llm_sensitivity", formats)


def accuracy_vs_input_noise(ds, out_dir, formats) -> list[Path]:
    if ds.sizes["input_noise"] < 2 or 0.0 not in ds["label_flip"].values:
        return []
    plt = pyplot()
    sel = dict(k=ds["k"].values[0], label_words=ds["label_words"].values[0], label_flip=0.0)
    pooled = ds.sizes["task"] > 1
    pre = "pooled_acc" if pooled else "acc"
    extra = {} if pooled else {"task": ds["task"].values[0]}
    models, sizes = _models(ds)
    fig, ax = plt.subplots(figsize=(6.0, 4.2), layout="constrained")
    q = ds["input_noise"].values
    for color, model, n in zip(_colors(plt, len(models)), models, sizes):
        m = ds[f"{pre}_mean"].sel(model=model, **extra, **sel).values
        lo = ds[f"{pre}_lo"].sel(model=model, **extra, **sel).values
        hi = ds[f"{pre}_hi"].sel(model=model, **extra, **sel).values
        ax.errorbar(q, m, yerr=[m - lo, hi - m], fmt="o-", ms=3.5, capsize=2, color=color,
                    label=_label(model, n))
    ax.axhline(0.5, color="0.5", ls="--", lw=0.8)
    ax.set_xlabel("fraction of demonstration inputs corrupted q (labels kept)")
    ax.set_ylabel("accuracy on clean queries")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Accuracy on clean queries vs fraction q of corrupted demonstration inputs" +
                 (" (pooled over tasks)" if pooled else ""), fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, lw=0.3)
    return F.finish(fig, _footer(ds, sel), out_dir, "llm_accuracy_vs_input_noise", formats)


def draw_all(ds, out_dir: Path, formats) -> list[Path]:
    """Every figure of a real-language-model sweep result ``ds``: accuracy vs the flipped
    fraction per model, the sensitivity (accuracy drop) vs model size when the result has
    one, and accuracy vs input noise when it has two or more input-noise levels
    (``docs/llm.md``).

    Returns
    -------
    list of pathlib.Path
        The files written under ``out_dir``, one per figure and format in ``formats``.
    """
    return F.draw_all(ds, out_dir, formats, [(True, draw) for draw in (
        accuracy_vs_flip, sensitivity, accuracy_vs_input_noise)])
