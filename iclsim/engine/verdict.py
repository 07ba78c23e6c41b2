"""One verdict layer for every setting: a conclusion is data, like a ``scipy.stats`` result.

A :class:`Verdict` is one *part* of a conclusion: a claim, a decision, the number it rests
on, an interval and level when the number is estimated (``None`` when it is exact), the
method, and details a table may print.  A run's one-line summary is a :func:`fold` of its
parts:

* ``DIFFERS`` if any part is ``NOT SUPPORTED`` (``--check`` exits 1);
* ``AGREES`` only if every part is ``SUPPORTED``;
* ``UNDECIDED`` otherwise, saying how many parts are ``UNRESOLVED`` (the theory's own gap is
  below the run's measured precision) or ``INCONCLUSIVE`` (the evidence does not decide).

Parts whose ``detail["role"]`` is ``"cross-check"`` (a Monte Carlo check of an exact
evaluator) are folded and printed separately: they test the evaluator, not the theory.

The builders below serve settings whose trained models have an *exact* risk on the
evaluation grid (setting 1's reduced/block Γ, setting 2's α, c): :func:`best_scale_part`,
:func:`optimum_part`, :func:`cross_check_part`.  The parts are stored in the result as a
small table on the dimension ``verdict_part`` (:func:`to_vars`, :func:`from_dataset`), so
``iclsim show`` prints what ``iclsim run`` decided.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

__all__ = [
    "Verdict", "DECISIONS", "SUPPORTED", "NOT_SUPPORTED", "INCONCLUSIVE", "UNRESOLVED",
    "Fold", "fold", "check_exit_code", "best_scale_part", "optimum_part", "cross_check_part",
    "to_vars", "from_dataset", "OPTIMUM_FRACTION", "CROSS_CHECK_ALPHA", "summary_lines",
]

#: The part agrees with the theory.
SUPPORTED = "SUPPORTED"
#: The part contradicts the theory: the run's one line says ``DIFFERS`` (``--check`` exits 1).
NOT_SUPPORTED = "NOT SUPPORTED"
#: The evidence does not decide the part (e.g. an interval that includes the boundary).
INCONCLUSIVE = "INCONCLUSIVE"
#: The theory's own gap is below the run's measured precision: never counted either way.
UNRESOLVED = "UNRESOLVED"
#: Every decision a :class:`Verdict` may carry.
DECISIONS = (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, UNRESOLVED)

#: A run is at its optimum when its excess risk R − L_s is at most this fraction of the rung
#: gap L_{s−1} − L_s (the gain the s-th direction / head brings).
OPTIMUM_FRACTION = 0.1
#: Family-wise level of the Monte Carlo cross-check (Bonferroni over its cells).
CROSS_CHECK_ALPHA = 0.01


@dataclass(frozen=True)
class Verdict:
    """One part of a conclusion (see the module docstring)."""

    claim: str
    decision: str
    statistic: float
    interval: tuple[float, float] | None = None
    level: float | None = None
    method: str = ""
    detail: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}, got {self.decision!r}")

    @property
    def role(self) -> str:
        return str(self.detail.get("role", "verdict"))


@dataclass(frozen=True)
class Fold:
    """The summary of a list of parts: ``word`` (AGREES / DIFFERS / UNDECIDED / NONE), its
    ``line`` and the exit code of ``--check`` (1 on DIFFERS, else 0)."""

    word: str
    line: str
    exit_code: int
    counts: dict


def _counts(parts) -> dict:
    return {d: sum(1 for p in parts if p.decision == d) for d in DECISIONS}


def fold(parts, *, subject: str = "the theory") -> Fold:
    """The one-line summary of the verdict parts (cross-check parts left out).

    DIFFERS if any part is NOT SUPPORTED; AGREES only if every part is SUPPORTED;
    UNDECIDED otherwise (how many UNRESOLVED / INCONCLUSIVE); NONE without parts.
    Each kind of part (``detail["kind"]``, e.g. the best-scale levels) gets its count.
    """
    parts = [p for p in parts if p.role != "cross-check"]
    counts = _counts(parts)
    if not parts:
        return Fold("NONE", "NO VERDICT: nothing to compare with " + subject, 0, counts)
    if counts[NOT_SUPPORTED]:
        word, head = "DIFFERS", f"DIFFERS from {subject}"
    elif counts[SUPPORTED] == len(parts):
        word, head = "AGREES", f"AGREES with {subject}"
    else:
        word, head = "UNDECIDED", f"UNDECIDED against {subject}"
    kinds = {}
    for p in parts:
        kinds.setdefault(p.detail.get("kind_label", p.detail.get("kind", "parts")), []).append(p)
    bits = []
    for label, group in kinds.items():
        c = _counts(group)
        extra = ", ".join(f"{c[d]} {d}" for d in (NOT_SUPPORTED, UNRESOLVED, INCONCLUSIVE)
                          if c[d])
        bits.append(f"{label} {c[SUPPORTED]}/{len(group)}" + (f" ({extra})" if extra else ""))
    tail = ", ".join(f"{counts[d]} {d}" for d in (NOT_SUPPORTED, UNRESOLVED, INCONCLUSIVE)
                     if counts[d])
    line = (f"{head}: {'; '.join(bits)} — {counts[SUPPORTED]}/{len(parts)} parts SUPPORTED"
            + (f", {tail}" if tail else ""))
    return Fold(word, line, 1 if word == "DIFFERS" else 0, counts)


def check_exit_code(parts) -> int:
    """What ``--check`` exits with: 1 when the summary verdict is DIFFERS, else 0."""
    return fold(parts).exit_code


def _num(v) -> str:
    return f"{float(v):.4g}"


def best_scale_part(claim_at: str, scales, theory, runs, *, scale_name: str, method: str,
                    extra: dict | None = None) -> Verdict:
    """Best scale = s* at one evaluation level, decided on exact risks.

    ``scales`` (S,): the candidate scales, 0 (the trivial predictor) and the trained ones;
    ``theory`` (S,): the exact risk of the scale-s optimum at this level; ``runs``
    (S, seeds): the exact risk of each trained run at this level (NaN: diverged; the row of
    scale 0 is its exact risk, repeated).  s* is the smallest minimiser of ``theory`` over
    ``scales``; the runner-up the next best; the theory's gap g = R_ru − R_s*.  The measured
    optimisation error at scale s is δ_s = max over seeds ``|R(run) − R_s|`` (0 for scale 0).

    * UNRESOLVED if g <= δ_s* + δ_ru (the runs' optimisation error could swap the two best
      scales: agreement would be a coin flip) — with g and what would resolve it;
    * else SUPPORTED if the simulated best (argmin over scales of the seed mean, smallest
      on ties) is s*, NOT SUPPORTED otherwise.
    """
    scales = np.asarray(scales)
    theory = np.asarray(theory, float)
    runs = np.asarray(runs, float).reshape(len(scales), -1)
    order = np.argsort(theory, kind="stable")
    best, ru = int(order[0]), int(order[1])
    gap = float(theory[ru] - theory[best])
    dev = np.abs(runs - theory[:, None])
    with np.errstate(invalid="ignore"):
        delta = np.where(np.isfinite(runs).any(axis=1),
                         np.nanmax(np.where(np.isfinite(dev), dev, -np.inf), axis=1), np.inf)
    delta[scales == 0] = 0.0
    mean = np.array([np.nanmean(r) if np.isfinite(r).any() else np.inf for r in runs])
    sim_best = int(np.argmin(mean))
    tol = float(delta[best] + delta[ru])
    s_star, s_ru, s_sim = int(scales[best]), int(scales[ru]), int(scales[sim_best])
    detail = {
        "kind": "best_scale", "kind_label": f"best {scale_name} = {scale_name}* at levels",
        "theory_best": s_star, "runner_up": s_ru, "sim_best": s_sim, "gap": gap,
        "tolerance": tol, "opt_error_best": float(delta[best]),
        "opt_error_runner_up": float(delta[ru]), **(extra or {}),
    }
    if not gap > tol:
        decision = UNRESOLVED
        detail["resolve"] = (f"the optimisation error at {scale_name} {s_star} and {s_ru} "
                             f"must fall below the gap {_num(gap)} (now {_num(tol)}): more "
                             "training steps or a larger batch, or a level away from the "
                             "threshold")
    else:
        decision = SUPPORTED if s_sim == s_star else NOT_SUPPORTED
    claim = f"best {scale_name} = {s_star} {claim_at}"
    return Verdict(claim, decision, gap, None, None, method, detail)


def optimum_part(claim: str, excess, rung_gap, *, fraction: float = OPTIMUM_FRACTION,
                 method: str, se=None, n_se: float = 3.0, extra: dict | None = None) -> Verdict:
    """Every run of one scale reaches the optimum: excess R − L_s <= fraction · rung gap.

    ``excess`` (seeds,): R(run) − L_s on the training distribution (NaN: diverged, which
    does not reach); ``rung_gap``: L_{s−1} − L_s.  With ``se`` (Monte Carlo risks) the
    excess is first lowered by ``n_se`` SE.  SUPPORTED if every seed reaches, NOT SUPPORTED
    if none does, INCONCLUSIVE if some do (the theory is about the optimum; the stuck seeds
    are an optimisation failure that does not test it).  The statistic is the largest
    excess as a fraction of the rung gap; detail has the spread over seeds.
    """
    excess = np.asarray(excess, float)
    lowered = excess - (n_se * np.nan_to_num(np.asarray(se, float)) if se is not None else 0.0)
    rel = lowered / rung_gap
    reached = np.isfinite(rel) & (rel <= fraction)
    n, k = excess.size, int(reached.sum())
    decision = SUPPORTED if k == n else NOT_SUPPORTED if k == 0 else INCONCLUSIVE
    finite = excess[np.isfinite(excess)]
    detail = {
        "kind": "optimum", "kind_label": "scales at the optimum in every seed",
        "fraction": fraction, "rung_gap": float(rung_gap), "seeds": n, "reached": k,
        "diverged": int(n - np.isfinite(excess).sum()),
        "excess_min": float(finite.min()) if finite.size else math.nan,
        "excess_max": float(finite.max()) if finite.size else math.nan,
        "excess_sd": float(finite.std(ddof=1)) if finite.size > 1 else math.nan,
        **(extra or {}),
    }
    stat = float(np.max(rel)) if np.isfinite(rel).all() else math.inf
    return Verdict(claim, decision, stat, None, None, method, detail)


def cross_check_part(mc, exact, se, *, alpha: float = CROSS_CHECK_ALPHA,
                     what: str = "(run, cell)") -> Verdict:
    """The Monte Carlo evaluator against the exact risk, family-wise: Bonferroni over cells.

    z = (MC − exact)/SE per cell; the family of n cells is accepted at family-wise level
    ``alpha`` when max ``|z|`` <= z_crit = Φ⁻¹(1 − alpha/(2n)) (valid under any dependence
    between cells, e.g. the common random numbers they share).
    """
    mc, exact, se = (np.asarray(a, float).ravel() for a in (mc, exact, se))
    ok = np.isfinite(mc) & np.isfinite(exact) & np.isfinite(se) & (se > 0)
    z = (mc[ok] - exact[ok]) / se[ok]
    n = int(z.size)
    if n == 0:
        return Verdict("Monte Carlo evaluation = exact risk", INCONCLUSIVE, math.nan,
                       method="no cell with a Monte Carlo SE", detail={"role": "cross-check"})
    zcrit = NormalDist().inv_cdf(1.0 - alpha / (2.0 * n))
    zmax = float(np.max(np.abs(z)))
    decision = SUPPORTED if zmax <= zcrit else NOT_SUPPORTED
    return Verdict(
        "Monte Carlo evaluation = exact risk", decision, zmax, (-zcrit, zcrit), 1.0 - alpha,
        f"z = (MC − exact)/SE, Bonferroni over {n} {what} cells, family-wise α = {alpha:g}",
        {"role": "cross-check", "cells": n, "z_crit": zcrit,
         "within": int(np.sum(np.abs(z) <= zcrit)), "max_abs_z": zmax,
         "mean_z": float(np.mean(z)), "alpha": alpha},
    )


def cross_check_line(parts) -> str | None:
    """The separate line of the cross-check parts (None without one)."""
    checks = [p for p in parts if p.role == "cross-check"]
    if not checks:
        return None
    bits = []
    for p in checks:
        d = p.detail
        if "cells" in d:
            bits.append(f"{d['within']}/{d['cells']} cells within |z| <= {d['z_crit']:.2f} "
                        f"(max |z| = {d['max_abs_z']:.2f}; {p.method}): {p.decision}")
        else:
            bits.append(f"{p.decision} ({p.method})")
    return ("Monte Carlo cross-check of the exact evaluation (not part of the verdict): "
            + "; ".join(bits))


def summary_lines(parts, *, subject: str = "the theory") -> list[str]:
    """The verdict line, then the cross-check line (when there is one)."""
    lines = [fold(parts, subject=subject).line]
    extra = cross_check_line(parts)
    if extra:
        lines.append(extra)
    return lines


# -- storage: a small table on the dimension ``verdict_part`` -----------------------------


def to_vars(parts) -> dict:
    """xarray data variables holding ``parts`` (one row per part on ``verdict_part``)."""
    dim = ("verdict_part",)
    lo = [p.interval[0] if p.interval else math.nan for p in parts]
    hi = [p.interval[1] if p.interval else math.nan for p in parts]
    return {
        "verdict_claim": (dim, np.array([p.claim for p in parts], dtype=str),
                          {"long_name": "claim of each verdict part"}),
        "verdict_decision": (dim, np.array([p.decision for p in parts], dtype=str),
                             {"long_name": "SUPPORTED / NOT SUPPORTED / INCONCLUSIVE / "
                              "UNRESOLVED"}),
        "verdict_statistic": (dim, np.array([p.statistic for p in parts], float),
                              {"long_name": "the number the decision rests on"}),
        "verdict_interval_lo": (dim, np.array(lo, float),
                                {"long_name": "interval (NaN: exact statistic)"}),
        "verdict_interval_hi": (dim, np.array(hi, float),
                                {"long_name": "interval (NaN: exact statistic)"}),
        "verdict_level": (dim, np.array([math.nan if p.level is None else p.level
                                         for p in parts], float),
                          {"long_name": "nominal level (NaN: exact statistic)"}),
        "verdict_method": (dim, np.array([p.method for p in parts], dtype=str),
                           {"long_name": "how the statistic was computed"}),
        "verdict_detail": (dim, np.array([json.dumps(p.detail, sort_keys=True)
                                          for p in parts], dtype=str),
                           {"long_name": "details (JSON)"}),
    }


def from_dataset(ds) -> list[Verdict] | None:
    """The parts stored in a result by :func:`to_vars` (None if it holds none)."""
    if "verdict_decision" not in ds:
        return None
    out = []
    for i in range(ds.sizes["verdict_part"]):
        lo, hi = (float(ds[v].values[i]) for v in ("verdict_interval_lo",
                                                   "verdict_interval_hi"))
        level = float(ds["verdict_level"].values[i])
        out.append(Verdict(
            str(ds["verdict_claim"].values[i]), str(ds["verdict_decision"].values[i]),
            float(ds["verdict_statistic"].values[i]),
            None if math.isnan(lo) else (lo, hi), None if math.isnan(level) else level,
            str(ds["verdict_method"].values[i]), json.loads(str(ds["verdict_detail"].values[i])),
        ))
    return out
