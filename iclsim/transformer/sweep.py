"""Setting 3 as a sweep: trained softmax transformers of several sizes on setting 1's data.

Grid axes (``[axes]``): ``n_context`` (static: one compiled program per N), ``size``
(an index 1..K into the size list ``[model] heads/width/layers``), ``seed``,
``learning_rate``, ``init_scale``, ``train_label_noise`` σ₀² (all traced: every size
shares one program, padded to the largest size and masked, :mod:`iclsim.transformer.model`).
Evaluation (``[eval]``): context label noise σ² × context input noise σ_x² on a grid
(σ_x² default 0: label noise only); every run and every reference (Bayes, OLS, ridge) sees
the same Monte Carlo prompts, and each run stores the Monte Carlo covariance of its risks
across the σ² levels (paired on those prompts) for the statistics of
:mod:`iclsim.transformer.analysis`.

This module is the setting (schema, trainer, evaluation, verdicts, oracle); the aggregates,
statistics and tables are :mod:`iclsim.transformer.analysis`, the figures
:mod:`iclsim.transformer.figures`.  See ``docs/transformer.md``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from iclsim.engine.evaluate import mean_and_se
from iclsim.engine.setting import Runs, Setting, eval_key
from iclsim.engine.trainer import ScheduleConfig, build_trainer
from iclsim.linear import oracle
from iclsim.linear.data import sample_prompts
from iclsim.transformer import model as tfm
from iclsim.transformer import references as refs
from iclsim.transformer.config import TransformerSweepConfig
from iclsim.transformer.analysis import best_size, convergence, first_cell as _first, size_table, usable

__all__ = ["TransformerSweepConfig", "TRANSFORMER", "RUN_AXES", "VERDICT_CODES", "usable",
           "size_table", "best_size", "convergence"]

#: The run axes of a transformer sweep, in the order of the run index (one trained model per
#: combination).
RUN_AXES = ("n_context", "size", "seed", "learning_rate", "init_scale", "train_label_noise")
#: ``converged``: the training loss has stopped falling (:func:`convergence`);
#: ``not_converged``: trained but still falling; ``trivial``: never left the trivial
#: predictor ŷ = 0 (clean risk within ``eval.trivial_tolerance`` of tr Λ); ``diverged``:
#: NaN/inf.  Only ``converged`` runs enter the aggregates of this setting
#: (:func:`iclsim.transformer.analysis.usable`); the tables count the others by name.
VERDICT_CODES = ("converged", "not_converged", "trivial", "diverged")
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
    """Linear warm-up to ``peak`` (may be traced) over ``warmup_steps``, then the engine's
    :class:`iclsim.engine.trainer.ScheduleConfig` (optax's cosine decay to
    ``final_lr_fraction`` · peak, or constant) over the remaining steps, joined with
    ``optax.join_schedules``."""
    warm = max(static.warmup_steps, 1)
    rest = ScheduleConfig(static.schedule, max(static.steps - static.warmup_steps, 1),
                          static.final_lr_fraction).schedule(peak)
    if not static.warmup_steps:
        return rest
    ramp = lambda count: peak * jnp.minimum(1.0, (count + 1.0) / warm)  # noqa: E731
    return optax.join_schedules([ramp, rest], [static.warmup_steps])


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
    """Per run (leading axis of ``params``) and noise level: Monte Carlo moments of the squared
    error, its cross-moments between levels, and those of its paired difference to the Bayes
    predictor, all on the same prompts.

    ``noise``: (P, 2) (σ², σ_x²) pairs (:func:`references.noise_pairs`); ``draw_xi``: draw the
    context input noise (static; False when every σ_x² is 0).  Returns ``(m, cross)``: m
    (runs, P, 4) = E[e], E[e²], E[e − e_B], E[(e − e_B)²]; cross (runs, P, P) = E[e_j e_k],
    e_B the error of the label-noise posterior mean on the shown context (the Bayes predictor
    only where σ_x² = 0; :func:`assess` drops the rest).  The prompt stream is
    :func:`references.draw_eval` (and :func:`references.draw_input_noise`) on
    ``split(key, n_batches)``, as in :func:`references.reference_risks`.
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
                return (pred - prompts.y_query) ** 2

            return jax.vmap(run)(params), eb

        e, eb = jax.lax.map(level, levels)  # (P, runs, batch), (P, batch)
        g = e - eb[:, None]
        m = jnp.stack([e.mean(-1), (e * e).mean(-1), g.mean(-1), (g * g).mean(-1)], -1)
        cross = jnp.einsum("prb,qrb->rpq", e, e) / batch
        return (acc[0] + jnp.swapaxes(m, 0, 1), acc[1] + cross), None

    runs = jax.tree_util.tree_leaves(params)[0].shape[0]
    dtype = jnp.result_type(float)
    p = levels.shape[0]
    zero = (jnp.zeros((runs, p, 4), dtype), jnp.zeros((runs, p, p), dtype))
    (m, cross), _ = jax.lax.scan(per_batch, zero, keys)
    return m / n_batches, cross / n_batches


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
    """Noisy-prompt risks (± SE) on the (σ², σ_x²) grid, their Monte Carlo covariance across σ²
    at each σ_x² (paired on the same prompts), the gap to the Bayes floor (NaN where
    σ_x² > 0) and the verdicts (trivial at the lowest (σ², σ_x²); :func:`convergence`)."""
    n_batches, batch = _eval_batches(cfg)
    factor = jnp.asarray(np.linalg.cholesky(cfg.spectrum.covariance()), jnp.result_type(float))
    params = {"weights": params["weights"], "masks": params["masks"]}
    pairs, draw_xi, shape = refs.noise_pairs(cfg.eval.label_noise, cfg.eval.input_noise)
    m, cross = _evaluate(key, params, factor, static.n_context, pairs, n_batches=n_batches,
                         batch=batch, head_dim=static.shape.head_dim, draw_xi=draw_xi)
    m, cross = np.asarray(m, float), np.asarray(cross, float)
    n_total = n_batches * batch
    risk, se = mean_and_se(m[..., 0], m[..., 1], n_total)
    gap, gap_se = mean_and_se(m[..., 2], m[..., 3], n_total)
    cov = (cross - risk[:, :, None] * risk[:, None, :]) / (n_total - 1)
    k, i = shape if len(shape) == 2 else (shape[0], 1)
    cov = cov.reshape(len(runs), k, i, k, i)
    cov = np.stack([cov[:, :, b, :, b] for b in range(i)], axis=1)  # (runs, σ_x², σ², σ²)
    risk, se, gap, gap_se = (v.reshape(len(runs), *shape) for v in (risk, se, gap, gap_se))
    sx2 = np.asarray(cfg.eval.input_noise, float)
    gap, gap_se = (np.where(sx2 > 0, np.nan, v) for v in (gap, gap_se))
    trace = float(np.trace(cfg.spectrum.covariance()))
    s2 = np.asarray(cfg.eval.label_noise, float)
    loss = np.asarray(loss, float)
    final_loss = loss[:, -max(1, loss.shape[1] // 10):].mean(axis=1)
    finite = np.all(np.isfinite(risk), axis=(1, 2)) & np.all(np.isfinite(loss), axis=1)
    lowest = (int(np.argmin(s2)), int(np.argmin(sx2)))
    trivial = finite & (risk[:, lowest[0], lowest[1]] >= (1.0 - cfg.eval.trivial_tolerance)
                        * trace)
    conv, slope, slope_se, rel = convergence(np.where(np.isfinite(loss), loss, 0.0),
                                             window=cfg.eval.converged_window,
                                             tolerance=cfg.eval.converged_tolerance)
    verdict = np.where(~finite, "diverged", np.where(
        trivial, "trivial", np.where(conv, "converged", "not_converged")))
    return {
        "eval_risk": risk, "eval_se": se, "eval_mc_cov": cov, "bayes_gap": gap,
        "bayes_gap_se": gap_se, "final_loss": final_loss, "loss_slope": slope,
        "loss_slope_se": slope_se, "loss_drop_80": rel, "verdict": verdict,
        "diverged": ~finite,
    }


def run_vars(cfg: TransformerSweepConfig) -> dict:
    noise = ("label_noise", "input_noise")
    return {
        "eval_risk": (noise, {"long_name": "Monte Carlo risk E[(ŷ − y_q)²] on prompts with "
                              "context label noise σ² and context input noise σ_x²"}),
        "eval_se": (noise, {"long_name": "standard error of eval_risk"}),
        "eval_mc_cov": (("input_noise", "label_noise", "label_noise_2"),
                        {"long_name": "Monte Carlo covariance of eval_risk between two σ² "
                         "levels at one σ_x² (same prompts at every level)"}),
        "bayes_gap": (noise, {"long_name": "eval_risk − Bayes risk, paired on the same prompts "
                              "(NaN where σ_x² > 0: no closed-form Bayes predictor there)"}),
        "bayes_gap_se": (noise, {"long_name": "standard error of bayes_gap (paired)"}),
        "final_loss": ((), {"long_name": "training loss, mean over the last 10 % of steps"}),
        "loss_slope": ((), {"long_name": "slope of the training loss per step over the final "
                            "eval.converged_window of steps"}),
        "loss_slope_se": ((), {"long_name": "standard error of loss_slope"}),
        "loss_drop_80": ((), {"long_name": "(mean loss over the 10 % of steps before 80 %) / "
                              "(mean over the final 10 %) − 1"}),
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
    new_coords = {"label_noise": s2, "label_noise_2": s2, "input_noise": sx2,
                  "rank_all": np.arange(d + 1),
                  "ridge_lambda": lams, "i": np.arange(d), "j": np.arange(d)}
    return data_vars, new_coords, {"head_dim": cfg.model.head_dim,
                                   "mlp_ratio": cfg.model.mlp_ratio}


def summary(ds) -> str:
    from iclsim.transformer import analysis

    return analysis.summary(ds)


def figures(ds, out_dir, formats):
    from iclsim.transformer import figures as figs

    return figs.draw_all(ds, out_dir, formats)


class TransformerSetting(Setting):
    """Setting 3: trained softmax transformers (heads, width, layers) on noisy in-context
    linear regression, measured against setting 1's LSA ladder and the Bayes floor."""

    name = "transformer"
    kind = "trained"
    config_class = TransformerSweepConfig
    scale = "size"
    tuning_axes = ("learning_rate", "init_scale")
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
