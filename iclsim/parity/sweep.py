"""Setting 2 as a sweep: the TOML schema, grid → groups, assessment, labelled dataset.

Theory: ``docs/theory/parity.md`` (in-context sparse parity, m attention heads).

Grid axes (``[axes]``): ``n_context`` N (static: one compiled program per N),
``heads`` m, ``seed``, ``learning_rate``, ``init_scale`` (traced: one program for
all of them; heads are padded to ``m_max`` and masked).  Evaluation grid
(``[eval]``): context label flips p × context bit flips q, i.e. the context
signal μ = (1 − 2p)(1 − 2q)^k of Theorem D.  Training is always on clean prompts;
the noisy evaluation compares the clean-trained models with R_m(μ)
((3) of docs/theory/parity.md).
See ``docs/sweeps.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from iclsim.engine import analysis as A
from iclsim.engine.config import CommonAxes, CommonEval, CommonSweep, CommonTrain, ConfigError, spec
from iclsim.engine.setting import Runs, Setting, axis_values
from iclsim.engine.trainer import SCHEDULES
from iclsim.parity import oracle
from iclsim.parity.training import (
    MODES,
    PROTOCOLS,
    VERDICTS,
    ParityStatic,
    assess_runs,
    evaluate,
    parity_trainer,
)

__all__ = ["ParitySweepConfig", "PARITY", "RUN_AXES", "VERDICT_CODES", "CANONICAL_PI"]

#: The run axes of a parity sweep, in the order of the run index (one trained model per
#: combination).
RUN_AXES = ("n_context", "heads", "seed", "learning_rate", "init_scale")
VERDICT_CODES = tuple(VERDICTS)
#: π of the canonical example of docs/theory/parity.md (K = 6, k = 2, N = 16).
CANONICAL_PI = (0.40, 0.25, 0.15, 0.10, 0.06, 0.04)
PI_FAMILIES = ("canonical", "explicit", "geometric", "power_law")


@dataclass(frozen=True)
class DataConfig:
    family: str = spec("canonical", "how the importances π₁ ≥ … ≥ π_K are given (canonical: "
                       "the spec's (0.40, 0.25, 0.15, 0.10, 0.06, 0.04))", choices=PI_FAMILIES)
    pi: tuple[float, ...] = spec(CANONICAL_PI, "explicit π (family = explicit): decreasing, "
                                 "sums to 1", lo=0.0, hi=1.0, min_len=1)
    K: int = spec(6, "number of features K (geometric, power_law)", lo=1, hi=64)
    ratio: float = spec(0.6, "geometric: π_j ∝ ratio^(j−1)", lo=1e-6, hi=1.0)
    exponent: float = spec(1.0, "power_law: π_j ∝ j^(−exponent)", lo=0.0, hi=50.0)
    k: int = spec(2, "parity degree k (bits per feature block)", lo=1, hi=16)
    distractor_bits: int = spec(0, "D₀: bits that no task uses", lo=0, hi=1024)

    def __post_init__(self):
        if self.family == "explicit":
            try:
                oracle.check_pi(self.pi, "data.pi")
            except ValueError as exc:
                raise ConfigError(str(exc).replace("data.pi", "data.pi:", 1)) from None

    def importances(self) -> np.ndarray:
        """π (K,), sorted decreasing, summing to 1."""
        if self.family == "canonical":
            return np.asarray(CANONICAL_PI, float)
        if self.family == "explicit":
            return np.asarray(self.pi, float)
        j = np.arange(1, self.K + 1, dtype=float)
        weights = self.ratio ** (j - 1) if self.family == "geometric" else j ** (-self.exponent)
        return weights / weights.sum()


@dataclass(frozen=True)
class ModelConfig:
    m_max: int = spec(0, "padded head count (0: the largest head count of the sweep)", lo=0)


@dataclass(frozen=True)
class TrainConfig(CommonTrain):
    mode: str = spec("population", "population: exact loss (5); monte_carlo: fresh prompts",
                     choices=MODES)
    protocol: str = spec("progressive", "progressive: add heads one at a time (earlier heads "
                         "frozen); joint: all heads together (collapses for m >= 2)",
                         choices=PROTOCOLS)
    steps: int = spec(6000, "optimizer steps per run (progressive: split into m equal phases)",
                      lo=1, hi=10_000_000)
    batch: int = spec(256, "prompts per step (monte_carlo)", lo=1, hi=1_000_000)
    loo: bool = spec(True, "monte_carlo: leave-one-out loss over N + 1 examples")
    chunk_steps: int = spec(2000, "steps per checkpointed chunk", lo=1, key=False)
    schedule: str = spec("cosine", "learning-rate schedule (restarts in each progressive phase)",
                         choices=SCHEDULES)
    adam_b1: float | None = spec(None, "Adam β1 (unset: 0.9 in population mode, 0.99 in "
                                 "monte_carlo mode)", lo=0.0, hi=0.9999)
    readout_warmup: float = spec(0.1, "progressive: fraction of each phase in which only the "
                                 "readouts train", lo=0.0, hi=0.9)
    lbfgs_fraction: float | None = spec(None, "population: fraction of the steps (the last) run "
                                        "by L-BFGS on the exact loss (unset: the training "
                                        "default, 0.25)", lo=0.0, hi=0.9)


@dataclass(frozen=True)
class AxesConfig(CommonAxes):
    heads: tuple[int, ...] = spec((1, 2, 3, 4, 5, 6), "head counts m (1..K)", lo=1, min_len=1)
    learning_rate: tuple[float, ...] = spec((0.1,), "learning rates", lo=1e-12, min_len=1)
    init_scale: tuple[float, ...] = spec((0.0,), "init noise scale of logits and readouts "
                                         "(progressive: 0, each head starts uniform on the "
                                         "uncovered bits; joint: e.g. 0.1)", lo=0.0, min_len=1)
    n_context: tuple[int, ...] = spec((16,), "context lengths N (each N compiles once)", lo=1,
                                      hi=100_000, min_len=1)


@dataclass(frozen=True)
class EvalConfig(CommonEval):
    label_flip: tuple[float, ...] = spec((0.0,), "context label-flip probabilities p", lo=0.0,
                                         hi=0.5, min_len=1)
    bit_flip: tuple[float, ...] = spec((0.0,), "context bit-flip probabilities q", lo=0.0,
                                       hi=0.5, min_len=1)
    n_prompts: int = spec(65536, "held-out prompts per run and (p, q) level", lo=2,
                          hi=1_000_000_000)
    test_prompts: int = spec(65536, "held-out clean prompts per run for test_risk", lo=2,
                             hi=1_000_000_000)


@dataclass(frozen=True)
class ParitySweepConfig(CommonSweep):
    setting: str = spec("parity", "which setting", choices=("parity",))
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    axes: AxesConfig = AxesConfig()
    eval: EvalConfig = EvalConfig()

    def __post_init__(self):
        n_features = self.data.importances().size
        bad = [m for m in self.axes.heads if m > n_features]
        if bad:
            raise ConfigError(
                f"axes.heads: {bad[0]} is out of range; allowed 1..K = 1..{n_features}")
        if self.model.m_max and self.model.m_max < max(self.axes.heads):
            raise ConfigError(f"model.m_max: {self.model.m_max} is below the largest head count "
                              f"{max(self.axes.heads)}")
        if self.model.m_max > n_features:
            raise ConfigError(
                f"model.m_max: {self.model.m_max} is out of range; allowed 0..K = 0..{n_features}")
        if self.train.protocol == "joint" and 0.0 in self.axes.init_scale:
            raise ConfigError("axes.init_scale: 0 with train.protocol = 'joint' starts every "
                              "head identical (no symmetry breaking); use e.g. 0.1")
        for name in ("label_flip", "bit_flip"):
            values = getattr(self.eval, name)
            if len(set(values)) != len(values):
                raise ConfigError(f"eval.{name}: values must be distinct, got {list(values)}")

    def pi(self) -> np.ndarray:
        return self.data.importances()

    def axis_values(self) -> dict:
        return axis_values(self, PARITY)


def _m_max(cfg: ParitySweepConfig) -> int:
    return cfg.model.m_max or max(cfg.axes.heads)


def _static(cfg: ParitySweepConfig, n_context: int) -> ParityStatic:
    mc = cfg.train.mode == "monte_carlo"
    return ParityStatic(
        n_features=int(cfg.pi().size), k=cfg.data.k, n_context=int(n_context), m_max=_m_max(cfg),
        distractor_bits=cfg.data.distractor_bits, mode=cfg.train.mode,
        protocol=cfg.train.protocol, steps=cfg.train.steps, batch=cfg.train.batch if mc else 1,
        loo=cfg.train.loo, schedule=cfg.train.schedule,
        final_lr_fraction=cfg.train.final_lr_fraction, train_noise=False,
        adam_b1=cfg.train.adam_b1, readout_warmup=cfg.train.readout_warmup,
        lbfgs_fraction=None if mc else cfg.train.lbfgs_fraction,
    )


def _hyper(cfg: ParitySweepConfig, runs: Runs) -> dict:
    """Per-run traced values: all heads, seeds, learning rates, init scales share a program."""
    return {
        "heads": runs["heads"].astype(np.int32),
        "learning_rate": runs["learning_rate"].astype(float),
        "init_scale": runs["init_scale"].astype(float),
        "label_flip": np.zeros(len(runs)),
        "bit_flip": np.zeros(len(runs)),
    }


def _data(cfg: ParitySweepConfig, static: ParityStatic):
    return {"pi": jnp.asarray(cfg.pi(), jnp.result_type(float))}


def _noise_grid(cfg):
    """(p, q) meshgrid of the evaluation, shape (len(label_flip), len(bit_flip))."""
    return np.meshgrid(np.asarray(cfg.eval.label_flip, float),
                       np.asarray(cfg.eval.bit_flip, float), indexing="ij")


def assess(cfg: ParitySweepConfig, static: ParityStatic, runs: Runs, params, loss, key):
    """Assess the trained runs of one group.

    Per run: attention α, block masses, readout c, exact clean loss (5), held-out
    MC risk, verdict (:func:`iclsim.parity.training.classify_runs`), and on the
    (p, q) grid both the MC risk on noisy prompts (``eval_risk`` ± ``eval_se``) and
    the exact loss (5) of the trained α, c at μ = (1 − 2p)(1 − 2q)^k
    (``eval_exact``).  Heads h >= m of an m-head run are NaN.
    """
    pi = cfg.pi()
    k, d0 = cfg.data.k, cfg.data.distractor_bits
    n = int(static.n_context)
    heads = runs["heads"]
    out = assess_runs(params, loss, pi, n, k, heads, distractor_bits=d0, eval_key=key,
                      eval_prompts=cfg.eval.test_prompts)
    p, q = _noise_grid(cfg)
    mean, se = evaluate(jax.random.fold_in(key, 1), params, pi, n, k, label_flip=p.ravel(),
                        bit_flip=q.ravel(), distractor_bits=d0, n_prompts=cfg.eval.n_prompts,
                        batch=cfg.eval.batch)
    n_runs = len(runs)
    alpha, mass, readout = out["alpha"].copy(), out["block_mass"].copy(), out["readout"].copy()
    mask = np.asarray(params["head_mask"], float)
    exact = np.full((n_runs, p.size), np.nan)
    for i in np.flatnonzero(out["finite"]):
        m = int(heads[i])
        c = readout[i, :m] * mask[i, :m]
        for j, (pj, qj) in enumerate(zip(p.ravel(), q.ravel())):
            exact[i, j] = oracle.population_loss(alpha[i, :m], c, pi, n, k, label_flip=pj,
                                                 bit_flip=qj, distractor_bits=d0)
    inactive = np.arange(alpha.shape[1])[None, :] >= heads[:, None]
    alpha[inactive] = np.nan
    mass[inactive] = np.nan
    readout[inactive] = np.nan
    block = np.where(inactive, -1, np.argmax(np.nan_to_num(mass, nan=-1.0), axis=2))
    shape = (n_runs, *p.shape)
    return {
        "risk": out["risk"], "test_risk": out["test_risk"], "test_se": out["test_se"],
        "verdict": out["verdict"], "diverged": ~out["finite"], "attention": alpha,
        "block_mass": mass, "readout": readout, "assigned_block": block.astype(np.int64),
        "eval_risk": mean.reshape(shape), "eval_se": se.reshape(shape),
        "eval_exact": exact.reshape(shape),
    }


def run_vars(cfg: ParitySweepConfig) -> dict:
    noise = ("label_flip", "bit_flip")
    return {
        "risk": ((), {"long_name": "exact clean population loss (5) of the trained model"}),
        "test_risk": ((), {"long_name": "Monte Carlo risk on held-out clean prompts"}),
        "test_se": ((), {"long_name": "standard error of test_risk"}),
        "attention": (("head", "bit"), {"long_name": "trained attention α_h = softmax(q_h) "
                                        "(NaN: head h >= m)"}),
        "block_mass": (("head", "block"), {"long_name": "attention mass of head h on block B_j "
                                           "(NaN: h >= m)"}),
        "readout": (("head",), {"long_name": "trained readout c_h (NaN: h >= m)"}),
        "assigned_block": (("head",), {"long_name": "argmax_j of head h's block mass (0-based; "
                                       "-1: h >= m)"}),
        "eval_risk": (noise, {"long_name": "Monte Carlo risk on prompts with noisy context"}),
        "eval_se": (noise, {"long_name": "standard error of eval_risk"}),
        "eval_exact": (noise, {"long_name": "exact loss (5) of the trained α, c at context "
                               "signal μ"}),
    }


def _fine(values, points=201):
    return np.linspace(0.0, max(float(np.max(values)), 1e-9), points)


def oracle_vars(cfg: ParitySweepConfig, coords: dict):
    """The theory on the simulation's named axes (float64, :mod:`iclsim.parity.oracle`)."""
    axes = {name: coords[name] for name in RUN_AXES}
    pi = cfg.pi()
    n_features, k = pi.size, cfg.data.k
    noise = ("label_flip", "bit_flip")
    data_vars = {}
    # Oracle values on the same axes (float64, iclsim.parity.oracle).
    ns = axes["n_context"]
    p, q = (np.asarray(v, float) for v in (cfg.eval.label_flip, cfg.eval.bit_flip))
    pg, qg = _noise_grid(cfg)
    mu = oracle.signal(pg, qg, k)
    heads_all = np.arange(n_features + 1)
    risks = np.stack([oracle.optimal_risks(pi, int(n), label_flip=pg, bit_flip=qg, k=k)
                      for n in ns])  # (N, p, q, K+1)
    best = np.array([[[oracle.best_heads(pi, int(n), label_flip=a, bit_flip=b, k=k).heads
                       for b in q] for a in p] for n in ns])
    fine_p, fine_q = _fine(p), _fine(q)
    theory_label = np.stack([oracle.optimal_risks(pi, int(n), label_flip=fine_p, bit_flip=q[0],
                                                  k=k).T for n in ns])
    theory_bit = np.stack([oracle.optimal_risks(pi, int(n), label_flip=p[0], bit_flip=fine_q,
                                                k=k).T for n in ns])
    data_vars.update({
        "optimal_risk": (("n_context",) + noise + ("heads_all",), risks,
                         {"long_name": "R_m(μ): risk of the clean m-head optimum at context "
                          "signal μ (Theorem D, spec (3))"}),
        "clean_risk": (("n_context", "heads_all"),
                       np.stack([oracle.optimal_risks(pi, int(n)) for n in ns]),
                       {"long_name": "R_m (Theorem C, spec (2))"}),
        "best_heads": (("n_context",) + noise, best,
                       {"long_name": "m*: smallest minimiser of R_m(μ) over m = 0..K"}),
        "signal": (noise, mu, {"long_name": "context signal μ = (1 − 2p)(1 − 2q)^k"}),
        "gamma": (("n_context", "block"), np.stack([oracle.optimal_readout(pi, int(n))
                                                     for n in ns]),
                  {"long_name": "optimal readout γ_j = Nπ_j/((N − 1)π_j + 1) (spec (1))"}),
        "thresholds": (("n_context", "block"), np.stack([oracle.thresholds(pi, int(n))
                                                          for n in ns]),
                       {"long_name": "μ*_j: feature j lowers the risk iff μ > μ*_j"}),
        "pi": (("block",), pi, {"long_name": "feature importance π_j"}),
        "theory_risk_label": (("n_context", "heads_all", "label_flip_fine"), theory_label,
                              {"long_name": f"R_m(μ) on a fine p grid at q = {q[0]:g}"}),
        "theory_risk_bit": (("n_context", "heads_all", "bit_flip_fine"), theory_bit,
                            {"long_name": f"R_m(μ) on a fine q grid at p = {p[0]:g}"}),
    })
    data_vars["trivial_risk"] = ((), 1.0, {"long_name": "risk of ŷ = 0 (m = 0): E[y_q²] = 1"})
    n_bits = n_features * k + cfg.data.distractor_bits
    coords = {
        "label_flip": p, "bit_flip": q, "head": np.arange(_m_max(cfg)),
        "block": np.arange(n_features), "bit": np.arange(n_bits), "heads_all": heads_all,
        "label_flip_fine": fine_p, "bit_flip_fine": fine_q,
    }
    attrs = {"k": k, "distractor_bits": cfg.data.distractor_bits}
    return data_vars, coords, attrs


def _fmt(v, digits=5):
    return "nan" if not np.isfinite(v) else f"{v:.{digits}f}"


def simulated_best_heads(ds, n, label_flip, bit_flip, var="eval_risk", **slice_):
    """argmin over {0} ∪ trained m of the mean (non-diverged) ``var`` at one (N, p, q).

    :func:`iclsim.engine.setting.best_scale` at one point (m = 0 is ŷ = 0 with risk
    E[y_q²] = 1); -1 when every run diverged.  ``slice_`` fixes e.g. ``learning_rate``.
    """
    return A.best_scale_at(ds, var, n_context=n, label_flip=label_flip, bit_flip=bit_flip,
                           **slice_)


def _training_table(ds, sel):
    from iclsim.report import format_table

    ok = ~ds["diverged"]
    rows = []
    for m in ds["heads"].values:
        cell = ds.sel(heads=m, **sel)
        good = ok.sel(heads=m, **sel).values
        verdicts = cell["verdict"].values
        counts = A.verdict_counts(verdicts)
        vtext = A.verdict_text(verdicts)
        risk = cell["risk"].values[good]
        peak = cell["block_mass"].values[good][:, :int(m)].max(axis=-1)
        rows.append((
            int(m), float(ds["clean_risk"].sel(n_context=sel["n_context"], heads_all=m)),
            float(np.min(risk)) if len(risk) else float("nan"),
            float(np.median(risk)) if len(risk) else float("nan"),
            float(peak.min()) if peak.size else float("nan"),
            f"{counts.get('optimum_reached', 0)}/{len(verdicts)}", vtext,
        ))
    title = (f"N={sel['n_context']}, lr={sel['learning_rate']:g}, init_scale="
             f"{sel['init_scale']:g}: trained m-head models vs the optimum R_m (Theorem C); "
             "risk = exact loss (5) of the trained model; min mass = smallest top block mass "
             "of a head")
    return format_table(rows, ("m", "R_m", "best risk", "median risk", "min mass", "success",
                               "verdicts"), title)


def _noise_table(ds, sel):
    from iclsim.report import format_table

    ok = ~ds["diverged"].sel(**sel)
    heads = ds["heads"].values
    rows = []
    for p in ds.label_flip.values:
        for q in ds.bit_flip.values:
            at = dict(n_context=sel["n_context"], label_flip=p, bit_flip=q)
            sim = ds["eval_risk"].sel(**sel, label_flip=p, bit_flip=q).where(ok)
            se = ds["eval_se"].sel(**sel, label_flip=p, bit_flip=q)
            cells = []
            for m in heads:
                mean = float(sim.sel(heads=m).mean().values)
                err = float(A.seed_mean_error(sim.sel(heads=m).values, se.sel(heads=m).values,
                                               prompts="shared"))
                theo = float(ds["optimal_risk"].sel(heads_all=m, **at))
                z = (mean - theo) / err if err > 0 else float("nan")
                cells.append(f"{_fmt(mean, 4)}/{_fmt(theo, 4)} ({z:+.1f})")
            rows.append((float(p), float(q), float(ds["signal"].sel(label_flip=p, bit_flip=q)),
                         *cells))
    return format_table(
        rows, ("p", "q", "μ", *[f"m={m} sim/theory (z)" for m in heads]),
        f"N={sel['n_context']}, lr={sel['learning_rate']:g}, init_scale={sel['init_scale']:g}: "
        "risk on noisy prompts, simulation (MC, mean over non-diverged seeds) / theory R_m(μ) "
        "(Theorem D), z = (sim − theory)/error, the error of the seed-mean: seed variance and "
        "Monte Carlo error combined")


def _best_table(ds, sel):
    from iclsim.report import format_table

    n = sel["n_context"]
    slice_ = {k: v for k, v in sel.items() if k != "n_context"}
    trained = np.concatenate([[0], ds["heads"].values])
    partial = set(trained) != set(ds["heads_all"].values)
    rows = []
    for p in ds.label_flip.values:
        for q in ds.bit_flip.values:
            at = dict(n_context=n, label_flip=p, bit_flip=q)
            sim_best = simulated_best_heads(ds, n, p, q, **slice_)
            exact_best = simulated_best_heads(ds, n, p, q, var="eval_exact", **slice_)
            pred = int(ds["best_heads"].sel(**at))
            ladder = ds["optimal_risk"].sel(**at).values
            pred_sub = int(trained[int(np.argmin(ladder[trained]))])
            target = pred_sub if partial else pred
            mark = "  <- differs" if 0 <= sim_best != target else ""
            row = [float(p), float(q), float(ds["signal"].sel(label_flip=p, bit_flip=q)),
                   "all diverged" if sim_best < 0 else sim_best,
                   "all diverged" if exact_best < 0 else exact_best]
            rows.append((*row, pred, f"{pred_sub}{mark}") if partial else
                        (*row, f"{pred}{mark}"))
    headers = ["p", "q", "μ", "best m (sim MC)", "best m (trained, (5))", "m* (theory)"]
    if partial:
        headers.append("m* over trained m ∪ {0}")
    return format_table(
        rows, headers,
        f"N={n}, lr={sel['learning_rate']:g}, init_scale={sel['init_scale']:g}: best head count "
        "under evaluation noise (sim: argmin over m = 0 (risk 1) and the trained m of the mean "
        "MC risk; trained (5): the same with the exact loss (5) of the trained weights)")


def verdict_parts(ds):
    """The verdict parts of a setting-2 result (:mod:`iclsim.engine.verdict`), on exact
    quantities: per (N, lr, init_scale) and trained m, every seed's exact clean loss (5) is
    within ``OPTIMUM_FRACTION`` of the rung gap R_{m−1} − R_m of R_m; per evaluation level
    (p, q), best m = m* over the trained m and 0, decided on ``eval_exact`` (the exact loss
    (5) of the trained α, c), UNRESOLVED when the theory's gap between m* and the runner-up
    is at most the runs' measured optimisation error there.  One cross-check part:
    ``eval_risk`` (Monte Carlo) against ``eval_exact``, Bonferroni over every (run, cell)."""
    import itertools

    from iclsim.engine import verdict as V

    method = "exact (loss (5) of the trained α, c; float64)"
    ok = ~ds["diverged"]
    parts = []
    heads = np.sort(ds["heads"].values)
    for n, lr, sc in itertools.product(ds.n_context.values, ds.learning_rate.values,
                                       ds.init_scale.values):
        sel = dict(n_context=n, learning_rate=lr, init_scale=sc)
        where = f"N={int(n)}" + (f", lr={lr:g}" if ds.learning_rate.size > 1 else "") + (
            f", init_scale={sc:g}" if ds.init_scale.size > 1 else "")
        ladder = ds["clean_risk"].sel(n_context=n).values
        for m in heads:
            good = ok.sel(heads=m, **sel).values
            excess = np.where(good, ds["risk"].sel(heads=m, **sel).values - ladder[m], np.nan)
            parts.append(V.optimum_part(
                f"m = {int(m)} reaches R_m: loss − R_m <= {V.OPTIMUM_FRACTION:g}·(R_{{m−1}} − "
                f"R_m) in every seed ({where})", excess, ladder[m - 1] - ladder[m],
                method=method, extra={"scale": int(m),
                                      "kind_label": "head counts at R_m in every seed"}))
        for p in ds.label_flip.values:
            for q in ds.bit_flip.values:
                lvl = dict(label_flip=p, bit_flip=q)
                theory_all = ds["optimal_risk"].sel(n_context=n, **lvl).values
                scales = np.concatenate([[0], heads])
                runs = np.stack([np.full(ds.seed.size, float(ds["trivial_risk"]))] + [
                    ds["eval_exact"].sel(heads=m, **sel, **lvl).where(
                        ok.sel(heads=m, **sel)).values for m in heads])
                parts.append(V.best_scale_part(
                    f"at {where}, p={p:g}, q={q:g} (m* over the trained m and 0)", scales,
                    theory_all[scales], runs, scale_name="heads", method=method,
                    extra={"label_flip": float(p), "bit_flip": float(q),
                           "kind_label": "best heads = m* at levels"}))
    parts.append(V.cross_check_part(ds["eval_risk"].where(ok).values,
                                    ds["eval_exact"].where(ok).values,
                                    ds["eval_se"].where(ok).values))
    return parts


def aggregate(cfg, ds):
    """The result with its verdict parts stored (none in a multi-host shard)."""
    from iclsim.engine import verdict as V

    if not bool(ds["present"].all()):
        return ds
    return ds.assign(V.to_vars(verdict_parts(ds)))


def _verdict_lines(ds) -> list[str]:
    from iclsim.engine import verdict as V

    parts = V.from_dataset(ds)
    parts = parts if parts is not None else verdict_parts(ds)
    lines = []
    for p in parts:
        if p.decision == V.UNRESOLVED and "resolve" in p.detail:
            lines.append(f"UNRESOLVED {p.claim}: gap {p.detail['gap']:.3g} <= optimisation "
                         f"error {p.detail['tolerance']:.3g}; to resolve: {p.detail['resolve']}")
    lines.append("Verdict rules: a head count is at its optimum when every seed's exact loss "
                 f"− R_m <= {V.OPTIMUM_FRACTION:g}·(R_(m−1) − R_m); best m = m* (over the "
                 "trained m and 0) at a level is UNRESOLVED when the theory's gap between m* "
                 "and the runner-up is <= the runs' optimisation error there (max over seeds "
                 "|exact loss − R_m(μ)|, summed over the two), else SUPPORTED iff the seed-mean "
                 "exact loss picks m*.")
    return lines + V.summary_lines(parts)


def summary(ds) -> str:
    """Per (N, learning rate, init scale): the trained models vs R_m (Theorem C: R_m, best and
    median exact risk, attention mass, successes and verdicts), their risk on noisy prompts vs
    R_m(μ) (Theorem D) and, with more than one noise level, best m (sim) vs m* (theory)."""
    lines = []
    for n in ds.n_context.values:
        for lr in ds.learning_rate.values:
            for sc in ds.init_scale.values:
                sel = dict(n_context=n, learning_rate=lr, init_scale=sc)
                lines += [_training_table(ds, sel), "", _noise_table(ds, sel), ""]
                if ds.label_flip.size > 1 or ds.bit_flip.size > 1:
                    lines += [_best_table(ds, sel), ""]
    lines += _verdict_lines(ds) + [""]
    lines.append(A.sweep_line(ds, "parity"))
    return "\n".join(lines)


def figures(ds, out_dir, formats):
    from iclsim.parity import figures as figs

    return figs.draw_all(ds, out_dir, formats)


class ParitySetting(Setting):
    """Setting 2 (m-head attention on in-context sparse parity)."""

    name = "parity"
    kind = "trained"
    config_class = ParitySweepConfig
    scale = "heads"
    tuning_axes = ("learning_rate", "init_scale")
    run_axes = RUN_AXES
    static_axes = ("n_context",)
    verdicts = VERDICT_CODES

    def static(self, cfg, n_context):
        return _static(cfg, n_context)

    hyper = staticmethod(_hyper)
    trainer = staticmethod(parity_trainer)
    data = staticmethod(_data)
    assess = staticmethod(assess)
    run_vars = staticmethod(run_vars)
    oracle = staticmethod(oracle_vars)
    summary = staticmethod(summary)
    figures = staticmethod(figures)
    aggregate = staticmethod(aggregate)
    verdict_parts = staticmethod(verdict_parts)


#: The engine setting ``parity`` (``iclsim run sweeps/parity_*.toml``).
PARITY = ParitySetting()
