"""Setting 3 as a sweep: trained softmax transformers of several sizes on setting 1's data.

Grid axes (``[axes]``): ``n_context`` (static: one compiled program per N), ``size``
(an index 1..K into the size list ``[model] heads/width/layers``), ``seed``,
``learning_rate``, ``init_scale``, ``train_label_noise`` σ₀² (all traced: every size
shares one program, padded to the largest size and masked, :mod:`iclsim.transformer.model`).
Evaluation (``[eval]``): context label noise σ² × context input noise σ_x² on a grid
(σ_x² default 0: label noise only); every run and every reference (Bayes, OLS, ridge) sees
the same Monte Carlo prompts.  The Bayes reference is left out (NaN) where σ_x² > 0
(:mod:`iclsim.transformer.references`).

Against the theory (``docs/theory/linear.md``): the rank-r LSA optimum risks
L_r(σ²) = L_r + σ² S_r (Theorem B(a); Theorem B(d) for σ₀² > 0; with input noise the
risks R_r(σ², σ_x²) of Theorem B's (B)) are the ladder each trained model's risk-vs-σ² curve
is fitted to (its *effective rank*, one fit per σ_x² level).  See
``docs/transformer.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from iclsim.engine.config import CommonAxes, CommonEval, CommonSweep, CommonTrain, ConfigError, spec
from iclsim.engine.setting import Runs, axis_values, best_scale, eval_key
from iclsim.engine.trainer import build_trainer
from iclsim.linear import oracle
from iclsim.linear.data import sample_prompts
from iclsim.linear.sweep import SpectrumConfig
from iclsim.transformer import model as tfm
from iclsim.transformer import references as refs

__all__ = ["TransformerSweepConfig", "TRANSFORMER", "RUN_AXES", "VERDICT_CODES", "usable",
           "size_table", "best_size"]

#: The run axes of a transformer sweep, in the order of the run index (one trained model per
#: combination).
RUN_AXES = ("n_context", "size", "seed", "learning_rate", "init_scale", "train_label_noise")
#: ``trivial``: never left the trivial predictor ŷ = 0 (clean risk within
#: ``eval.trivial_tolerance`` of tr Λ); ``diverged``: NaN/inf.  Both are left out of every
#: aggregate of this setting (:func:`usable`).
VERDICT_CODES = ("trained", "trivial", "diverged")
DEFAULT_NOISE = (0.0, 4.0, 8.0, 16.0, 25.0, 40.0, 60.0, 100.0)


@dataclass(frozen=True)
class ModelConfig:
    heads: tuple[int, ...] = spec((1, 2, 4, 8), "heads h of size 1, 2, … (zipped with width "
                                  "and layers)", lo=1, hi=256, min_len=1)
    width: tuple[int, ...] = spec((16, 16, 16, 16), "d_model of each size", lo=1, hi=4096,
                                  min_len=1)
    layers: tuple[int, ...] = spec((1, 1, 1, 1), "layers L of each size", lo=1, hi=64,
                                   min_len=1)
    head_dim: int = spec(1, "dimension of every head (attention width h · head_dim)", lo=1,
                         hi=512)
    mlp_ratio: int = spec(4, "MLP hidden width = mlp_ratio · d_model", lo=1, hi=16)

    def __post_init__(self):
        if not len(self.heads) == len(self.width) == len(self.layers):
            raise ConfigError(f"model: heads, width and layers must have equal lengths (one "
                              f"entry per size), got {len(self.heads)}, {len(self.width)}, "
                              f"{len(self.layers)}")

    def sizes(self):
        return list(zip(self.heads, self.width, self.layers))


@dataclass(frozen=True)
class TrainConfig(CommonTrain):
    steps: int = spec(2000, "optimizer steps per run", lo=1, hi=10_000_000)
    batch: int = spec(64, "fresh prompts per step", lo=1, hi=1_000_000)
    warmup_steps: int = spec(200, "linear learning-rate warm-up", lo=0)
    weight_decay: float = spec(0.0, "AdamW weight decay", lo=0.0, hi=1.0)
    clip_norm: float = spec(1.0, "global gradient-norm clip (0: off)", lo=0.0)
    adam_b1: float = spec(0.9, "Adam β1", lo=0.0, hi=0.9999)
    adam_b2: float = spec(0.999, "Adam β2", lo=0.0, hi=0.99999)
    average_tail: float = spec(0.0, "Polyak average over this final fraction of steps",
                               lo=0.0, hi=0.99)


@dataclass(frozen=True)
class AxesConfig(CommonAxes):
    size: tuple[int, ...] = spec((1, 2, 3, 4), "model sizes: 1-based indices into [model] "
                                 "heads/width/layers (0 is reserved for ŷ = 0)", lo=1,
                                 min_len=1)
    learning_rate: tuple[float, ...] = spec((1e-3,), "peak learning rates", lo=1e-12,
                                            min_len=1)
    init_scale: tuple[float, ...] = spec((1.0,), "init std multiplier (× 1/√fan-in)",
                                         lo=0.0, min_len=1)
    train_label_noise: tuple[float, ...] = spec((0.0,), "pretraining context label noise σ₀²",
                                                lo=0.0, hi=1e6, min_len=1)


@dataclass(frozen=True)
class EvalConfig(CommonEval):
    n_prompts: int = spec(8192, "held-out prompts per run and noise level", lo=2,
                          hi=1_000_000_000)
    batch: int = spec(512, "prompts per evaluation batch", lo=1, hi=1_000_000)
    label_noise: tuple[float, ...] = spec(DEFAULT_NOISE, "evaluation context label noise σ²",
                                          lo=0.0, hi=1e6, min_len=1)
    input_noise: tuple[float, ...] = spec((0.0,), "evaluation context input noise σ_x² (shown "
                                          "inputs x_i + ξ_i, ξ ~ N(0, σ_x² I); labels from the "
                                          "clean x_i)", lo=0.0, hi=1e6, min_len=1)
    ridge_lambda: tuple[float, ...] = spec((1.0, 10.0), "ridge λ of the reference predictors",
                                           lo=1e-12, hi=1e9, min_len=1)
    trivial_tolerance: float = spec(0.05, "verdict trivial: risk at the smallest σ² ≥ "
                                    "(1 − this) · tr Λ", lo=0.0, hi=1.0)
    fit_tolerance: float = spec(4.0, "effective-rank interval: every r with χ²_r ≤ χ²_min + "
                                "this", lo=0.0)


@dataclass(frozen=True)
class TransformerSweepConfig(CommonSweep):
    setting: str = spec("transformer", "which setting", choices=("transformer",))
    spectrum: SpectrumConfig = SpectrumConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    axes: AxesConfig = AxesConfig()
    eval: EvalConfig = EvalConfig()

    def __post_init__(self):
        k = len(self.model.heads)
        bad = [s for s in self.axes.size if s > k]
        if bad:
            raise ConfigError(f"axes.size: {bad[0]} is out of range; allowed 1..{k} (the "
                              "number of sizes in [model])")
        if self.train.warmup_steps >= self.train.steps:
            raise ConfigError(f"train.warmup_steps: {self.train.warmup_steps} must be below "
                              f"train.steps ({self.train.steps})")

    def axis_values(self) -> dict:
        return axis_values(self, TRANSFORMER)


class TransformerStatic(NamedTuple):
    """What fixes the compiled program (hashable)."""

    shape: tfm.Shape
    n_context: int
    steps: int
    batch: int
    schedule: str
    warmup_steps: int
    final_lr_fraction: float
    weight_decay: float
    clip_norm: float
    adam_b1: float
    adam_b2: float
    average_tail: float
    train_noise: bool


def _padded_shape(cfg: TransformerSweepConfig) -> tfm.Shape:
    sizes = [cfg.model.sizes()[s - 1] for s in cfg.axes.size]
    return tfm.Shape(d=cfg.spectrum.eigenvalues().size, heads=max(s[0] for s in sizes),
                     width=max(s[1] for s in sizes), layers=max(s[2] for s in sizes),
                     head_dim=cfg.model.head_dim, mlp_ratio=cfg.model.mlp_ratio)


def _static(cfg: TransformerSweepConfig, n_context: int) -> TransformerStatic:
    t = cfg.train
    return TransformerStatic(
        shape=_padded_shape(cfg), n_context=int(n_context), steps=t.steps, batch=t.batch,
        schedule=t.schedule, warmup_steps=t.warmup_steps, final_lr_fraction=t.final_lr_fraction,
        weight_decay=t.weight_decay, clip_norm=t.clip_norm, adam_b1=t.adam_b1, adam_b2=t.adam_b2,
        average_tail=t.average_tail, train_noise=any(s > 0 for s in cfg.axes.train_label_noise))


def _hyper(cfg: TransformerSweepConfig, runs: Runs) -> dict:
    sizes = np.asarray(cfg.model.sizes())[runs["size"].astype(int) - 1]
    return {
        "heads": sizes[:, 0].astype(np.int32), "width": sizes[:, 1].astype(np.int32),
        "layers": sizes[:, 2].astype(np.int32),
        "learning_rate": runs["learning_rate"].astype(float),
        "init_scale": runs["init_scale"].astype(float),
        "label_noise": runs["train_label_noise"].astype(float),
    }


def schedule(static: TransformerStatic, peak):
    """Linear warm-up to ``peak`` (may be traced), then cosine decay to
    ``final_lr_fraction`` · peak (``schedule = "cosine"``) or constant."""
    warm = max(static.warmup_steps, 1)
    decay = max(static.steps - static.warmup_steps, 1)

    def lr(count):
        count = jnp.asarray(count, jnp.result_type(float))
        ramp = jnp.minimum(1.0, (count + 1.0) / warm) if static.warmup_steps else 1.0
        if static.schedule == "constant":
            return peak * ramp
        frac = jnp.clip((count - static.warmup_steps) / decay, 0.0, 1.0)
        f = static.final_lr_fraction
        return peak * ramp * (f + (1.0 - f) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac)))

    return lr


def optimizer(static: TransformerStatic):
    """The factory ``hyper → optax transformation``: clip, then AdamW under :func:`schedule`."""

    def make(hyper):
        parts = [optax.clip_by_global_norm(static.clip_norm)] if static.clip_norm > 0 else []
        parts.append(optax.adamw(schedule(static, hyper["learning_rate"]), b1=static.adam_b1,
                                 b2=static.adam_b2, weight_decay=static.weight_decay))
        return optax.chain(*parts)

    return make


def transformer_trainer(static: TransformerStatic):
    """The engine trainer: masks ride along in ``params["masks"]`` (not trained)."""
    shape, n, batch = static.shape, static.n_context, static.batch

    def init_params(key, hyper, data):
        weights = tfm.init_weights(key, shape, hyper["heads"], hyper["width"], hyper["layers"],
                                   hyper["init_scale"])
        return {"weights": weights,
                "masks": tfm.masks(shape, hyper["heads"], hyper["width"], hyper["layers"])}

    def loss(params, key, hyper, data):
        noise = hyper["label_noise"] if static.train_noise else 0.0
        p = sample_prompts(key, None, n, batch, label_noise=noise, factor=data["factor"])
        pred = tfm.predict(params["weights"], params["masks"], p.x, p.y, p.x_query,
                           shape.head_dim)
        return jnp.mean((pred - p.y_query) ** 2)

    return build_trainer(init_params, loss, steps=static.steps, optimizer=optimizer(static),
                         average_tail=static.average_tail)


def _data(cfg: TransformerSweepConfig, static: TransformerStatic):
    cov = cfg.spectrum.covariance()
    dtype = jnp.result_type(float)
    return {"cov": jnp.asarray(cov, dtype), "factor": jnp.asarray(np.linalg.cholesky(cov), dtype)}


def _eval_batches(cfg) -> tuple[int, int]:
    batch = min(cfg.eval.batch, cfg.eval.n_prompts)
    return max(1, cfg.eval.n_prompts // batch), batch


def evaluate(key, params, factor, n_context: int, noise, *, n_batches: int, batch: int,
             head_dim: int, draw_xi: bool = False):
    """Per run (leading axis of ``params``) and noise level: moments of the squared error and
    of its paired difference to the Bayes predictor on the same prompts.

    ``noise``: (P, 2) (σ², σ_x²) pairs (:func:`references.noise_pairs`); ``draw_xi``: draw the
    context input noise (static; False when every σ_x² is 0).  Returns (runs, P, 4): E[e],
    E[e²], E[e − e_B], E[(e − e_B)²], e_B the error of the label-noise posterior mean on the
    shown context (the Bayes predictor only where σ_x² = 0; :func:`assess` drops the rest).
    The prompt stream is :func:`references.draw_eval` (and :func:`references.draw_input_noise`)
    on ``split(key, n_batches)``, as in :func:`references.reference_risks`.
    """
    keys = jax.random.split(key, n_batches)
    levels = jnp.asarray(noise, jnp.result_type(float))

    def per_batch(acc, k):
        prompts, eps = refs.draw_eval(k, factor, n_context, batch)
        xi = refs.draw_input_noise(k, prompts) if draw_xi else None

        def level(pair):
            s2, sx2 = pair[0], pair[1]
            y = refs.noisy_labels(prompts, eps, s2)
            x = refs.noisy_inputs(prompts, xi, sx2)
            wb = jax.vmap(refs.posterior_mean, in_axes=(0, 0, None))(x, y, s2)
            eb = (jnp.sum(wb * prompts.x_query, -1) - prompts.y_query) ** 2

            def run(p):
                pred = tfm.predict(p["weights"], p["masks"], x, y, prompts.x_query, head_dim)
                e = (pred - prompts.y_query) ** 2
                g = e - eb
                return jnp.stack([e.mean(), (e * e).mean(), g.mean(), (g * g).mean()])

            return jax.vmap(run)(params)

        out = jax.lax.map(level, levels)  # (levels, runs, 4)
        return acc + jnp.swapaxes(out, 0, 1), None

    runs = jax.tree_util.tree_leaves(params)[0].shape[0]
    zero = jnp.zeros((runs, levels.shape[0], 4), jnp.result_type(float))
    total, _ = jax.lax.scan(per_batch, zero, keys)
    return total / n_batches


_evaluate = jax.jit(evaluate, static_argnames=("n_context", "n_batches", "batch", "head_dim",
                                               "draw_xi"))


def _ladder(cfg, n_context: int, pretrain_noise: float) -> np.ndarray:
    """(σ² levels, σ_x² levels, d + 1): R_r(σ², σ_x²) of the rank-r LSA optimum trained at σ₀²
    (Theorem B's (B); (a) at σ_x² = 0, (d) for σ₀² > 0)."""
    cov = cfg.spectrum.covariance()
    return oracle.optimal_risks(cov, n_context,
                                label_noise=np.asarray(cfg.eval.label_noise, float)[:, None],
                                input_noise=np.asarray(cfg.eval.input_noise, float)[None, :],
                                pretrain_label_noise=pretrain_noise)


def assess(cfg: TransformerSweepConfig, static: TransformerStatic, runs: Runs, params, loss, key):
    """Noisy-prompt risks (± SE), the gap to the Bayes floor, verdicts, effective rank, slope.

    Risks are on the (σ², σ_x²) grid; the effective rank and the noise line are fitted along
    σ² at each σ_x² level (against the ladder at that σ_x²).  The Bayes gap is NaN where
    σ_x² > 0.  Verdicts use the lowest (σ², σ_x²).
    """
    n_batches, batch = _eval_batches(cfg)
    factor = jnp.asarray(np.linalg.cholesky(cfg.spectrum.covariance()), jnp.result_type(float))
    params = {"weights": params["weights"], "masks": params["masks"]}
    pairs, draw_xi, shape = refs.noise_pairs(cfg.eval.label_noise, cfg.eval.input_noise)
    m = np.asarray(_evaluate(key, params, factor, static.n_context, pairs,
                             n_batches=n_batches, batch=batch, head_dim=static.shape.head_dim,
                             draw_xi=draw_xi), float)
    m = m.reshape(m.shape[0], *shape, 4)  # (runs, σ², σ_x², 4)
    n_total = n_batches * batch
    risk, se = refs._mean_se(m[..., :2], n_total)
    gap, gap_se = refs._mean_se(m[..., 2:], n_total)
    sx2 = np.asarray(cfg.eval.input_noise, float)
    gap, gap_se = (np.where(sx2 > 0, np.nan, v) for v in (gap, gap_se))
    trace = float(np.trace(cfg.spectrum.covariance()))
    s2 = np.asarray(cfg.eval.label_noise, float)
    loss = np.asarray(loss, float)
    tail = max(1, loss.shape[1] // 10)
    final_loss = loss[:, -tail:].mean(axis=1)
    finite = np.all(np.isfinite(risk), axis=(1, 2)) & np.isfinite(final_loss)
    lowest = (int(np.argmin(s2)), int(np.argmin(sx2)))
    trivial = finite & (risk[:, lowest[0], lowest[1]] >= (1.0 - cfg.eval.trivial_tolerance)
                        * trace)
    verdict = np.where(~finite, "diverged", np.where(trivial, "trivial", "trained"))
    d = cfg.spectrum.eigenvalues().size
    k = sx2.size
    eff = np.full((len(runs), k, 3), -1, np.int64)
    chi2 = np.full((len(runs), k, d + 1), np.nan)
    line = np.full((len(runs), k, 4), np.nan)
    for i in range(len(runs)):
        ladder = _ladder(cfg, static.n_context, float(runs["train_label_noise"][i]))
        for b in range(k):
            fit = refs.fit_effective_rank(risk[i, :, b], se[i, :, b], ladder[:, b],
                                          cfg.eval.fit_tolerance)
            eff[i, b] = (fit.rank, fit.lo, fit.hi)
            chi2[i, b] = fit.chi2
            line[i, b] = refs.fit_noise_line(s2, risk[i, :, b], se[i, :, b])
    return {
        "eval_risk": risk, "eval_se": se, "bayes_gap": gap, "bayes_gap_se": gap_se,
        "final_loss": final_loss, "effective_rank": eff[..., 0], "effective_rank_lo": eff[..., 1],
        "effective_rank_hi": eff[..., 2], "fit_chi2": chi2, "clean_fit": line[..., 0],
        "noise_slope": line[..., 1], "clean_fit_se": line[..., 2], "noise_slope_se": line[..., 3],
        "verdict": verdict, "diverged": ~finite,
    }


def run_vars(cfg: TransformerSweepConfig) -> dict:
    noise = ("label_noise", "input_noise")
    fit = ("input_noise",)
    return {
        "eval_risk": (noise, {"long_name": "Monte Carlo risk E[(ŷ − y_q)²] on prompts with "
                              "context label noise σ² and context input noise σ_x²"}),
        "eval_se": (noise, {"long_name": "standard error of eval_risk"}),
        "bayes_gap": (noise, {"long_name": "eval_risk − Bayes risk, paired on the same prompts "
                              "(NaN where σ_x² > 0: no closed-form Bayes predictor there)"}),
        "bayes_gap_se": (noise, {"long_name": "standard error of bayes_gap (paired)"}),
        "final_loss": ((), {"long_name": "training loss, mean over the last 10 % of steps"}),
        "effective_rank": (fit, {"long_name": "r minimising χ²_r of eval_risk along σ² against "
                                 "L_r(σ²) (the LSA ladder at the run's σ₀² and this σ_x²)"}),
        "effective_rank_lo": (fit, {"long_name": "smallest r with χ²_r ≤ χ²_min + tolerance"}),
        "effective_rank_hi": (fit, {"long_name": "largest r with χ²_r ≤ χ²_min + tolerance"}),
        "fit_chi2": (("input_noise", "rank_all"), {"long_name": "χ²_r of the effective-rank fit"}),
        "clean_fit": (fit, {"long_name": "intercept a of the weighted line eval_risk ≈ a + S σ²"}),
        "clean_fit_se": (fit, {"long_name": "standard error of clean_fit"}),
        "noise_slope": (fit, {"long_name": "slope S of the weighted line eval_risk ≈ a + S σ²"}),
        "noise_slope_se": (fit, {"long_name": "standard error of noise_slope"}),
    }


def oracle_vars(cfg: TransformerSweepConfig, coords: dict):
    """The LSA ladder, the Bayes / OLS / ridge references and the size table."""
    cov = cfg.spectrum.covariance()
    lam = cfg.spectrum.eigenvalues()
    d = lam.size
    ns = np.asarray(coords["n_context"])
    s0s = np.asarray(coords["train_label_noise"])
    s2 = np.asarray(cfg.eval.label_noise, float)
    sx2 = np.asarray(cfg.eval.input_noise, float)
    lams = np.asarray(cfg.eval.ridge_lambda, float)
    ladder = np.stack([np.stack([_ladder(cfg, int(n), float(s0)) for s0 in s0s]) for n in ns])
    # The risk is affine in σ² at fixed σ_x² (Theorem B's (B)): the slope is a difference.
    slope = np.stack([np.stack([
        oracle.optimal_risks(cov, int(n), label_noise=1.0, input_noise=sx2,
                             pretrain_label_noise=float(s0))
        - oracle.optimal_risks(cov, int(n), input_noise=sx2,
                               pretrain_label_noise=float(s0)) for s0 in s0s]) for n in ns])
    best = np.array([[[oracle.best_rank(cov, int(n), label_noise=v, input_noise=u).rank
                       for u in sx2] for v in s2] for n in ns])
    n_batches, batch = _eval_batches(cfg)
    factor = jnp.asarray(np.linalg.cholesky(cov), jnp.result_type(float))
    bayes = np.empty((len(ns), 2, s2.size, sx2.size))
    ols = np.empty((len(ns), 2, s2.size, sx2.size))
    ridge = np.empty((len(ns), 2, lams.size, s2.size, sx2.size))
    for a, n in enumerate(ns):
        out = refs.reference_risks(eval_key(cfg), factor, int(n), s2, n_prompts=n_batches * batch,
                                   batch=batch, ridge_lambda=lams, input_noise=sx2)
        bayes[a], ols[a], ridge[a] = out["bayes"], out["ols"], out["ridge"]
    sizes = [cfg.model.sizes()[s - 1] for s in np.asarray(coords["size"])]
    h, w, layers = (np.array([s[i] for s in sizes]) for i in range(3))
    count = np.array([tfm.param_count(d, *s, cfg.model.head_dim, cfg.model.mlp_ratio)
                      for s in sizes])
    nl = ("n_context", "label_noise", "input_noise")
    data_vars = {
        "ladder_risk": (("n_context", "train_label_noise", "label_noise", "input_noise",
                         "rank_all"), ladder,
                        {"long_name": "L_r(σ²): risk of the rank-r LSA optimum (pretrained at "
                         "σ₀²) on prompts with label noise σ² and input noise σ_x² (Theorem "
                         "B's (B); (a) at σ_x² = 0, (d) for σ₀² > 0)"}),
        "ladder_slope": (("n_context", "train_label_noise", "input_noise", "rank_all"), slope,
                         {"long_name": "S_r: dL_r(σ²)/dσ² of the rank-r LSA optimum at σ_x²"}),
        "best_rank": (nl, best, {"long_name": "r*: best LSA rank under label noise σ² and "
                                 "input noise σ_x²"}),
        "bayes_risk": (nl, bayes[:, 0], {"long_name": "Monte Carlo risk of the Bayes-optimal "
                                         "(posterior-mean) predictor: the floor (NaN where "
                                         "σ_x² > 0: no closed form there)"}),
        "bayes_se": (nl, bayes[:, 1], {"long_name": "standard error of bayes_risk"}),
        "ols_risk": (nl, ols[:, 0], {"long_name": "Monte Carlo risk of least squares X⁺ỹ"}),
        "ols_se": (nl, ols[:, 1], {"long_name": "standard error of ols_risk"}),
        "ridge_risk": (("n_context", "ridge_lambda", "label_noise", "input_noise"), ridge[:, 0],
                       {"long_name": "Monte Carlo risk of ridge at λ"}),
        "ridge_se": (("n_context", "ridge_lambda", "label_noise", "input_noise"), ridge[:, 1],
                     {"long_name": "standard error of ridge_risk"}),
        "size_heads": (("size",), h, {"long_name": "heads h of each size"}),
        "size_width": (("size",), w, {"long_name": "d_model of each size"}),
        "size_layers": (("size",), layers, {"long_name": "layers L of each size"}),
        "param_count": (("size",), count, {"long_name": "trainable parameters (unpadded)"}),
        "eigenvalues": (("i",), lam),
        "covariance": (("i", "j"), cov),
        "trivial_risk": ((), float(np.trace(cov)), {"long_name": "risk of ŷ = 0: tr Λ"}),
    }
    new_coords = {"label_noise": s2, "input_noise": sx2, "rank_all": np.arange(d + 1),
                  "ridge_lambda": lams, "i": np.arange(d), "j": np.arange(d)}
    return data_vars, new_coords, {"head_dim": cfg.model.head_dim,
                                   "mlp_ratio": cfg.model.mlp_ratio}


# ------------------------------------------------------------------------ aggregates, summary

def usable(ds):
    """``ds`` with ``diverged`` widened to the trivial runs too: the runs this setting leaves
    out of every aggregate (:func:`iclsim.engine.setting.best_scale` drops ``diverged``)."""
    out = ds.copy()
    out["diverged"] = ds["diverged"] | (ds["verdict"] == "trivial")
    return out


def _first(ds, keep=("size", "seed", "label_noise", "rank_all")):
    """The cell at the first value of every other run axis (and of the input noise σ_x²)."""
    sel = {d: ds[d].values[0] for d in ("n_context", "learning_rate", "init_scale",
                                        "train_label_noise", "input_noise")
           if d in ds.dims and d not in keep}
    return ds.sel(**sel), sel


def _one_input_level(cell):
    """``cell`` at its first σ_x² if that axis is still there (results before eval.input_noise
    have none)."""
    return cell.isel(input_noise=0) if "input_noise" in cell.dims else cell


def _input_text(ds, value=None) -> str:
    """``", σ_x²=v"`` for titles, or "" when the result has no input noise (σ_x² = 0 only), so
    label-noise-only tables read as before."""
    if "input_noise" not in ds.dims or (ds["input_noise"].size == 1
                                        and float(ds["input_noise"][0]) == 0.0):
        return ""
    v = float(ds["input_noise"][0]) if value is None else float(value)
    return f", input σ_x²={v:g}"


def _seed_stats(values, ok, mc_se):
    """Mean over usable seeds, SE = √(seed variance / n + mean MC SE²) (NaN if none)."""
    v = values[ok]
    if v.size == 0:
        return np.nan, np.nan
    seed_var = v.var(ddof=1) / v.size if v.size > 1 else 0.0
    return float(v.mean()), float(np.sqrt(seed_var + np.mean(mc_se[ok] ** 2)))


def size_table(ds, **sel):
    """Per size: mean risk and SE per σ² (over usable seeds), and the size-level fits.

    Returns a dict of arrays indexed [size] or [size, level]: ``risk``, ``se``, ``gap``,
    ``gap_se``, ``n_ok``, ``eff`` (rank, lo, hi), ``chi2_dof`` (χ²_min / (levels − 1): ≫ 1
    when no ladder curve has the measured shape), ``slope``, ``slope_se``, ``clean``,
    ``clean_se``.  The size-level effective rank fits the seed-mean curve with these SEs.
    """
    cell = _one_input_level(ds.sel(**sel) if sel else _first(ds)[0])
    s0 = float(cell["train_label_noise"]) if "train_label_noise" in cell.coords else 0.0
    ok_all = ~(cell["diverged"] | (cell["verdict"] == "trivial"))
    sizes = cell["size"].values
    k = cell["label_noise"].size
    out = {key: np.full((sizes.size, k), np.nan) for key in ("risk", "se", "gap", "gap_se")}
    out.update({key: np.full(sizes.size, np.nan) for key in
                ("slope", "slope_se", "clean", "clean_se")})
    out["n_ok"] = np.zeros(sizes.size, int)
    out["eff"] = np.full((sizes.size, 3), -1, int)
    out["chi2_dof"] = np.full(sizes.size, np.nan)
    s2 = cell["label_noise"].values
    ladder = cell["ladder_risk"].sel(train_label_noise=s0) if "train_label_noise" in \
        cell["ladder_risk"].dims else cell["ladder_risk"]
    ladder = ladder.transpose("label_noise", "rank_all").values
    tol = float(dict(_cfg(ds).get("eval", {})).get("fit_tolerance", 4.0))
    for a, size in enumerate(sizes):
        c = cell.sel(size=size)
        ok = ok_all.sel(size=size).values
        out["n_ok"][a] = int(ok.sum())
        for j in range(k):
            out["risk"][a, j], out["se"][a, j] = _seed_stats(
                c["eval_risk"].values[:, j], ok, c["eval_se"].values[:, j])
            out["gap"][a, j], out["gap_se"][a, j] = _seed_stats(
                c["bayes_gap"].values[:, j], ok, c["bayes_gap_se"].values[:, j])
        if ok.any():
            fit = refs.fit_effective_rank(out["risk"][a], out["se"][a], ladder, tol)
            out["eff"][a] = (fit.rank, fit.lo, fit.hi)
            out["chi2_dof"][a] = float(fit.chi2[fit.rank]) / max(k - 1, 1)
            (out["clean"][a], out["slope"][a], out["clean_se"][a],
             out["slope_se"][a]) = refs.fit_noise_line(s2, out["risk"][a], out["se"][a])
    return out


def _cfg(ds) -> dict:
    from iclsim.plotting import result_config

    return result_config(ds)


def best_size(ds, n_boot: int = 400, seed: int = 0, axis: str = "label_noise", **sel):
    """Best size per σ² (the engine's :func:`best_scale` on the usable runs) and its bootstrap
    support: the fraction of resamples of the seeds (per size, with replacement) whose argmin
    over {0} ∪ sizes is the same.  Returns (best (levels,), support (levels,)).

    ``axis = "input_noise"``: per σ_x² instead (at the σ² of ``sel``, else the first); the
    other noise axis is taken at its first value unless ``sel`` fixes it."""
    use = usable(ds)
    cell, fixed = (use.sel(**sel), dict(sel)) if sel else _first(use)
    other = "input_noise" if axis == "label_noise" else "label_noise"
    if other in cell.dims:
        fixed[other] = cell[other].values[0]
        cell = cell.isel({other: 0})
    best = best_scale(use, **fixed).transpose(axis, ...).values.reshape(-1)
    risk = cell["eval_risk"].transpose("size", "seed", axis).values
    ok = ~cell["diverged"].transpose("size", "seed").values
    zero = float(ds["trivial_risk"])
    sizes = np.concatenate([[0], cell["size"].values])
    rng = np.random.default_rng(seed)
    hits = np.zeros(risk.shape[-1])
    for _ in range(n_boot):
        means = [np.full(risk.shape[-1], zero)]
        for a in range(risk.shape[0]):
            rows = np.flatnonzero(ok[a])
            if rows.size == 0:
                means.append(np.full(risk.shape[-1], np.inf))
                continue
            pick = rng.choice(rows, rows.size)
            means.append(risk[a, pick].mean(axis=0))
        hits += sizes[np.argmin(np.stack(means), axis=0)] == best
    return best, hits / n_boot


def _size_label(ds, size) -> str:
    c = ds.sel(size=size)
    return f"{int(size)} (h={int(c['size_heads'])}, d={int(c['size_width'])}, " \
           f"L={int(c['size_layers'])})"


def summary(ds) -> str:
    """Per size: clean risk, noise slope vs S_r, effective rank, gap to the Bayes floor; risk
    vs σ² per size with the references; best size vs σ² (with bootstrap support)."""
    from iclsim.report import format_table

    lines = []
    cell, fixed = _first(ds)
    fixed_text = ", ".join(f"{k}={v:g}" for k, v in fixed.items()
                           if k not in ("train_label_noise", "input_noise"))
    input_text = _input_text(ds)
    s2 = ds["label_noise"].values
    for s0 in ds["train_label_noise"].values:
        sel = {**{k: v for k, v in fixed.items() if k != "train_label_noise"},
               "train_label_noise": s0}
        tab = size_table(ds, **sel)
        c = ds.sel(**sel)  # one N, learning rate, init scale and σ₀²
        slope_th = c["ladder_slope"]
        rows = []
        for a, size in enumerate(ds["size"].values):
            verdicts = c.sel(size=size)["verdict"].values.ravel().astype(str)
            vtext = ", ".join(f"{v} x{int(np.sum(verdicts == v))}" for v in dict.fromkeys(verdicts))
            r, lo, hi = tab["eff"][a]
            per_run = c.sel(size=size)["effective_rank"].values.ravel()
            s_r = float(slope_th.sel(rank_all=r)) if r >= 0 else np.nan
            rows.append((_size_label(ds, size), int(ds["param_count"].sel(size=size)), vtext,
                         f"{tab['risk'][a, 0]:.3f}±{tab['se'][a, 0]:.3f}",
                         f"{tab['slope'][a]:.4f}±{tab['slope_se'][a]:.4f}",
                         f"{r} [{lo},{hi}]" if r >= 0 else "-",
                         f"{tab['chi2_dof'][a]:.1f}",
                         ",".join(str(int(v)) for v in per_run),
                         f"{s_r:.4f}",
                         f"{tab['gap'][a, 0]:.3f}±{tab['gap_se'][a, 0]:.3f}",
                         f"{tab['gap'][a, -1]:.3f}±{tab['gap_se'][a, -1]:.3f}"))
        title = (f"Transformer sizes at {fixed_text}, train σ₀²={s0:g}{input_text} (means over "
                 "usable seeds, "
                 "± SE = √(seed var/n + MC SE²); effective rank r [interval] fits the seed-mean "
                 "risk-vs-σ² curve to the LSA ladder L_r(σ²))")
        lines.append(format_table(rows, ("size", "params", "verdicts", f"risk σ²={s2[0]:g}",
                                         "slope S", "eff. rank", "χ²/dof", "per seed", "S_r(eff)",
                                         f"gap Bayes σ²={s2[0]:g}", f"gap σ²={s2[-1]:g}"), title))
        lines.append("")
        best, support = best_size(ds, **sel)
        r_star = c["best_rank"].values
        rows = []
        for j, v in enumerate(s2):
            risks = [f"{tab['risk'][a, j]:.3f}±{tab['se'][a, j]:.3f}"
                     for a in range(ds["size"].size)]
            bayes = float(c["bayes_risk"].sel(label_noise=v))
            ols = float(c["ols_risk"].sel(label_noise=v))
            b = best[j]
            rows.append((f"{v:g}", *risks, f"{bayes:.3f}", f"{ols:.3f}",
                         "all excluded" if not np.isfinite(b) else int(b),
                         f"{support[j]:.2f}", int(r_star[j])))
        heads = [f"size {int(s)}" for s in ds["size"].values]
        lines.append(format_table(rows, ("σ²", *heads, "Bayes", "OLS", "best size",
                                         "support", "LSA r*"),
                                  f"Risk vs context label noise (train σ₀²={s0:g}{input_text});"
                                  " best size "
                                  "over {0: ŷ = 0, risk tr Λ} ∪ sizes, support = bootstrap "
                                  "fraction over seeds"))
        lines.append(_trend_line(best, support, s2))
        lines.append("")
        if "input_noise" in ds.dims and ds["input_noise"].size > 1:
            lines += _input_noise_table(ds, sel, s0)
    attrs = ds.attrs
    lines.append(f"{attrs.get('setting', 'transformer')} sweep {attrs.get('config_hash', '')}: "
                 f"{attrs.get('compiles', '?')} compile(s), "
                 f"{float(attrs.get('wall_time_s', 0)):.1f} s on {attrs.get('device_count', '?')}"
                 f" x {attrs.get('device_kind', '?')}")
    return "\n".join(lines)


def _input_noise_table(ds, sel, s0) -> list[str]:
    """Risk vs context input noise σ_x² per size at the first σ², the references (least
    squares; no Bayes floor with input noise), the best size and the LSA's r*(σ², σ_x²)."""
    from iclsim.report import format_table

    sx2 = ds["input_noise"].values
    v0 = ds["label_noise"].values[0]
    base = {k: v for k, v in sel.items() if k != "input_noise"}
    tabs = [size_table(ds, **base, input_noise=u) for u in sx2]
    best, support = best_size(ds, axis="input_noise", **base, label_noise=v0)
    c = ds.sel(**base, label_noise=v0)
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
                                "LSA r*"), title),
            _trend_line(best, support, sx2, "σ_x²"), ""]


def _trend_line(best, support, s2, symbol="σ²") -> str:
    """Does the best size fall as σ² grows?  Counted over consecutive σ² levels."""
    b = np.asarray(best, float)
    ok = np.isfinite(b)
    b, s = b[ok], np.asarray(s2)[ok]
    if b.size < 2:
        return "best size: too few levels"
    steps = np.diff(b)
    falls, rises = int(np.sum(steps < 0)), int(np.sum(steps > 0))
    where = ", ".join(f"{symbol} {s[i]:g}→{s[i + 1]:g}" for i in np.flatnonzero(steps > 0))
    verdict = (f"the best size never rises as {symbol} grows" if rises == 0
               else f"the best size RISES at {rises} step(s) ({where})")
    return (f"best size: {int(b[0])} at {symbol}={s[0]:g} → {int(b[-1])} at {symbol}={s[-1]:g}; "
            "falls at "
            f"{falls} of {steps.size} consecutive steps; {verdict}; mean bootstrap support "
            f"{float(np.mean(np.asarray(support)[ok])):.2f}")


def figures(ds, out_dir, formats):
    from iclsim.transformer import figures as figs

    return figs.draw_all(ds, out_dir, formats)


class TransformerSetting:
    """Setting 3: trained softmax transformers (heads, width, layers) on noisy in-context
    linear regression, measured against setting 1's LSA ladder and the Bayes floor."""

    name = "transformer"
    config_class = TransformerSweepConfig
    scale = "size"
    run_axes = RUN_AXES
    static_axes = ("n_context",)
    verdicts = VERDICT_CODES

    def static(self, cfg, n_context):
        return _static(cfg, n_context)

    hyper = staticmethod(_hyper)
    trainer = staticmethod(transformer_trainer)
    data = staticmethod(_data)
    assess = staticmethod(assess)
    run_vars = staticmethod(run_vars)
    oracle = staticmethod(oracle_vars)
    summary = staticmethod(summary)
    figures = staticmethod(figures)


#: The engine setting ``transformer`` (``iclsim run sweeps/transformer_*.toml``).
TRANSFORMER = TransformerSetting()
