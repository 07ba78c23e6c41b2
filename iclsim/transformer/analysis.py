"""Setting 3's aggregates, statistics and tables, computed from a stored result only.

Which runs count.  Only runs whose verdict is ``converged`` (:func:`convergence`) enter an
aggregate; ``not_converged``, ``trivial`` and ``diverged`` runs are counted by name in the
tables (:func:`usable`).  Each size is taken at its best-tuned learning rate and init scale:
the engine's :func:`iclsim.engine.setting.best_scale` rule (the smallest seed-mean risk over
the tuning axes) applied at the first σ² (the clean prompts), then held fixed along σ², so a
size's curve is one trained model family (:func:`size_data`).  Selecting the best of a few
learning rates biases its risk down slightly (the minimum of noisy means); with ≥ 10 seeds
and well separated learning rates the bias is small against the intervals.

The statistics (every interval at ``eval.level``, default 95 %, from
:func:`iclsim.engine.stats.seed_bootstrap`: seeds resampled, the Monte Carlo error of the
shared prompts added, the seed part widened by t_{n−1}/z, :mod:`iclsim.engine.stats`):

* **clean rung** (:func:`clean_rung`): where the clean risk R(σ²₀) sits on the LSA ladder:
  the fractional position ρ with L_⌊ρ⌋ ≥ R ≥ L_⌊ρ⌋+1 (linear between rungs), and its interval
  (the clean-risk interval mapped through the decreasing ladder);
* **local noise sensitivity** (:func:`local_slopes`): dR/dσ² on each band [σ²_j, σ²_{j+1}] of
  the grid, from the paired difference R(σ²_{j+1}) − R(σ²_j) on the same prompts and seeds
  (its Monte Carlo variance from the stored covariance), beside S at the clean rung and the
  *sensitivity rung*, the ρ whose S_ρ equals the slope;
* **ladder fit** (:func:`rung_fit`): for each rung r, the test of H0 "the size's mean curve is
  L_r(σ²) at every σ²" (:func:`iclsim.engine.stats.curve_test`: the seeds' covariance across
  σ² plus the Monte Carlo covariance, Hotelling's F); the rungs not rejected form a confidence
  set, and an empty set says "no rung fits" (a level-α test of "some rung fits");
* **the law** (:func:`law_test`): D(σ²) = R_largest − R_smallest with its interval at every
  σ², where it crosses 0, an engine :class:`iclsim.engine.verdict.Verdict` and the power the
  run has against the effect the LSA ladder predicts for the two sizes' clean rungs.
"""

from __future__ import annotations

from statistics import NormalDist
from typing import NamedTuple

import numpy as np

from iclsim.engine import analysis as A
from iclsim.engine.setting import best_scale
from iclsim.engine.stats import curve_test, percentile_interval, seed_bootstrap
from iclsim.engine.verdict import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, Verdict

__all__ = ["usable", "first_cell", "convergence", "SizeData", "size_data", "size_table",
           "best_size", "rung_position", "clean_rung", "local_slopes", "rung_fit", "law_test",
           "summary", "size_statistics", "Law", "input_text", "size_label", "USABLE"]

#: The verdicts whose runs enter the aggregates.
USABLE = ("converged",)


def usable(ds):
    """``ds`` with ``diverged`` widened to every run that is not ``converged`` (trivial, not
    converged): the runs this setting leaves out of every aggregate
    (:func:`iclsim.engine.setting.best_scale` drops ``diverged``)."""
    out = ds.copy()
    out["diverged"] = ds["diverged"] | ~ds["verdict"].isin(list(USABLE))
    return out


def first_cell(ds, keep=("size", "seed", "label_noise", "rank_all")):
    """The cell at the first value of every other run axis (and of the input noise σ_x²)
    and that selection: the engine's :func:`iclsim.engine.analysis.first_cell` and
    :func:`~iclsim.engine.analysis.first_coords` over the axes not in ``keep``."""
    axes = [d for d in ("n_context", "learning_rate", "init_scale", "train_label_noise",
                        "input_noise") if d in ds.dims and d not in keep]
    return A.first_cell(ds, None, axes), A.first_coords(ds, axes)


def _cfg(ds) -> dict:
    from iclsim.plotting import result_config

    return result_config(ds)


def _eval_opt(ds, key, default):
    return type(default)(dict(_cfg(ds).get("eval", {})).get(key, default))


def input_text(ds, value=None) -> str:
    """``", input σ_x²=v"`` for titles, or "" when the result has σ_x² = 0 only."""
    if "input_noise" not in ds.dims or (ds["input_noise"].size == 1
                                        and float(ds["input_noise"][0]) == 0.0):
        return ""
    v = float(ds["input_noise"][0]) if value is None else float(value)
    return f", input σ_x²={v:g}"


def size_label(ds, size) -> str:
    c = ds.sel(size=size)
    return f"{int(size)} (h={int(c['size_heads'])}, d_model={int(c['size_width'])}, " \
           f"L={int(c['size_layers'])})"


def convergence(loss, *, window: float = 0.2, tolerance: float = 0.03):
    """The convergence rule on a run's per-step training loss (fresh prompts every step, so
    each step's loss is an unbiased estimate of the current risk at the training noise).

    Converged when both hold: (1) over the final ``window`` fraction of steps the
    least-squares slope of the loss against the step is within 2 SE of 0 (SE from the
    residuals); (2) the mean loss over the 10 % of steps before 80 % of training exceeds the
    mean over the final 10 % by at most ``tolerance`` · (final mean) + 2 SE of the
    difference.  ``loss`` (runs, steps).  Returns (converged (runs,), slope, slope SE,
    relative drop from 80 % to the end (runs,))."""
    loss = np.asarray(loss, float)
    runs, steps = loss.shape
    w = max(3, int(np.ceil(window * steps)))
    tail = loss[:, -w:]
    t = np.arange(w) - (w - 1) / 2.0
    slope = tail @ t / np.sum(t * t)
    resid = tail - tail.mean(axis=1, keepdims=True) - slope[:, None] * t
    slope_se = np.sqrt(np.sum(resid**2, axis=1) / max(w - 2, 1) / np.sum(t * t))
    k = max(2, steps // 10)
    start = max(0, int(0.8 * steps) - k)
    before, end = loss[:, start:start + k], loss[:, -k:]
    m_b, m_e = before.mean(axis=1), end.mean(axis=1)
    se = np.sqrt(before.var(axis=1, ddof=1) / before.shape[1]
                 + end.var(axis=1, ddof=1) / end.shape[1])
    drop = m_b - m_e
    ok = (np.abs(slope) <= 2.0 * slope_se) & (drop <= tolerance * m_e + 2.0 * se)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = drop / m_e
    return ok & np.isfinite(rel), slope, slope_se, rel


class SizeData(NamedTuple):
    """One size at one (N, σ₀², σ_x²) and its tuned learning rate / init scale."""

    size: int
    learning_rate: float
    init_scale: float
    risk: np.ndarray
    """(usable seeds, σ² levels) per-seed risk curves"""
    mc_cov: np.ndarray
    """(σ² levels, σ² levels) Monte Carlo covariance: mean over the usable seeds"""
    se: np.ndarray
    """(σ² levels,) run-level Monte Carlo SEs, mean over usable seeds (for size_table)"""
    verdicts: dict
    """verdict -> count at the tuned point"""
    all_verdicts: dict
    """verdict -> count over every learning rate and init scale"""


def _counts(values) -> dict:
    v = np.asarray(values).astype(str).ravel()
    return {k: int(np.sum(v == k)) for k in dict.fromkeys(v)}


def _fixed(ds, sel):
    """Fix N, σ₀² and σ_x² (given, else the first); learning rate / init scale only if given."""
    out = {d: sel.get(d, ds[d].values[0]) for d in ("n_context", "train_label_noise",
                                                    "input_noise") if d in ds.dims}
    out.update({d: sel[d] for d in ("learning_rate", "init_scale") if d in sel})
    return out


def size_data(ds, **sel) -> list[SizeData]:
    """Per size: the usable seeds' risk curves at its tuned learning rate and init scale (or
    at those of ``sel``), see the module docstring.  A size without usable runs has an empty
    ``risk`` (0, levels)."""
    fixed = _fixed(ds, sel)
    cell = ds.sel(**fixed)
    tuning = [d for d in ("learning_rate", "init_scale") if d in cell.dims]
    k = ds["label_noise"].size
    out = []
    for size in ds["size"].values:
        c = cell.sel(size=size)
        ok = c["verdict"].isin(list(USABLE)) & ~c["diverged"]
        clean = c["eval_risk"].isel(label_noise=0).where(ok)
        n_ok = ok.sum("seed")
        mean = clean.mean("seed").where(n_ok >= 1)
        if tuning and np.isfinite(mean.values).any():
            flat = int(np.nanargmin(np.where(np.isfinite(mean.values), mean.values, np.inf)))
            idx = dict(zip(tuning, np.unravel_index(flat, mean.shape)))
            c = c.isel(**idx)
        elif tuning:
            c = c.isel(**{d: 0 for d in tuning})
        good = (c["verdict"].isin(list(USABLE)) & ~c["diverged"]).values
        risk = c["eval_risk"].transpose("seed", "label_noise").values[good]
        se = c["eval_se"].transpose("seed", "label_noise").values[good]
        cov = c["eval_mc_cov"].transpose("seed", "label_noise", "label_noise_2").values[good] \
            if "eval_mc_cov" in c else np.stack([np.diag(s**2) for s in se]) if good.any() \
            else np.zeros((0, k, k))
        out.append(SizeData(
            int(size), float(c["learning_rate"]) if "learning_rate" in c.coords else np.nan,
            float(c["init_scale"]) if "init_scale" in c.coords else np.nan, risk,
            cov.mean(axis=0) if good.any() else np.full((k, k), np.nan),
            np.sqrt(np.mean(se**2, axis=0)) if good.any() else np.full(k, np.nan),
            _counts(c["verdict"].values), _counts(cell.sel(size=size)["verdict"].values)))
    return out


def _ladder(ds, **sel):
    """(σ² levels, d + 1) ladder L_r(σ²) and (d + 1,) slopes S_r at the fixed N, σ₀², σ_x²."""
    fixed = _fixed(ds, sel)
    pick = lambda da: da.sel(**{k: v for k, v in fixed.items() if k in da.dims})  # noqa: E731
    lad = pick(ds["ladder_risk"]).transpose("label_noise", "rank_all").values
    slope = pick(ds["ladder_slope"]).transpose("rank_all").values
    return lad, slope


def _seed_mean_se(sd: SizeData):
    """Mean over usable seeds and its error per σ² level: the engine's seed-mean error
    (:func:`iclsim.engine.analysis.seed_mean_error`) with the seeds on shared prompts,
    √(s²/n + mean SE²)."""
    if sd.risk.shape[0] == 0:
        return np.full(sd.se.shape, np.nan), np.full(sd.se.shape, np.nan)
    se = np.broadcast_to(sd.se, sd.risk.shape)  # sd.se² is already the mean SE² over seeds
    return sd.risk.mean(axis=0), A.seed_mean_error(sd.risk, se, axis=0, prompts="shared")


def size_table(ds, **sel):
    """Per size (tuned, :func:`size_data`): ``risk``, ``se`` (size, σ² level), ``gap``,
    ``gap_se`` (the paired Bayes gap, same SE rule), ``n_ok`` (usable seeds), and the
    learning rate ``lr`` used."""
    datas = size_data(ds, **sel)
    fixed = _fixed(ds, sel)
    k = ds["label_noise"].size
    out = {key: np.full((len(datas), k), np.nan) for key in ("risk", "se", "gap", "gap_se")}
    out["n_ok"] = np.array([sd.risk.shape[0] for sd in datas])
    out["lr"] = np.array([sd.learning_rate for sd in datas])
    for a, sd in enumerate(datas):
        out["risk"][a], out["se"][a] = _seed_mean_se(sd)
        if sd.risk.shape[0] == 0:
            continue
        c = ds.sel(**fixed, size=sd.size)
        c = c.sel(**{d: v for d, v in (("learning_rate", sd.learning_rate),
                                       ("init_scale", sd.init_scale)) if d in c.dims})
        good = (c["verdict"].isin(list(USABLE)) & ~c["diverged"]).values
        gap = c["bayes_gap"].transpose("seed", "label_noise").values[good]
        gse = c["bayes_gap_se"].transpose("seed", "label_noise").values[good]
        out["gap"][a] = gap.mean(axis=0)
        out["gap_se"][a] = A.seed_mean_error(gap, gse, axis=0, prompts="shared")
    return out


def best_size(ds, n_boot: int | None = None, seed: int = 0, axis: str = "label_noise", **sel):
    """Best size per σ² (the engine's :func:`best_scale` on the usable runs: per level, each
    size at its best learning rate) and its bootstrap support: the fraction of replicates
    (:func:`iclsim.engine.stats.seed_bootstrap` per size, seeds resampled and the Monte Carlo
    error added, at the size's tuned learning rate) whose argmin over {0} ∪ sizes is the
    same.  Returns (best (levels,), support (levels,)).

    ``axis = "input_noise"``: per σ_x² instead, at the σ² of ``sel`` (else the first)."""
    n_boot = n_boot or _eval_opt(ds, "n_boot", 2000)
    use = usable(ds)
    fixed = {d: sel.get(d, ds[d].values[0]) for d in ("n_context", "train_label_noise")
             if d in ds.dims}
    fixed.update({d: sel[d] for d in ("learning_rate", "init_scale") if d in sel})
    other = "input_noise" if axis == "label_noise" else "label_noise"
    if other in ds.dims:
        fixed[other] = sel.get(other, ds[other].values[0])
    best = best_scale(use, **fixed).transpose(axis, ...).values.reshape(-1)
    levels = ds[axis].values
    rng = np.random.default_rng(seed)
    reps = [np.full((n_boot, levels.size), float(ds["trivial_risk"]))]
    if axis == "label_noise":
        units = [(sd.risk, sd.mc_cov) for sd in size_data(ds, **fixed)]
    else:
        j0 = int(np.flatnonzero(ds["label_noise"].values == fixed["label_noise"])[0])
        base = {k: v for k, v in fixed.items() if k != "label_noise"}
        per = [size_data(ds, **base, input_noise=u) for u in levels]
        units = []
        for a in range(ds["size"].size):
            n = min(p[a].risk.shape[0] for p in per)
            units.append((np.stack([p[a].risk[:n, j0] for p in per], axis=1),
                          np.diag([p[a].mc_cov[j0, j0] for p in per])))
    for x, cov in units:
        reps.append(seed_bootstrap(x, n_boot=n_boot, rng=rng, mc_cov=cov) if x.shape[0]
                    else np.full((n_boot, levels.size), np.inf))
    sizes = np.concatenate([[0], ds["size"].values])
    pick = sizes[np.argmin(np.stack(reps), axis=0)]  # (n_boot, levels)
    return best, np.mean(pick == best[None, :], axis=0)


def rung_position(risk, ladder_row) -> float:
    """The fractional rung ρ of a risk on a decreasing ladder row (L_0 > … > L_d): linear
    between rungs, clipped to [0, d] (NaN for NaN)."""
    lad = np.asarray(ladder_row, float)
    if not np.isfinite(risk):
        return np.nan
    return float(np.interp(-risk, -lad, np.arange(lad.size)))


def clean_rung(sd: SizeData, ladder, *, level=0.95, n_boot=2000, seed=0) -> dict:
    """The clean risk (first σ²) with its interval, and its rung ρ on the ladder row with the
    interval mapped through the ladder (``below``/``above``: the interval leaves the ladder)."""
    n = sd.risk.shape[0]
    if n == 0:
        return {"n": 0, "risk": np.nan, "lo": np.nan, "hi": np.nan, "rung": np.nan,
                "rung_lo": np.nan, "rung_hi": np.nan, "below": False, "above": False,
                "beyond": (False, False, False)}
    x = sd.risk[:, 0]
    reps = seed_bootstrap(x, n_boot=n_boot, seed=seed, mc_cov=sd.mc_cov[0, 0], level=level)
    iv = percentile_interval(float(x.mean()), reps, n, level)
    row = ladder[0]
    return {"n": n, "risk": iv.estimate, "lo": iv.lo, "hi": iv.hi,
            "rung": rung_position(iv.estimate, row), "rung_lo": rung_position(iv.hi, row),
            "rung_hi": rung_position(iv.lo, row), "below": bool(iv.hi < row[-1]),
            "above": bool(iv.lo > row[0]),
            "beyond": tuple(bool(v < row[-1]) for v in (iv.estimate, iv.hi, iv.lo))}


def _band_matrix(s2):
    s2 = np.asarray(s2, float)
    k = s2.size
    m = np.zeros((k - 1, k))
    for j in range(k - 1):
        m[j, j], m[j, j + 1] = -1.0, 1.0
        m[j] /= s2[j + 1] - s2[j]
    return m


def local_slopes(sd: SizeData, s2, slope_th, *, level=0.95, n_boot=2000, seed=0) -> dict:
    """dR/dσ² on each band of the σ² grid from the paired per-seed differences, with
    intervals (all bands bootstrapped jointly), and the sensitivity rung of each (the ρ with
    S_ρ = slope, linear between rungs, clipped to [0, d])."""
    m = _band_matrix(s2)
    bands = m.shape[0]
    n = sd.risk.shape[0]
    nan = np.full(bands, np.nan)
    if n == 0:
        return {"slope": nan, "lo": nan, "hi": nan, "rung": nan, "rung_lo": nan,
                "rung_hi": nan, "beyond": np.zeros((bands, 3), bool)}
    units = sd.risk @ m.T
    reps = seed_bootstrap(units, n_boot=n_boot, seed=seed, mc_cov=m @ sd.mc_cov @ m.T,
                          level=level)
    ivs = [percentile_interval(float(units[:, j].mean()), reps[:, j], n, level)
           for j in range(bands)]
    s = np.asarray(slope_th, float)
    pos = lambda v: float(np.interp(v, s, np.arange(s.size))) if np.isfinite(v) else np.nan  # noqa: E731
    return {"slope": np.array([i.estimate for i in ivs]), "lo": np.array([i.lo for i in ivs]),
            "hi": np.array([i.hi for i in ivs]),
            "beyond": np.array([[v > s[-1] for v in (i.estimate, i.lo, i.hi)] for i in ivs]),
            "rung": np.array([pos(i.estimate) for i in ivs]),
            "rung_lo": np.array([pos(i.lo) for i in ivs]),
            "rung_hi": np.array([pos(i.hi) for i in ivs])}


def rung_fit(sd: SizeData, ladder, *, level=0.95) -> dict:
    """For each rung r the p-value of H0 "mean curve = L_r(σ²) at every σ²"; ``fits``: the
    rungs with p ≥ 1 − level (empty: no rung fits); ``testable``: more seeds than levels."""
    n, k = sd.risk.shape
    p = np.array([curve_test(sd.risk, ladder[:, r], sd.mc_cov).p_value
                  for r in range(ladder.shape[1])]) if n > k else np.full(ladder.shape[1], np.nan)
    testable = bool(np.isfinite(p).all())
    fits = [int(r) for r in np.flatnonzero(p >= 1.0 - level)] if testable else []
    return {"p": p, "fits": fits, "testable": testable, "best": int(np.nanargmax(p))
            if testable else -1, "n": n, "levels": k}


def _crossing(d, s2):
    """The σ² where D first turns from < 0 to ≥ 0 (linear between levels); −inf if D(σ²₀) ≥ 0,
    +inf if it never does in the grid."""
    d = np.asarray(d, float)
    if d[0] >= 0:
        return -np.inf
    up = np.flatnonzero((d[:-1] < 0) & (d[1:] >= 0))
    if up.size == 0:
        return np.inf
    j = up[0]
    return float(s2[j] + (s2[j + 1] - s2[j]) * (-d[j]) / (d[j + 1] - d[j]))


def _crossings(reps, s2):
    """:func:`_crossing` of each row of ``reps`` (vectorised)."""
    reps = np.asarray(reps, float)
    out = np.full(reps.shape[0], np.inf)
    up = (reps[:, :-1] < 0) & (reps[:, 1:] >= 0)
    has = up.any(axis=1)
    j = np.argmax(up, axis=1)
    rows = np.flatnonzero(has)
    d0, d1 = reps[rows, j[rows]], reps[rows, j[rows] + 1]
    out[rows] = s2[j[rows]] + (s2[j[rows] + 1] - s2[j[rows]]) * (-d0) / (d1 - d0)
    out[reps[:, 0] >= 0] = -np.inf
    return out


def _ladder_at(ladder, rho):
    """The ladder curve at fractional rung ρ (linear between the rungs' curves)."""
    lo = int(np.clip(np.floor(rho), 0, ladder.shape[1] - 1))
    hi = min(lo + 1, ladder.shape[1] - 1)
    f = rho - lo
    return (1 - f) * ladder[:, lo] + f * ladder[:, hi]


class Law(NamedTuple):
    verdict: Verdict | None
    small: int
    large: int
    d: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    crossing: tuple
    """(estimate, lo, hi) of the σ² where D crosses 0 (±inf: outside the grid)"""
    predicted: np.ndarray
    predicted_crossing: float
    power: float


def law_test(datas, ds_counts, ladder, s2, *, level=0.95, n_boot=2000, seed=0) -> Law:
    """The law "the best size falls as σ² grows" between the smallest and the largest size
    (by parameter count) with usable seeds: D(σ²) = R_large − R_small per σ² with intervals
    (independent seed bootstraps per size, Monte Carlo added, seed parts t-widened).

    SUPPORTED: D < 0 at the first σ² and D > 0 at the last (both intervals exclude 0: the
    larger size is better on clean prompts and worse at the highest noise, so the best of the
    two falls inside the grid; an intersection-union test at level 1 − ``level``).
    NOT SUPPORTED: an interval excludes 0 on the wrong side at either end (D > 0 at the first
    σ² or D < 0 at the last).  INCONCLUSIVE otherwise.  ``power``: the probability of
    SUPPORTED (normal approximation with the bootstrap SEs) if D were the LSA ladder's
    prediction for the two sizes' clean rungs, L_ρ_large(σ²) − L_ρ_small(σ²)."""
    have = [i for i, sd in enumerate(datas) if sd.risk.shape[0] >= 2]
    nan = np.full(len(s2), np.nan)
    if len(have) < 2:
        return Law(None, -1, -1, nan, nan, nan, (np.nan,) * 3, nan, np.nan, np.nan)
    order = sorted(have, key=lambda i: ds_counts[i])
    a, b = order[0], order[-1]
    small, large = datas[a], datas[b]
    rng = np.random.default_rng(seed)
    rs = seed_bootstrap(small.risk, n_boot=n_boot, rng=rng, mc_cov=small.mc_cov, level=level)
    rl = seed_bootstrap(large.risk, n_boot=n_boot, rng=rng, mc_cov=large.mc_cov, level=level)
    d = large.risk.mean(axis=0) - small.risk.mean(axis=0)
    reps = rl - rs
    n = min(small.risk.shape[0], large.risk.shape[0])
    ivs = [percentile_interval(float(d[j]), reps[:, j], n, level) for j in range(len(s2))]
    lo, hi = np.array([i.lo for i in ivs]), np.array([i.hi for i in ivs])
    q = (1.0 - level) / 2.0
    cross_reps = _crossings(reps, np.asarray(s2, float))
    cross = (_crossing(d, s2), *np.quantile(cross_reps, [q, 1.0 - q], method="inverted_cdf"))
    rho = [rung_position(float(sd.risk[:, 0].mean()), ladder[0]) for sd in (small, large)]
    pred = _ladder_at(ladder, rho[1]) - _ladder_at(ladder, rho[0])
    z = NormalDist().inv_cdf(1.0 - q)
    sd_d = (rl - rs).std(axis=0, ddof=1)  # (widened: a slightly conservative power)
    power = np.nan
    if pred[0] < 0 and pred[-1] > 0:
        cdf = NormalDist().cdf
        power = cdf(-pred[0] / sd_d[0] - z) * cdf(pred[-1] / sd_d[-1] - z)
    elif np.isfinite(pred).all():
        power = 0.0
    if hi[0] < 0 and lo[-1] > 0:
        decision = SUPPORTED
    elif lo[0] > 0 or hi[-1] < 0:
        decision = NOT_SUPPORTED
    else:
        decision = INCONCLUSIVE
    claim = (f"the best size falls as σ² grows: size {large.size} (largest) beats size "
             f"{small.size} (smallest) at σ²={s2[0]:g} and loses to it at σ²={s2[-1]:g}")
    v = Verdict(claim, decision, float(d[-1]), (float(lo[-1]), float(hi[-1])), level,
                "D(σ²) = R_largest − R_smallest, seeds bootstrapped per size with the Monte "
                "Carlo error added, seed part t-widened, percentile intervals; "
                "intersection-union test of D(first σ²) < 0 and D(last σ²) > 0",
                {"kind": "law", "kind_label": "law", "d_first": float(d[0]),
                 "d_first_interval": [float(lo[0]), float(hi[0])], "power": float(power),
                 "crossing": [float(c) for c in cross]})
    return Law(v, small.size, large.size, d, lo, hi, cross, pred, _crossing(pred, s2), power)


# ------------------------------------------------------------------------------- tables


def _fmt_iv(est, lo, hi, nd=3) -> str:
    if not np.isfinite(est):
        return "-"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{est:.{nd}f}"
    return f"{est:.{nd}f} [{lo:.{nd}f}, {hi:.{nd}f}]"


def _positions(est, lo, hi, beyond, d) -> str:
    """ρ [lo, hi] with "> d" for an end past the last rung (a clipped value is not a bound)."""
    if not np.isfinite(est):
        return "-"
    vals = [f"> {d}" if b else f"{v:.2f}" for v, b in zip((est, lo, hi), beyond)]
    if all(beyond):
        return f"> {d} (whole interval past rung {d})"
    return f"{vals[0]} [{vals[1]}, {vals[2]}]"


def _rung_text(r, d) -> str:
    if not np.isfinite(r["risk"]):
        return "-"
    if r["above"]:
        return f"{r['rung']:.2f} [{r['rung_lo']:.2f}, {r['rung_hi']:.2f}] (above L_0)"
    return _positions(r["rung"], r["rung_lo"], r["rung_hi"], r["beyond"], d)


def _fit_text(f) -> str:
    if not f["testable"]:
        return f"untestable (n={f['n']} ≤ {f['levels']} levels)"
    if not f["fits"]:
        return f"no rung fits (max p={np.nanmax(f['p']):.2g} at r={f['best']})"
    return "r ∈ {" + ",".join(map(str, f["fits"])) + "}" + f" (max p={np.nanmax(f['p']):.2f})"


def _verdict_text(counts: dict) -> str:
    return ", ".join(f"{k} x{v}" for k, v in counts.items())


def size_statistics(ds, **sel) -> dict:
    """Everything the tables and figures print for one (N, σ₀², σ_x²): the tuned sizes
    (:func:`size_data`), their clean rungs, local slopes, ladder fits, the law and the size
    table, at ``eval.level`` with ``eval.n_boot`` replicates."""
    level = _eval_opt(ds, "level", 0.95)
    n_boot = _eval_opt(ds, "n_boot", 2000)
    datas = size_data(ds, **sel)
    ladder, slope_th = _ladder(ds, **sel)
    s2 = ds["label_noise"].values
    counts = [int(ds["param_count"].sel(size=sd.size)) for sd in datas]
    opts = dict(level=level, n_boot=n_boot)
    return {
        "datas": datas, "ladder": ladder, "slope_th": slope_th, "level": level,
        "rungs": [clean_rung(sd, ladder, seed=i, **opts) for i, sd in enumerate(datas)],
        "slopes": [local_slopes(sd, s2, slope_th, seed=100 + i, **opts)
                   for i, sd in enumerate(datas)] if s2.size > 1 else None,
        "fits": [rung_fit(sd, ladder, level=level) for sd in datas],
        "law": law_test(datas, counts, ladder, s2, **opts) if s2.size > 1 else None,
        "table": size_table(ds, **sel),
    }


def summary(ds) -> str:
    """Per σ₀²: the size table (clean rung, local sensitivity, ladder fit), risk vs σ² with
    the references, best size and D(σ²), the local slopes per band and the law's verdict;
    the input-noise table when there are several σ_x² levels."""
    from iclsim.report import format_table

    lines = []
    n0 = ds["n_context"].values[0]
    s2 = ds["label_noise"].values
    text = input_text(ds)
    for s0 in ds["train_label_noise"].values:
        sel = {"n_context": n0, "train_label_noise": s0}
        st = size_statistics(ds, **sel)
        pct = f"{100 * st['level']:g} %"
        c = ds.sel(**sel)
        c = c.isel(input_noise=0) if "input_noise" in c.dims else c
        d = st["ladder"].shape[1] - 1
        rows = []
        for a, sd in enumerate(st["datas"]):
            r, f = st["rungs"][a], st["fits"][a]
            sl = st["slopes"][a] if st["slopes"] else None
            s_at = float(np.interp(r["rung"], np.arange(st["slope_th"].size), st["slope_th"])) \
                if np.isfinite(r["rung"]) else np.nan
            rows.append((size_label(ds, sd.size), int(ds["param_count"].sel(size=sd.size)),
                         f"{sd.learning_rate:g}", _verdict_text(sd.verdicts),
                         _fmt_iv(r["risk"], r["lo"], r["hi"]), _rung_text(r, d),
                         _fmt_iv(sl["slope"][0], sl["lo"][0], sl["hi"][0], 4) if sl else "-",
                         (f"{s_at:.4f}" + (f" (S_{d})" if r["beyond"][0] else ""))
                         if np.isfinite(s_at) else "-",
                         _positions(sl["rung"][0], sl["rung_lo"][0], sl["rung_hi"][0],
                                    sl["beyond"][0], d) if sl else "-", _fit_text(f)))
        title = (f"Transformer sizes at n_context={n0:g}, train σ₀²={s0:g}{text}: each size at "
                 "its best learning rate (min seed-mean clean risk over converged runs); "
                 f"[{pct} intervals: seeds bootstrapped, Monte Carlo error added]; rung ρ: "
                 "position on the LSA ladder L_0 > … > L_d (linear between rungs; > d: below "
                 "L_d); slope rung: the ρ with S_ρ = local slope (> d: steeper than S_d); "
                 f"slope: paired dR/dσ² on σ² ∈ [{s2[0]:g}, {s2[min(1, s2.size - 1)]:g}]; "
                 "ladder fit: rungs r not rejected as the whole curve L_r(σ²)")
        lines.append(format_table(rows, ("size", "params", "lr", "verdicts (this lr)",
                                         f"risk σ²={s2[0]:g}", "clean rung ρ",
                                         "local slope", "S at ρ", "slope rung",
                                         "ladder fit"), title))
        lines += _left_out(st["datas"])
        lines.append("")
        lines += _risk_rows(ds, st, sel, c, s0, text)
        if st["slopes"]:
            lines += _band_rows(ds, st, s2)
        if st["law"] is not None:
            lines += _law_lines(st["law"], s2)
        lines.append("")
        if "input_noise" in ds.dims and ds["input_noise"].size > 1:
            lines += _input_noise_table(ds, sel, s0)
    attrs = ds.attrs
    lines.append(f"{attrs.get('setting', 'transformer')} sweep {attrs.get('config_hash', '')}: "
                 f"{attrs.get('compiles', '?')} compile(s), "
                 f"{float(attrs.get('wall_time_s', 0)):.1f} s on {attrs.get('device_count', '?')}"
                 f" x {attrs.get('device_kind', '?')}")
    return "\n".join(lines)


def _left_out(datas) -> list[str]:
    """The runs not averaged in, by size (over every learning rate and init scale)."""
    bits = []
    for sd in datas:
        other = {k: v for k, v in sd.all_verdicts.items() if k not in USABLE}
        if other:
            bits.append(f"size {sd.size}: {_verdict_text(other)}")
    total = sum(sum(sd.all_verdicts.values()) for sd in datas)
    conv = sum(sd.all_verdicts.get("converged", 0) for sd in datas)
    head = f"converged: {conv} of {total} runs (all learning rates)"
    return [head + ("; left out of every aggregate: " + "; ".join(bits) if bits else "")]


def _risk_rows(ds, st, sel, c, s0, text) -> list[str]:
    from iclsim.report import format_table

    s2 = ds["label_noise"].values
    tab = st["table"]
    best, support = best_size(ds, **sel)
    law = st["law"]
    rows = []
    for j, v in enumerate(s2):
        risks = [f"{tab['risk'][a, j]:.3f}±{tab['se'][a, j]:.3f}"
                 for a in range(ds["size"].size)]
        d = (_fmt_iv(law.d[j], law.lo[j], law.hi[j]) if law is not None and law.verdict
             else "-")
        rows.append((f"{v:g}", *risks, f"{float(c['bayes_risk'].sel(label_noise=v)):.3f}",
                     f"{float(c['ols_risk'].sel(label_noise=v)):.3f}",
                     "all excluded" if not np.isfinite(best[j]) else int(best[j]),
                     f"{support[j]:.2f}", int(c["best_rank"].sel(label_noise=v)), d))
    heads = [f"size {int(s)}" for s in ds["size"].values]
    dname = (f"D = R{law.large} − R{law.small}" if law is not None and law.verdict else "D")
    return [format_table(rows, ("σ²", *heads, "Bayes", "OLS", "best size", "support", "LSA r*",
                                dname),
                         f"Risk vs context label noise (train σ₀²={s0:g}{text}; mean ± SE over "
                         "converged seeds at each size's tuned lr); best size over {0: ŷ = 0} ∪ "
                         "sizes, support = bootstrap fraction; D with its interval"), ""]


def _band_rows(ds, st, s2) -> list[str]:
    from iclsim.report import format_table

    rows = []
    for j in range(s2.size - 1):
        cells = []
        for a in range(len(st["datas"])):
            sl = st["slopes"][a]
            cells.append(_fmt_iv(sl["slope"][j], sl["lo"][j], sl["hi"][j], 4))
        rows.append((f"{s2[j]:g}–{s2[j + 1]:g}", *cells))
    heads = [f"size {sd.size}" for sd in st["datas"]]
    s_th = ", ".join(f"S_{r}={v:.4f}" for r, v in enumerate(st["slope_th"]))
    return [format_table(rows, ("σ² band", *heads),
                         "Local noise sensitivity dR/dσ² per σ² band (paired on the same prompts "
                         f"and seeds; {100 * st['level']:g} % intervals); LSA: {s_th}"), ""]


def _inf_text(v, s2) -> str:
    if v == np.inf:
        return f"> {s2[-1]:g}"
    if v == -np.inf:
        return f"≤ {s2[0]:g}"
    return f"{v:.3g}" if np.isfinite(v) else "-"


def _law_lines(law, s2) -> list[str]:
    v = law.verdict
    if v is None:
        return ["law (the best size falls as σ² grows): not tested (fewer than two sizes with "
                "≥ 2 converged seeds)"]
    est, lo, hi = law.crossing
    power = "n/a" if not np.isfinite(law.power) else f"{law.power:.2f}"
    return [f"law: {v.claim}: {v.decision} at {100 * v.level:g} % — D(σ²={s2[0]:g}) = "
            f"{_fmt_iv(law.d[0], law.lo[0], law.hi[0])}, D(σ²={s2[-1]:g}) = "
            f"{_fmt_iv(law.d[-1], law.lo[-1], law.hi[-1])}; D crosses 0 at σ² = "
            f"{_inf_text(est, s2)} [{_inf_text(lo, s2)}, {_inf_text(hi, s2)}]",
            f"     LSA ladder at the two clean rungs predicts D(σ²={s2[0]:g}) = "
            f"{law.predicted[0]:.3f}, D(σ²={s2[-1]:g}) = {law.predicted[-1]:.3f}, crossing at "
            f"σ² = {_inf_text(law.predicted_crossing, s2)}; power of this run to find the law "
            f"if D were that prediction: {power}"]


def _input_noise_table(ds, sel, s0) -> list[str]:
    """Risk vs context input noise σ_x² per size at the first σ², least squares, the LSA's
    R_r*(σ², σ_x²), the best size with support and the LSA's r*."""
    from iclsim.report import format_table

    sx2 = ds["input_noise"].values
    v0 = ds["label_noise"].values[0]
    tabs = [size_table(ds, **sel, input_noise=u) for u in sx2]
    best, support = best_size(ds, axis="input_noise", **sel, label_noise=v0)
    c = ds.sel(**sel, label_noise=v0)
    rows = []
    for b, u in enumerate(sx2):
        risks = [f"{tabs[b]['risk'][a, 0]:.3f}±{tabs[b]['se'][a, 0]:.3f}"
                 for a in range(ds["size"].size)]
        ladder = c["ladder_risk"].sel(input_noise=u)
        r_star = int(c["best_rank"].sel(input_noise=u))
        rows.append((f"{u:g}", *risks, f"{float(c['ols_risk'].sel(input_noise=u)):.3f}",
                     f"{float(ladder.sel(rank_all=r_star)):.3f}",
                     "all excluded" if not np.isfinite(best[b]) else int(best[b]),
                     f"{support[b]:.2f}", r_star))
    heads = [f"size {int(s)}" for s in ds["size"].values]
    title = (f"Risk vs context input noise σ_x² at σ²={v0:g} (train σ₀²={s0:g}); LSA: the "
             "rank-r* optimum's risk R_r*(σ², σ_x²) (Theorem B(b)); no Bayes floor with input "
             "noise (not closed-form)")
    return [format_table(rows, ("σ_x²", *heads, "OLS", "LSA R_r*", "best size", "support",
                                "LSA r*"), title), ""]
