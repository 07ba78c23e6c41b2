"""The printed table of an LLM sweep result (``iclsim run`` / ``iclsim show``).

Per (k, label words, input noise q) block: accuracy per model and task (and pooled over
tasks) at the label-flip fractions p of the sweep, with t intervals over seeds (Wilson when
degenerate: :mod:`iclsim.llm.stats`), and the sensitivity (the accuracy drop from p = 0 to
p = ``eval.sensitivity_flip``).  The last lines test the claim "the larger model is more
sensitive to flipped labels": the paired t interval over seeds of the difference between the
largest and the smallest model of their drops pooled over tasks, a verdict (SUPPORTED /
NOT SUPPORTED / INCONCLUSIVE) and the difference this sweep could detect with 80 % power.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from iclsim.llm import stats

__all__ = ["summary", "size_comparison", "verdict", "Comparison", "params_text"]


def params_text(n: int) -> str:
    """A parameter count as people write it: ``"135M"``, ``"1.54B"``.

    Returns
    -------
    str
        Millions below 10⁹, billions (two decimals) above; ``"?"`` for an unknown count.
    """
    if n is None or n < 0:
        return "?"
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def _ci(mean, lo, hi) -> str:
    if not np.isfinite(mean):
        return "—".center(19)
    return f"{mean:.3f} [{lo:.2f}, {hi:.2f}]"


def _ordered_models(ds):
    n = ds["n_params_model"].values
    return [str(m) for m in ds["model"].values[np.argsort(n, kind="stable")]]


class Comparison(NamedTuple):
    """sensitivity(big) - sensitivity(small) pooled over tasks: the estimate and its
    interval (:class:`iclsim.llm.stats.Interval` fields), the seed-to-seed sd of the
    difference, the difference detectable with 80 % power, and the models' kinds."""

    big: str
    small: str
    mean: float
    lo: float
    hi: float
    method: str
    n_seeds: int
    sd: float
    detectable: float
    big_kind: str
    small_kind: str


def size_comparison(ds, **sel):
    """Paired t interval over seeds of sensitivity(largest model) - sensitivity(smallest
    model), pooled over tasks at the coordinates ``sel`` (k, label_words, input_noise): the
    unit is a seed's difference of the two models' drops, each averaged over the tasks
    (Newcombe's interval from four Wilson intervals when degenerate).  Returns a
    :class:`Comparison`, or None when it cannot be computed."""
    sf = ds.attrs.get("sensitivity_flip")
    models = _ordered_models(ds)
    if sf is None or len(models) < 2:
        return None
    big, small = models[-1], models[0]
    ok = ds["present"] & ~ds["diverged"]
    arrays, keep = [], True
    for model in (big, small):
        c = ds["correct"].sel(model=model, **sel)
        for p in (0.0, sf):
            arrays.append(c.sel(label_flip=p).transpose("task", "seed", "query").values)
            keep = keep & ok.sel(model=model, label_flip=p, **sel).transpose("task", "seed").values
    keep = np.asarray(keep, bool)
    if not keep.any():
        return None
    arrays = [np.where(keep[..., None], a, 0.0) for a in arrays]
    level = float(ds.attrs.get("confidence", 0.95))
    r = stats.drop_diff_ci(*arrays, level=level, keep=keep)
    kinds = {str(m): str(k) for m, k in zip(ds["model"].values, ds["kind"].values)} \
        if "kind" in ds else {}
    return Comparison(big, small, r.mean, r.lo, r.hi, r.method, r.n_seeds, r.sd,
                      stats.detectable_difference(r.sd, r.n_seeds, level=level, power=0.8),
                      kinds.get(big, "unknown"), kinds.get(small, "unknown"))


def verdict(cmp: Comparison) -> str:
    """SUPPORTED / NOT SUPPORTED / INCONCLUSIVE for "the larger model is more sensitive to
    flipped labels", from the interval of the difference of drops."""
    if cmp.lo > 0:
        return "SUPPORTED (the larger model is more sensitive)"
    if cmp.hi < 0:
        return "NOT SUPPORTED (the larger model is less sensitive)"
    return "INCONCLUSIVE (the interval includes 0)"


def verdict_parts(ds) -> list:
    """The claim "the larger model is more sensitive to flipped labels" as
    :class:`iclsim.engine.verdict.Verdict` parts, one per (k, label words, input noise)
    block: what ``iclsim run/show --check`` folds (exit 1 when a part is NOT SUPPORTED)."""
    from iclsim.engine.verdict import Verdict

    parts = []
    level = float(ds.attrs.get("confidence", 0.95))
    for k in ds["k"].values:
        for words in ds["label_words"].values:
            for q in ds["input_noise"].values:
                cmp = size_comparison(ds, k=k, label_words=words, input_noise=q)
                if cmp is None:
                    continue
                decision = verdict(cmp).split(" (")[0]
                parts.append(Verdict(
                    f"sensitivity({cmp.big}) > sensitivity({cmp.small}) at k = {int(k)}, "
                    f"{words}, q = {float(q):g}", decision, cmp.mean, (cmp.lo, cmp.hi), level,
                    f"paired {cmp.method} interval over {cmp.n_seeds} seeds",
                    {"kind": "size comparison", "kind_label": "larger model more sensitive",
                     "detectable_difference": cmp.detectable, "sd": cmp.sd,
                     "kinds": [cmp.big_kind, cmp.small_kind]}))
    return parts


def power_text(cmp: Comparison, n_tasks: int, n_queries: int, level: float) -> str:
    unit = (f"{cmp.n_seeds} seed(s) × {n_queries} queries" +
            (f" × {n_tasks} tasks" if n_tasks > 1 else ""))
    if not np.isfinite(cmp.detectable):
        return (f"power: with {unit} the seed-to-seed sd of the difference cannot be measured "
                f"(fewer than 2 seeds): no power statement")
    if cmp.sd == 0:
        return (f"power: with {unit} the per-seed differences do not vary (s_d = 0): no "
                f"power statement from this sweep")
    return (f"power: with {unit} this sweep detects a difference in sensitivity of ≥ "
            f"{cmp.detectable:.3f} with 80 % power (two-sided paired t test at the "
            f"{100 * (1 - level):g} % level), from the measured seed-to-seed sd of the difference "
            f"s_d = {cmp.sd:.3f}")


def summary(ds) -> str:
    """The table that ``iclsim run`` / ``iclsim show`` print for a real-LM sweep result ``ds``:
    accuracy with its interval per model, task and flipped fraction, the sensitivity, and the
    claim's verdict (the larger model is more sensitive to flipped labels) per condition, with
    the power of each comparison (``docs/llm.md``).

    Returns
    -------
    str
        The table, lines joined by newlines.
    """
    level = float(ds.attrs.get("confidence", 0.95))
    flips = [float(p) for p in ds["label_flip"].values]
    show = flips if len(flips) <= 5 else sorted({flips[0], flips[-1], *(
        [ds.attrs["sensitivity_flip"]] if "sensitivity_flip" in ds.attrs else [])})
    sf = ds.attrs.get("sensitivity_flip")
    n_seeds, n_q = ds.sizes["seed"], ds.sizes["query"]
    lines = [f"Real language models, noisy demonstrations: accuracy (mean over {n_seeds} "
             f"seed(s) × {n_q} queries) [{100 * level:g} % interval]; chance 0.5",
             f"intervals: Student t over seeds (unit: a seed's mean over its queries, "
             f"averaged over tasks when pooled; the drop paired per seed); Wilson on the "
             f"pooled counts (Newcombe for drops) when the seeds do not vary or there is one",
             "model kinds: " + ", ".join(
                 f"{m} ({k}, {params_text(int(n))})" for m, k, n in zip(
                     ds["model"].values, ds["kind"].values, ds["n_params_model"].values))]
    models = _ordered_models(ds)
    tasks = [str(t) for t in ds["task"].values]
    header = f"{'model':<24}{'task':<10}" + "".join(f"{'p=' + format(p, 'g'):<22}" for p in show)
    if sf is not None:
        header += f"drop p=0→{sf:g}"
    verdict_lines = []
    for k in ds["k"].values:
        for words in ds["label_words"].values:
            for q in ds["input_noise"].values:
                sel = dict(k=k, label_words=words, input_noise=q)
                lines += ["", f"k = {int(k)} demonstrations · label words {words} · input "
                          f"noise q = {float(q):g}", header]
                for model in models:
                    for task in tasks + (["pooled"] if len(tasks) > 1 else []):
                        if task == "pooled":
                            pre, cell = "pooled_acc", dict(model=model, **sel)
                            spre = "pooled_sensitivity"
                        else:
                            pre, cell = "acc", dict(model=model, task=task, **sel)
                            spre = "sensitivity"
                        row = f"{model:<24}{task:<10}"
                        for p in show:
                            row += f"{_ci(*(float(ds[f'{pre}_{s}'].sel(label_flip=p, **cell)) for s in ('mean', 'lo', 'hi'))):<22}"
                        if f"{spre}_mean" in ds:
                            row += _ci(*(float(ds[f"{spre}_{s}"].sel(**cell))
                                         for s in ("mean", "lo", "hi")))
                        lines.append(row)
                cmp = size_comparison(ds, **sel)
                if cmp is not None:
                    kinds = (f" [note: {cmp.big} is {cmp.big_kind}, {cmp.small} is "
                             f"{cmp.small_kind}: the comparison mixes model kinds]"
                             if cmp.big_kind != cmp.small_kind else "")
                    verdict_lines += [
                        f"k = {int(k)}, {words}, q = {float(q):g}: sensitivity({cmp.big}) − "
                        f"sensitivity({cmp.small}) = {cmp.mean:+.3f} [{cmp.lo:+.3f}, "
                        f"{cmp.hi:+.3f}] pooled over tasks: {verdict(cmp)}{kinds}" +
                        (f" (interval: {cmp.method}, the t interval is degenerate)"
                         if cmp.method != "t" else ""),
                        "  " + power_text(cmp, ds.sizes["task"], n_q, level)]
    if verdict_lines:
        lines += ["", f"Claim: the larger model is more sensitive to flipped labels (accuracy "
                  f"drop p = 0 → {sf:g}, largest minus smallest model). {100 * level:g} % "
                  "paired t interval over seeds of the per-seed difference of drops (each "
                  "averaged over tasks); SUPPORTED if above 0, NOT SUPPORTED if below, "
                  "INCONCLUSIVE if it includes 0"]
        lines += verdict_lines
        from iclsim.engine.verdict import fold

        lines.append(fold(verdict_parts(ds), subject="the paper's claim").line)
    bad = int((ds["diverged"] & ds["present"]).sum())
    missing = int((~ds["present"]).sum())
    if bad or missing:
        lines.append(f"left out: {bad} run(s) with non-finite scores, {missing} missing")
    return "\n".join(lines)
