"""Setting 1 as a sweep: the TOML schema, grid → groups, assessment, labelled dataset.

Grid axes (``[axes]``): ``n_context`` (static: one compiled program per N),
``rank``, ``seed``, ``learning_rate``, ``init_scale``, ``train_label_noise``
(all traced: one program for all of them).  Evaluation grid (``[eval]``):
context ``label_noise`` σ² × ``input_noise`` σ_x².  See ``docs/sweeps.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from iclsim.engine import analysis as A
from iclsim.engine.config import CommonAxes, CommonEval, CommonSweep, CommonTrain, ConfigError, spec
from iclsim.engine.setting import Runs, Setting, axis_values
from iclsim.linear import oracle
from iclsim.linear.model import INITS, PARAMETRIZATIONS
from iclsim.linear.training import (
    MODES, PROTOCOL, SAMPLERS, U_BALANCES, TrainStatic, assess_runs, evaluate, linear_trainer,
)

__all__ = ["LinearSweepConfig", "LINEAR", "RUN_AXES", "VERDICT_CODES"]

RUN_AXES = ("n_context", "rank", "seed", "learning_rate", "init_scale", "train_label_noise")
VERDICT_CODES = ("optimum_reached", "stuck_at_rank_k", "not_converged", "diverged")
CANONICAL = (4.0, 2.5, 1.5, 1.0, 0.6, 0.35, 0.2, 0.1)


@dataclass(frozen=True)
class SpectrumConfig:
    family: str = spec("explicit", "how the eigenvalues λ₁ ≥ … ≥ λ_d of Λ are given",
                       choices=("explicit", "power_law", "linear", "geometric"))
    values: tuple[float, ...] = spec(CANONICAL, "explicit eigenvalues λ₁ ≥ … ≥ λ_d "
                                     "(family = explicit)", lo=1e-6, hi=1e6, min_len=1)
    d: int = spec(8, "dimension d (families other than explicit)", lo=1, hi=512)
    top: float = spec(4.0, "λ₁ (families other than explicit)", lo=1e-6, hi=1e6)
    bottom: float = spec(0.1, "λ_d (linear, geometric)", lo=1e-6, hi=1e6)
    exponent: float = spec(1.0, "power law λ_i = top · i^(−exponent)", lo=0.0)
    rotation: str = spec("random", "eigenbasis U of Λ = U diag(λ) Uᵀ",
                         choices=("random", "identity"))
    rotation_seed: int = spec(0, "seed of the random rotation", lo=0)

    def __post_init__(self):
        if self.family in ("linear", "geometric") and self.bottom > self.top:
            raise ConfigError(f"spectrum.bottom: {self.bottom} must be <= spectrum.top ({self.top})")
        if self.family == "explicit" and list(self.values) != sorted(self.values, reverse=True):
            raise ConfigError(f"spectrum.values: must be decreasing (λ₁ ≥ … ≥ λ_d), got "
                              f"{list(self.values)}")
        lam = self.eigenvalues()
        if lam[-1] / lam[0] < 1e-10:
            raise ConfigError(f"spectrum: λ_d/λ₁ = {lam[-1] / lam[0]:.3g} is below 1e-10 "
                              "(Λ is numerically singular); raise the smallest eigenvalue")

    def eigenvalues(self) -> np.ndarray:
        """λ sorted in decreasing order."""
        i = np.arange(1, self.d + 1, dtype=float)
        if self.family == "explicit":
            lam = np.asarray(self.values, float)
        elif self.family == "power_law":
            lam = self.top * i ** (-self.exponent)
        elif self.family == "linear":
            lam = np.linspace(self.top, self.bottom, self.d)
        else:
            lam = np.geomspace(self.top, self.bottom, self.d)
        return np.sort(lam)[::-1]

    def rotation_matrix(self) -> np.ndarray:
        d = self.eigenvalues().size
        if self.rotation == "identity":
            return np.eye(d)
        rng = np.random.default_rng(self.rotation_seed)
        q, r = np.linalg.qr(rng.standard_normal((d, d)))
        return q * np.sign(np.diag(r))

    def covariance(self) -> np.ndarray:
        u = self.rotation_matrix()
        cov = (u * self.eigenvalues()) @ u.T
        return 0.5 * (cov + cov.T)


@dataclass(frozen=True)
class ModelConfig:
    parametrization: str = spec(PROTOCOL.parametrization, "LSA parametrisation",
                                choices=PARAMETRIZATIONS)
    init: str = spec("random", "initialisation (block: full LSA only)", choices=INITS)
    r_max: int = spec(0, "padded rank (0: the largest rank of the sweep)", lo=0)


@dataclass(frozen=True)
class TrainConfig(CommonTrain):
    mode: str = spec(PROTOCOL.mode, "population: exact risk; monte_carlo: fresh prompts",
                     choices=MODES)
    batch: int = spec(256, "prompts per step (monte_carlo)", lo=1, hi=1_000_000)
    average_tail: float = spec(PROTOCOL.average_tail, "Polyak average over this final fraction "
                               "of steps", lo=0.0, hi=0.99)
    adam_b1: float = spec(PROTOCOL.adam_b1, "Adam β1 (0.99 averages gradient noise: the weak directions of "
                          "Monte Carlo training converge within 5 %)", lo=0.0, hi=0.9999)
    sampler: str = spec(PROTOCOL.sampler, "monte_carlo prompts: statistic (exactly what the LSA reads, "
                        "O(d²) per prompt) or tokens (every example drawn; the reference)",
                        choices=SAMPLERS)
    u_lr_scale: float = spec(1.0, "block: u's learning rate as a fraction of the others' (0: no "
                             "gradient steps on u; 0.1 does not stop u's drift, see "
                             "train.u_balance)", lo=0.0, hi=1.0)
    u_balance: str = spec("flow", "block: after every Adam step rescale (u, A, B) → (cu, A/√c, "
                          "B/√c), Γ unchanged, to the balance u² − (‖A‖² + ‖B‖²)/2 that gradient "
                          "flow keeps (flow; without it u drifts to ~0.1 and ranks 7, 8 stall on "
                          "a plateau) or leave u free (none)", choices=U_BALANCES)
    loo: bool = spec(PROTOCOL.loo, "monte_carlo, reduced/block: each of N + 1 examples is the query "
                     "of the other N (same objective, much less gradient noise; tokens sampler)")


@dataclass(frozen=True)
class AxesConfig(CommonAxes):
    rank: tuple[int, ...] = spec((1, 2, 3, 4, 5, 6, 7, 8), "ranks r (1..d)", lo=1, min_len=1)
    learning_rate: tuple[float, ...] = spec((PROTOCOL.learning_rate,), "learning rates",
                                            lo=1e-12, min_len=1)
    init_scale: tuple[float, ...] = spec((PROTOCOL.init_scale,), "init scales", lo=0.0,
                                         min_len=1)
    train_label_noise: tuple[float, ...] = spec((0.0,), "pretraining context label noise σ₀²",
                                                lo=0.0, hi=1e6, min_len=1)


@dataclass(frozen=True)
class EvalConfig(CommonEval):
    sampler: str = spec("statistic", "evaluation prompts: statistic (exact, O(d²) per prompt) "
                        "or tokens", choices=SAMPLERS)
    label_noise: tuple[float, ...] = spec((0.0,), "evaluation context label noise σ²", lo=0.0,
                                          hi=1e6, min_len=1)
    input_noise: tuple[float, ...] = spec((0.0,), "evaluation context input noise σ_x²", lo=0.0,
                                          hi=1e6, min_len=1)


@dataclass(frozen=True)
class LinearSweepConfig(CommonSweep):
    setting: str = spec("linear", "which setting", choices=("linear",))
    spectrum: SpectrumConfig = SpectrumConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    axes: AxesConfig = AxesConfig()
    eval: EvalConfig = EvalConfig()

    def __post_init__(self):
        d = self.spectrum.eigenvalues().size
        bad = [r for r in self.axes.rank if r > d]
        if bad:
            raise ConfigError(f"axes.rank: {bad[0]} is out of range; allowed 1..d = 1..{d}")
        if self.model.r_max and self.model.r_max < max(self.axes.rank):
            raise ConfigError(
                f"model.r_max: {self.model.r_max} is below the largest rank {max(self.axes.rank)}")
        if self.model.r_max > d:
            raise ConfigError(f"model.r_max: {self.model.r_max} is out of range; allowed 0..{d}")
        if self.train.mode == "population" and self.model.parametrization == "full":
            raise ConfigError("model.parametrization: 'full' needs train.mode = 'monte_carlo' "
                              "(population mode trains the reduced predictor's exact risk)")
        if self.train.loo and (self.train.sampler != "tokens"
                               or self.model.parametrization == "full"):
            raise ConfigError("train.loo: true needs train.sampler = 'tokens' and "
                              "model.parametrization = 'reduced' or 'block'")
        if self.model.init == "block" and self.model.parametrization != "full":
            raise ConfigError("model.init: 'block' is for model.parametrization = 'full' only")

    def axis_values(self) -> dict:
        return axis_values(self, LINEAR)


def _static(cfg: LinearSweepConfig, n_context: int) -> TrainStatic:
    d = cfg.spectrum.eigenvalues().size
    return TrainStatic(
        d=d, n_context=int(n_context), r_max=cfg.model.r_max or max(cfg.axes.rank),
        mode=cfg.train.mode, parametrization=cfg.model.parametrization, init=cfg.model.init,
        steps=cfg.train.steps, batch=cfg.train.batch if cfg.train.mode == "monte_carlo" else 1,
        schedule=cfg.train.schedule, final_lr_fraction=cfg.train.final_lr_fraction,
        average_tail=cfg.train.average_tail,
        train_noise=any(s > 0 for s in cfg.axes.train_label_noise), adam_b1=cfg.train.adam_b1,
        sampler=cfg.train.sampler, loo=cfg.train.loo, u_lr_scale=cfg.train.u_lr_scale,
        u_balance=cfg.train.u_balance,
    )


def _hyper(cfg: LinearSweepConfig, runs: Runs) -> dict:
    return {
        "rank": runs["rank"].astype(np.int32),
        "learning_rate": runs["learning_rate"].astype(float),
        "init_scale": runs["init_scale"].astype(float),
        "label_noise": runs["train_label_noise"].astype(float),
        "input_noise": np.zeros(len(runs)),
    }


def _data(cfg: LinearSweepConfig, static: TrainStatic):
    cov = cfg.spectrum.covariance()
    dtype = jnp.result_type(float)
    return {"cov": jnp.asarray(cov, dtype), "factor": jnp.asarray(np.linalg.cholesky(cov), dtype)}


def assess(cfg: LinearSweepConfig, static: TrainStatic, runs: Runs, params, loss, key):
    """Assess trained runs: Γ, risks, verdicts, the noisy-evaluation grid."""
    cov = cfg.spectrum.covariance()
    n = int(static.n_context)
    out = assess_runs(params, loss, cov, n, runs["rank"], runs["train_label_noise"],
                      parametrization=cfg.model.parametrization, eval_key=key,
                      eval_prompts=cfg.eval.n_prompts, sampler=cfg.eval.sampler,
                      mode=cfg.train.mode)
    s2, sx2 = np.meshgrid(cfg.eval.label_noise, cfg.eval.input_noise, indexing="ij")
    mean, se = evaluate(jax.random.fold_in(key, 1), params, cov, n, label_noise=s2.ravel(),
                        input_noise=sx2.ravel(), n_prompts=cfg.eval.n_prompts,
                        batch=cfg.eval.batch, sampler=cfg.eval.sampler)
    shape = (len(runs), *s2.shape)
    if cfg.model.parametrization == "full":
        exact = mean  # no closed form for the full LSA here: Monte Carlo is the evaluation
    else:
        exact = exact_eval(out["gamma"], cov, n, s2.ravel(), sx2.ravel(), out["finite"])
    return {
        "gamma": out["gamma"], "risk": out["risk"], "risk_se": out["risk_se"],
        "test_risk": out["test_risk"], "test_se": out["test_se"],
        "gamma_error": out["gamma_error"], "verdict": out["verdict"],
        "stuck_rank": out["stuck_rank"], "diverged": ~out["finite"],
        "grad_rel": out["grad_rel"], "converged": out["converged"],
        "eval_risk": exact.reshape(shape), "eval_risk_mc": mean.reshape(shape),
        "eval_se": se.reshape(shape),
    }


def exact_eval(gamma, cov, n_context, label_noise, input_noise, finite=None):
    """(runs, L) exact risk of each run's Γ at each (σ², σ_x²) pair, float64 closed form
    (:func:`iclsim.linear.oracle.population_risk`; NaN where a run is not finite)."""
    gamma = np.asarray(gamma, float)
    finite = np.ones(len(gamma), bool) if finite is None else np.asarray(finite, bool)
    out = np.full((len(gamma), len(label_noise)), np.nan)
    for i in np.flatnonzero(finite):
        for j, (a, b) in enumerate(zip(label_noise, input_noise)):
            out[i, j] = oracle.population_risk(gamma[i], cov, n_context, label_noise=float(a),
                                               input_noise=float(b))
    return out


_EVAL_LONG_NAME = {
    False: "exact risk of the trained Γ on noisy prompts (float64 closed form, "
           "oracle.population_risk; no sampling error)",
    True: "Monte Carlo risk on noisy prompts (full LSA: no closed form here; = eval_risk_mc)",
}


def run_vars(cfg: LinearSweepConfig) -> dict:
    noise = ("label_noise", "input_noise")
    return {
        "risk": ((), {"long_name": "final risk E[(ŷ−y_q)²] on the training distribution "
                      "(exact for reduced/block, MC for full)"}),
        "risk_se": ((), {"long_name": "standard error of risk"}),
        "test_risk": ((), {"long_name": "Monte Carlo risk on held-out training-distribution "
                           "prompts"}),
        "test_se": ((), {"long_name": "standard error of test_risk"}),
        "gamma_error": ((), {"long_name": "relative Frobenius error ‖Γ − Γ_r‖/‖Γ_r‖"}),
        "stuck_rank": ((), {"long_name": "k of stuck_at_rank_k (-1 otherwise)"}),
        "grad_rel": ((), {"long_name": "relative gradient norm of the exact risk at the trained "
                          "weights (NaN for the full LSA)"}),
        "converged": ((), {"long_name": "grad_rel below the stopping tolerance of the dtype"}),
        "gamma": (("i", "j"), {"long_name": "trained effective Γ"}),
        "eval_risk": (noise, {"long_name": _EVAL_LONG_NAME[cfg.model.parametrization == "full"]}),
        "eval_risk_mc": (noise, {"long_name": "Monte Carlo risk on noisy prompts (the "
                                 "cross-check of eval_risk; eval.n_prompts prompts)"}),
        "eval_se": (noise, {"long_name": "standard error of eval_risk_mc"}),
    }


def oracle_vars(cfg: LinearSweepConfig, coords: dict):
    """The theory on the simulation's named axes (float64, :mod:`iclsim.linear.oracle`)."""
    axes = {name: coords[name] for name in RUN_AXES}
    lam = cfg.spectrum.eigenvalues()
    u = cfg.spectrum.rotation_matrix()
    cov = cfg.spectrum.covariance()
    d = lam.size
    data_vars = {}
    ns, r_all = axes["n_context"], np.arange(d + 1)
    s0s = axes["train_label_noise"]
    s2, sx2 = np.asarray(cfg.eval.label_noise), np.asarray(cfg.eval.input_noise)
    oracle_eval = np.empty((len(ns), len(r_all), len(s0s), len(s2), len(sx2)))
    gamma_opt = np.full((len(ns), len(axes["rank"]), len(s0s), d, d), np.nan)
    ladder = np.empty((len(ns), len(r_all), len(s0s)))
    for a, n in enumerate(ns):
        for c, s0 in enumerate(s0s):
            grid = oracle.optimal_risks(cov, n, label_noise=s2[:, None], input_noise=sx2[None, :],
                                        pretrain_label_noise=s0)
            oracle_eval[a, :, c] = np.moveaxis(grid, -1, 0)
            ladder[a, :, c] = oracle.optimal_risks(cov, n, label_noise=s0, pretrain_label_noise=s0)
            for b, r in enumerate(axes["rank"]):
                try:
                    gamma_opt[a, b, c] = oracle.optimal_gamma(cov, n, r, pretrain_label_noise=s0)
                except oracle.RankTieError:
                    pass
    fine_s2 = np.linspace(0.0, max(float(s2.max()), 1e-9), 121)
    fine_sx2 = np.linspace(0.0, max(float(sx2.max()), 1e-9), 121)
    theory_label = np.stack([np.moveaxis(oracle.optimal_risks(cov, n, label_noise=fine_s2), -1, 0)
                             for n in ns])
    theory_input = np.stack([np.moveaxis(oracle.optimal_risks(cov, n, input_noise=fine_sx2), -1, 0)
                             for n in ns])
    n_lo, n_hi = int(ns.min()), int(ns.max())
    fine_n = np.unique(np.geomspace(max(1, n_lo // 2), max(n_hi * 2, 2), 60).astype(int))
    theory_n = np.stack([oracle.optimal_risks(cov, int(n)) for n in fine_n], axis=-1)
    best = np.empty((len(ns), len(s2), len(sx2)), int)
    for a, n in enumerate(ns):
        for b, v in enumerate(s2):
            for c, w in enumerate(sx2):
                best[a, b, c] = oracle.best_rank(cov, n, label_noise=v, input_noise=w).rank
    data_vars.update({
        "oracle_risk": (("n_context", "rank_all", "train_label_noise", "label_noise", "input_noise"),
                        oracle_eval, {"long_name": "risk of the rank-r optimum on noisy prompts "
                                      "(Theorems A, B)"}),
        "oracle_eval_risk": (("n_context", "rank", "train_label_noise", "label_noise",
                              "input_noise"), oracle_eval[:, axes["rank"]],
                             {"long_name": "oracle_risk at the trained ranks: on the same axes "
                              "as eval_risk, so eval_risk − oracle_eval_risk aligns"}),
        "optimal_risk": (("n_context", "rank_all", "train_label_noise"), ladder,
                         {"long_name": "L_r of the training distribution"}),
        "gamma_opt": (("n_context", "rank", "train_label_noise", "i", "j"), gamma_opt,
                      {"long_name": "Γ_r (Theorem A; NaN at ties)"}),
        "theory_risk_label": (("n_context", "rank_all", "label_noise_fine"), theory_label,
                              {"long_name": "L_r + σ² S_r on a fine σ² grid"}),
        "theory_risk_input": (("n_context", "rank_all", "input_noise_fine"), theory_input,
                              {"long_name": "risk of Γ_r vs input noise on a fine grid"}),
        "theory_risk_n": (("rank_all", "n_context_fine"), theory_n,
                          {"long_name": "L_r as a function of N (clean)"}),
        "best_rank": (("n_context", "label_noise", "input_noise"), best,
                      {"long_name": "r* (smallest minimiser of the oracle risk)"}),
        "eigenvalues": (("i",), lam),
        "eigenvectors": (("i", "j"), u, {"long_name": "U (columns are eigenvectors)"}),
        "covariance": (("i", "j"), cov),
        "trivial_risk": ((), float(np.trace(cov)), {"long_name": "risk of ŷ = 0 (r = 0): tr Λ"}),
    })
    coords = {
        "label_noise": s2, "input_noise": sx2, "i": np.arange(d), "j": np.arange(d),
        "rank_all": r_all, "label_noise_fine": fine_s2, "input_noise_fine": fine_sx2,
        "n_context_fine": fine_n,
    }
    if cfg.model.parametrization == "full":
        attrs = {"eval_method": "monte_carlo",
                 "eval_method_note": "full LSA: eval_risk is Monte Carlo (no closed-form risk "
                                     "of (W^KQ, W^PV) in this package); verdicts carry its SE"}
    else:
        attrs = {"eval_method": "exact",
                 "eval_method_note": "eval_risk is the exact float64 risk of each trained Γ "
                                     "(oracle.population_risk); eval_risk_mc ± eval_se is the "
                                     "Monte Carlo cross-check"}
    return data_vars, coords, attrs


def _verdict_text(cell) -> str:
    """``optimum_reached x3, stuck_at_rank_7 x1`` (stuck verdicts name their k)."""
    names = []
    for v, k in zip(cell["verdict"].values.ravel(), cell["stuck_rank"].values.ravel()):
        v = str(v)
        names.append(f"stuck_at_rank_{int(k)}" if v == "stuck_at_rank_k" and k >= 0 else v)
    return A.verdict_text(names)


def _num(v) -> str:
    """A number for a table or title: short, never hundreds of digits."""
    return f"{float(v):.4g}"


COMBO_AXES = ("n_context", "learning_rate", "init_scale", "train_label_noise")


def _combos(ds):
    """Every (N, lr, init_scale, σ₀²) of the grid, as ``sel`` dicts."""
    import itertools

    values = [ds[a].values for a in COMBO_AXES]
    return [dict(zip(COMBO_AXES, combo)) for combo in itertools.product(*values)]


def _where(ds, sel, *, skip=()) -> str:
    """``N=20, σ₀²=0`` naming the combo axes that vary (N always)."""
    names = {"n_context": "N", "learning_rate": "lr", "init_scale": "init_scale",
             "train_label_noise": "σ₀²"}
    return ", ".join(f"{names[k]}={_num(v)}" for k, v in sel.items()
                     if k not in skip and (k == "n_context" or ds[k].size > 1))


def _exact(ds) -> bool:
    return ds.attrs.get("eval_method", "exact") == "exact" and "eval_risk_mc" in ds


def verdict_parts(ds):
    """The verdict parts of a setting-1 result (:mod:`iclsim.engine.verdict`).

    Per (N, lr, init_scale, σ₀²) and trained rank r: every seed's excess risk R(Γ) − L_r on
    the training distribution is at most ``OPTIMUM_FRACTION`` of the rung gap L_{r−1} − L_r.
    Per evaluation level (σ², σ_x²): best rank = r*, r* the smallest minimiser of the
    oracle risk over the trained ranks and 0, decided on the exact risks of the trained Γ
    (UNRESOLVED when the theory's gap between r* and the runner-up is at most the runs'
    measured optimisation error at those two ranks).  One cross-check part: the Monte
    Carlo evaluation against the exact one, Bonferroni over every (run, cell).
    """
    from iclsim.engine import verdict as V

    exact = _exact(ds)
    method = ("exact (float64 closed form of each trained Γ)" if exact else
              "Monte Carlo (full LSA: no closed form; eval_risk and risk are estimates)")
    ok = ~ds["diverged"]
    parts = []
    trivial = float(ds["trivial_risk"])
    for sel in _combos(ds):
        ranks = np.sort(ds["rank"].values)
        at = dict(n_context=sel["n_context"], train_label_noise=sel["train_label_noise"])
        ladder = ds["optimal_risk"].sel(**at).values
        for r in ranks:
            cell = ds.sel(rank=r, **sel)
            good = ok.sel(rank=r, **sel).values
            excess = np.where(good, cell["risk"].values - ladder[r], np.nan)
            err = cell["gamma_error"].values[good]
            se = None if exact else np.where(good, cell["risk_se"].values, np.nan)
            parts.append(V.optimum_part(
                f"rank {int(r)} reaches Γ_r: R(Γ) − L_r <= {V.OPTIMUM_FRACTION:g}·(L_{{r−1}} "
                f"− L_r) in every seed ({_where(ds, sel)})",
                excess, ladder[r - 1] - ladder[r], method=method + (
                    "" if exact else ", excess lowered by 3 SE"), se=se,
                extra={"scale": int(r), "gamma_error_max": float(np.max(err)) if err.size
                       else float("nan"), "kind_label": "ranks at Γ_r in every seed"}))
        for s2 in ds.label_noise.values:
            for sx2 in ds.input_noise.values:
                lvl = dict(label_noise=s2, input_noise=sx2)
                theory = ds["oracle_risk"].sel(**at, **lvl).values
                scales = np.concatenate([[0], ranks])
                runs = np.stack([np.full(ds.seed.size, trivial)] + [
                    ds["eval_risk"].sel(rank=r, **sel, **lvl).where(
                        ok.sel(rank=r, **sel)).values for r in ranks])
                extra = {"label_noise": float(s2), "input_noise": float(sx2),
                         "r_star_all": int(np.argmin(theory)), "kind_label":
                         "best rank = r* at levels", **{k: float(v) for k, v in sel.items()}}
                parts.append(V.best_scale_part(
                    f"at {_where(ds, sel)}, σ²={_num(s2)}, σ_x²={_num(sx2)} (r* over the "
                    "trained ranks and 0)", scales, theory[scales], runs, scale_name="rank",
                    method=method, extra=extra))
    if exact:
        mc = ds["eval_risk_mc"].where(ok)
        parts.append(V.cross_check_part(mc.values, ds["eval_risk"].where(ok).values,
                                        ds["eval_se"].where(ok).values))
    else:
        parts.append(V.Verdict("Monte Carlo evaluation = exact risk", V.INCONCLUSIVE,
                               float("nan"), method="full LSA: no exact evaluation to check "
                               "(eval_risk is the Monte Carlo estimate)",
                               detail={"role": "cross-check"}))
    return parts


def aggregate(cfg, ds):
    """The result with its verdict parts stored (``verdict_*`` on ``verdict_part``); a
    multi-host shard (not every run present) stores none: ``show`` folds the merged result."""
    from iclsim.engine import verdict as V

    if not bool(ds["present"].all()):
        return ds
    return ds.assign(V.to_vars(verdict_parts(ds)))


def _parts(ds):
    from iclsim.engine import verdict as V

    stored = V.from_dataset(ds)
    return stored if stored is not None else verdict_parts(ds)


def _level_name(s2, sx2, ds) -> str:
    return f"σ²={_num(s2)}" + (f",σ_x²={_num(sx2)}" if ds.input_noise.size > 1 else "")


def summary(ds) -> str:
    """Per (N, lr, init_scale, σ₀²): the trained ranks against L_r and Γ_r, their exact risk on
    the noisy grid against the oracle, the Monte Carlo cross-check; the best rank per level
    with its decision; the verdict line and the cross-check line
    (:mod:`iclsim.engine.verdict`)."""
    from iclsim.engine import verdict as V
    from iclsim.report import format_table

    exact = _exact(ds)
    parts = _parts(ds)
    by_scale = {}
    for p in parts:
        if p.detail.get("kind") == "optimum":
            by_scale.setdefault(p.detail["scale"], []).append(p)
    lines = []
    ok = ~ds["diverged"]
    levels = [(a, b) for a in ds.label_noise.values for b in ds.input_noise.values]
    for sel in _combos(ds):
        at = dict(n_context=sel["n_context"], train_label_noise=sel["train_label_noise"])
        ladder = ds["optimal_risk"].sel(**at).values
        rows, mc_rows = [], []
        for r in ds["rank"].values:
            cell = ds.sel(rank=r, **sel)
            good = ok.sel(rank=r, **sel).values
            risk = cell["risk"].values[good]
            err = cell["gamma_error"].values[good]
            rel = (risk - ladder[r]) / (ladder[r - 1] - ladder[r])
            noisy, mcs = [], []
            for s2, sx2 in levels:
                lvl = dict(label_noise=s2, input_noise=sx2)
                sim = cell["eval_risk"].sel(**lvl).values[good]
                theory = float(ds["oracle_risk"].sel(**at, rank_all=r, **lvl))
                mean = float(np.mean(sim)) if sim.size else float("nan")
                noisy.append(f"{mean:.4f}/{theory:.4f} ({mean - theory:+.4f})")
                if exact and not sim.size:  # every seed diverged: nothing to cross-check
                    mcs.append("nan (no finite run)")
                elif exact:
                    mc = cell["eval_risk_mc"].sel(**lvl).values[good]
                    se = cell["eval_se"].sel(**lvl).values[good]
                    z = (mc - sim) / se
                    mc_err = float(A.seed_mean_error(mc, se, prompts="shared"))
                    mcs.append(f"{np.mean(mc):.3f}±{mc_err:.3f} "
                               f"(max|z| {np.max(np.abs(z)) if z.size else float('nan'):.1f})")
            rows.append((int(r), float(ladder[r]),
                         float(np.mean(risk)) if risk.size else float("nan"),
                         f"{np.max(rel):.3g}" if rel.size else "nan",
                         float(np.nanmax(err)) if err.size else float("nan"),
                         _verdict_text(cell), *noisy))
            if exact:
                mc_rows.append((int(r), *mcs))
        names = [_level_name(a, b, ds) for a, b in levels]
        kind = "exact" if exact else "Monte Carlo"
        headers = ("r", "L_r", "risk", "excess/gap max", "Γ err max", "verdicts",
                   *[f"{n} sim/theory (Δ)" for n in names])
        title = (f"{_where(ds, sel)}, lr={_num(sel['learning_rate'])}, init_scale="
                 f"{_num(sel['init_scale'])}, train σ₀²={_num(sel['train_label_noise'])}. "
                 f"Columns: L_r optimal risk of the training distribution; risk = R(Γ) of the "
                 f"trained Γ there ({kind}, mean over non-diverged seeds); excess/gap max = "
                 f"max over seeds of (R(Γ) − L_r)/(L_{{r−1}} − L_r), at the optimum when <= "
                 f"{V.OPTIMUM_FRACTION:g}; Γ err max = max ‖Γ − Γ_r‖/‖Γ_r‖; σ² columns: "
                 f"{kind} risk of the trained Γ on noisy prompts (seed mean) / risk of Γ_r "
                 "(oracle), Δ = sim − theory" + (" (exact: no sampling error)" if exact else ""))
        lines += [format_table(rows, headers, title), ""]
        if exact:
            lines += [format_table(
                mc_rows, ("r", *[f"{n} MC±SE (max|z|)" for n in names]),
                "Monte Carlo cross-check of the exact evaluation (not part of the verdict): "
                "MC risk of the same trained Γ on eval.n_prompts fresh prompts, seed mean ± "
                "its error (seed variance and Monte Carlo error combined); max|z| = max "
                "over seeds of |MC − exact|/SE; rule: every (run, cell) "
                f"within Bonferroni z_crit (family-wise α = {V.CROSS_CHECK_ALPHA:g})"), ""]
    best = [p for p in parts if p.detail.get("kind") == "best_scale"]
    if best:
        rows = []
        for p in best:
            d = p.detail
            rows.append((p.claim.split(" at ", 1)[1].split(" (r*")[0], d["theory_best"],
                         d["runner_up"], f"{d['gap']:.3g}", f"{d['tolerance']:.3g}",
                         d["sim_best"], d["r_star_all"], p.decision))
        lines += [format_table(rows, ("level", "r*", "runner-up", "gap", "opt. error",
                                      "best r (sim)", "r* over 0..d", "decision"),
                               "Best rank under evaluation noise, decided on exact risks. r* = "
                               "smallest minimiser of the oracle risk over the trained ranks "
                               "and 0 (r = 0: Γ = 0, risk tr Λ); gap = theory's risk of the "
                               "runner-up − r*'s; opt. error = δ_r* + δ_runner-up, δ_r = max "
                               "over seeds |R(trained Γ) − R(Γ_r)| at this level; best r (sim) "
                               "= argmin of the seed-mean risk of the trained Γ. Rule: "
                               "UNRESOLVED if gap <= opt. error (agreement would be a coin "
                               "flip), else SUPPORTED iff best r (sim) = r*"), ""]
        unresolved = [p for p in best if p.decision == V.UNRESOLVED]
        for p in unresolved:
            lines.append(f"UNRESOLVED {p.claim}: gap {p.detail['gap']:.3g} <= optimisation "
                         f"error {p.detail['tolerance']:.3g}; to resolve: {p.detail['resolve']}")
        if unresolved:
            lines.append("")
    lines += V.summary_lines(parts)
    n_div, n_runs = int(ds["diverged"].sum()), int(ds["diverged"].size)
    if n_div:
        lines.append("all diverged: every run had a non-finite loss; nothing to compare"
                     if n_div == n_runs else
                     f"diverged: {n_div}/{n_runs} run(s) (non-finite loss), left out of every "
                     "mean and decision")
    if not exact:
        lines.append(ds.attrs.get("eval_method_note", "eval_risk is Monte Carlo"))
    lines.append("\n" + A.sweep_line(ds, "linear"))
    return "\n".join(lines)


def figures(ds, out_dir, formats):
    from iclsim.linear import figures as figs

    return figs.draw_all(ds, out_dir, formats)


class LinearSetting(Setting):
    """Setting 1 (rank-r linear self-attention on in-context linear regression)."""

    name = "linear"
    kind = "trained"
    config_class = LinearSweepConfig
    scale = "rank"
    tuning_axes = ("learning_rate", "init_scale")
    run_axes = RUN_AXES
    static_axes = ("n_context",)
    verdicts = VERDICT_CODES

    def static(self, cfg, n_context):
        return _static(cfg, n_context)

    hyper = staticmethod(_hyper)
    trainer = staticmethod(linear_trainer)
    data = staticmethod(_data)
    assess = staticmethod(assess)
    run_vars = staticmethod(run_vars)
    oracle = staticmethod(oracle_vars)
    summary = staticmethod(summary)
    figures = staticmethod(figures)
    aggregate = staticmethod(aggregate)
    verdict_parts = staticmethod(verdict_parts)


LINEAR = LinearSetting()
