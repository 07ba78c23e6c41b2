"""The figure scaffolding shared by every setting (drawn only from a stored result).

A setting provides its maths — the theory curves, the oracle's best scale, the names of
its axes and scale — and the engine draws the parts that are the same everywhere:

* :func:`draw_all` — every figure whose axes the result varied (the risk-vs-noise figure
  per noise axis, the setting's own figures, the training curves);
* :func:`run_footer` / :func:`finish` — the footer naming the run settings shown, then
  saving and closing the figure;
* :func:`risk_vs_noise` — the risk-vs-noise-per-scale figure: risk against one noise axis
  per scale (theory lines from the setting, simulation as seed-means ± the one error bar
  of :func:`iclsim.engine.analysis.seed_mean_error`), the residual simulation − theory, and
  the best scale (theory's against the engine's simulated argmin);
* :func:`training_curves` — the training-curve figure: one or more curves per scale
  against the step, with optional ± bands.

Nothing here imports a setting.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from iclsim.engine.setting import tuning_word
from iclsim.plotting import add_footer, save_figure, sweep_footer

__all__ = ["draw_all", "run_footer", "finish", "risk_vs_noise", "best_scale_panel",
           "training_curves"]


def draw_all(ds, out_dir, formats, plan=(), *, noise=None, training=None) -> list[Path]:
    """Every figure the result's axes support; returns the written paths in order.

    ``noise`` = ``(draw, {axis: kind})``: first ``draw(ds, kind, out_dir, formats)`` (the
    setting's risk-vs-noise figure) for each noise axis with more than one level; then
    each figure of ``plan`` — pairs ``(condition, draw)``, ``condition`` a bool or a
    callable of ``ds`` — whose condition holds; last ``training(ds, out_dir, formats)``
    when the result stores a loss curve (a ``step`` axis).
    """
    paths = []
    if noise is not None:
        draw, axes = noise
        for axis, kind in axes.items():
            if ds[axis].size > 1:
                paths += draw(ds, kind, out_dir, formats)
    for condition, draw in plan:
        if condition(ds) if callable(condition) else condition:
            paths += draw(ds, out_dir, formats)
    if training is not None and ds.sizes.get("step", 0) > 0:
        paths += training(ds, out_dir, formats)
    return paths


def run_footer(ds, fixed, best_label, model_text) -> str:
    """The footer of a setting's figure: the run settings shown (``fixed``: label → value,
    numbers printed with ``:g``), the seed count, how the simulated best scale is tuned
    (``best_label``) and the model text, through :func:`iclsim.plotting.sweep_footer`."""
    bits = [f"{k} = {float(v):g}" for k, v in fixed.items()]
    bits += [f"{ds.seed.size} seed(s)", f"{best_label}: {tuning_word('best')}"]
    return sweep_footer(ds, bits, model_text)


def finish(fig, footer, out_dir, stem, formats) -> list[Path]:
    """Add the footer, write ``stem`` in every format, close the figure; return the paths."""
    from iclsim.plotting import pyplot

    add_footer(fig, footer)
    paths = save_figure(fig, out_dir, stem, formats)
    pyplot().close(fig)
    return paths


def risk_vs_noise(plt, *, grid, scales, colors, points, theory, scale_symbol, figsize,
                  jitter, residual_title):
    """The three panels of the risk-vs-noise-per-scale figure, with the simulation drawn.

    ``points[k]`` is ``(mean, err)`` of scale ``scales[k]`` on ``grid`` (seed-means and
    their error), ``theory[k]`` the theory's risk there (the residual's reference).  The
    setting draws its theory lines on the main axes and fills in the best-scale panel
    (:func:`best_scale_panel`).  Returns ``(fig, ax, ax_res, ax_best)``.
    """
    fig = plt.figure(figsize=figsize, layout="constrained")
    gs = fig.add_gridspec(2, 2, width_ratios=(1.55, 1.0))
    ax = fig.add_subplot(gs[:, 0])
    ax_res = fig.add_subplot(gs[0, 1])
    ax_best = fig.add_subplot(gs[1, 1], sharex=ax_res)
    span = float(grid.max() - grid.min()) or 1.0
    shift = (np.arange(len(scales)) - (len(scales) - 1) / 2) * jitter * span
    for k, color in enumerate(colors):
        mean, err = points[k]
        ax.errorbar(grid, mean, yerr=err, fmt="o", ms=4, capsize=2, color=color)
        ax_res.errorbar(grid + shift[k], mean - theory[k], yerr=err, fmt="o", ms=3,
                        capsize=1.5, color=color, lw=0.8)
    ax_res.axhline(0.0, color="0.5", lw=0.8)
    ax_res.set_ylabel("trained − oracle risk")
    ax_res.set_title(residual_title + f"\nall {scale_symbol} see the same prompts: residuals "
                     "move together", fontsize=9)
    ax_res.tick_params(labelbottom=False)
    return fig, ax, ax_res, ax_best


def best_scale_panel(ax, *, dense, theory_lines, all_scales, trained, grid, pred, pred_label,
                     sim_best, agree_with, labels, xlabel, ylabel, title, legend_loc,
                     yticks=None):
    """The best-scale panel: theory's best scale over ``all_scales`` (a step function on the
    ``dense`` grid, from ``theory_lines`` (scales × dense)) and over the trained scales ∪ {0}
    where those differ (``labels``: the two step functions' legend labels), the stored
    prediction ``pred`` and the simulated argmin ``sim_best`` on ``grid``; the title counts
    the levels where ``agree_with`` equals the simulated argmin; ``yticks`` default: every
    scale up to 12 of them, else 9 spread over the range."""
    ax.step(dense, all_scales[np.argmin(theory_lines, axis=0)], where="post", color="k",
            lw=1.2, label=labels[0])
    if set(trained) != set(all_scales):
        ax.step(dense, trained[np.argmin(theory_lines[trained], axis=0)], where="post",
                color="0.5", lw=1, ls=":", label=labels[1])
    ax.plot(grid, pred, "s", mfc="none", mec="k", ms=9, label=pred_label)
    ax.plot(grid, sim_best, "o", color="C3", ms=4.5, label="simulated argmin")
    agree = int(np.sum(agree_with == sim_best))
    compared = int(np.sum(np.isfinite(sim_best)))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.5, all_scales.max() + 0.5)
    if yticks is None:
        yticks = all_scales if all_scales.size <= 12 else np.unique(
            np.linspace(0, all_scales.max(), 9).astype(int))
    ax.set_yticks(yticks)
    ax.grid(True, axis="y", lw=0.3)
    ax.set_title(f"{title}: simulation = theory at {agree}/{compared} levels", fontsize=9)
    ax.legend(fontsize=7, loc=legend_loc)


def training_curves(plt, *, steps, scales, colors, curves, figsize):
    """The training-curve figure: per scale (``k``-th of ``scales``), the curves
    ``curves(k, scale)`` returns — ``(label, y, band, plot_kwargs)``, ``band`` None or the
    half-width of a shaded ± band, only the first curve's label kept — against the step
    (log x).  Returns ``(fig, ax)``; the setting adds its reference lines, y scale, labels
    and title."""
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    for k, (color, s) in enumerate(zip(colors, scales)):
        for i, (label, y, band, kw) in enumerate(curves(k, s)):
            ax.plot(steps, y, color=color, label=label if i == 0 else None, **kw)
            if band is not None:
                ax.fill_between(steps, y - band, y + band, color=color, alpha=0.18, lw=0)
    ax.set_xscale("log")
    return fig, ax
