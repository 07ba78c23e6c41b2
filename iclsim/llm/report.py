"""The printed table of an LLM sweep result (``iclsim run`` / ``iclsim show``).

Per (k, label words, input noise q) block: accuracy per model and task (and pooled over
tasks) at the label-flip fractions p of the sweep, with bootstrap intervals, and the
sensitivity (the accuracy drop from p = 0 to p = ``eval.sensitivity_flip``).  The last
lines compare the sensitivity of the largest and the smallest model with a paired
bootstrap interval (same seeds and queries): the paper's claim is that it grows with size.
"""

from __future__ import annotations

import numpy as np

from iclsim.llm import stats

__all__ = ["summary", "size_comparison", "params_text"]


def params_text(n: int) -> str:
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


def size_comparison(ds, **sel):
    """Paired bootstrap of sensitivity(largest model) - sensitivity(smallest model), pooled
    over tasks at the coordinates ``sel`` (k, label_words, input_noise).  Returns
    (largest, smallest, mean, lo, hi) or None when it cannot be computed."""
    sf = ds.attrs.get("sensitivity_flip")
    models = _ordered_models(ds)
    if sf is None or len(models) < 2:
        return None
    big, small = models[-1], models[0]
    ok = ds["present"] & ~ds["diverged"]

    def drops(model):
        c = ds["correct"].sel(model=model, **sel)
        keep = (ok.sel(model=model, label_flip=0.0, **sel)
                & ok.sel(model=model, label_flip=sf, **sel))
        d = (c.sel(label_flip=0.0) - c.sel(label_flip=sf)).transpose("task", "seed", "query")
        return d.values.reshape(-1, d.shape[-1]), keep.transpose("task", "seed").values.ravel()

    a, ka = drops(big)
    b, kb = drops(small)
    keep = ka & kb
    if not keep.any():
        return None
    level = float(ds.attrs.get("confidence", 0.95))
    lo, hi = stats.bootstrap_diff_ci(a[keep], b[keep], level=level,
                                     n_boot=int(ds.attrs.get("n_boot", 1000)), seed=1)
    # a difference of two accuracy drops lies in [-2, 2]
    return (big, small, float(a[keep].mean() - b[keep].mean()), float(max(lo, -2.0)),
            float(min(hi, 2.0)))


def summary(ds) -> str:
    level = float(ds.attrs.get("confidence", 0.95))
    flips = [float(p) for p in ds["label_flip"].values]
    show = flips if len(flips) <= 5 else sorted({flips[0], flips[-1], *(
        [ds.attrs["sensitivity_flip"]] if "sensitivity_flip" in ds.attrs else [])})
    sf = ds.attrs.get("sensitivity_flip")
    n_seeds, n_q = ds.sizes["seed"], ds.sizes["query"]
    lines = [f"Real language models, noisy demonstrations: accuracy (mean over {n_seeds} "
             f"seed(s) × {n_q} queries) [{100 * level:g} % bootstrap interval]; chance 0.5",
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
                    big, small, m, lo, hi = cmp
                    if lo > 0:
                        word = "larger model MORE sensitive (agrees with the paper's claim)"
                    elif hi < 0:
                        word = "larger model LESS sensitive (disagrees with the paper's claim)"
                    else:
                        word = "no detectable difference (interval includes 0)"
                    verdict_lines.append(
                        f"k = {int(k)}, {words}, q = {float(q):g}: sensitivity({big}) − "
                        f"sensitivity({small}) = {m:+.3f} [{lo:+.3f}, {hi:+.3f}] pooled over "
                        f"tasks: {word}")
    if verdict_lines:
        lines += ["", f"Does sensitivity to flipped labels (accuracy drop p = 0 → {sf:g}) grow "
                  "with model size? (paired bootstrap over tasks, seeds and queries)"]
        lines += verdict_lines
    bad = int((ds["diverged"] & ds["present"]).sum())
    missing = int((~ds["present"]).sum())
    if bad or missing:
        lines.append(f"left out: {bad} run(s) with non-finite scores, {missing} missing")
    return "\n".join(lines)
