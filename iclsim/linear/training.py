"""Training and evaluation of setting-1 models on the shared engine.

``train`` vmaps the engine's scanned trainer over runs (rank × seed): rank is a
traced value (a column mask on the padded factors), so every rank shares one
compiled program per static shape (d, N, r_max, batch, mode, parametrisation,
init, steps).  After training, each run gets a verdict against the oracle's
optimal risks L_0..L_d (spec, Theorem A and "Training facts").

The optimizer is an optax chain (:func:`optimizer`): Adam (β1 = ``adam_b1``)
under an optax learning-rate schedule; in population mode the last
``lbfgs_fraction`` of the steps are an L-BFGS finish (``optax.lbfgs`` with its
zoom line search) on the exact risk, which takes Γ to the oracle's Γ_r to
rounding where Adam alone stalls along the weakly curved directions (1e-4 … 1e-1
after 2000 steps).  Measured over 60 random spectra (d ≤ 8, N ≤ 40, every rank):
relative Γ error ≤ 3.2e-11 in float64 (median 3e-15); in float32 median 1.4e-6,
worst 7e-2, within 0.4 × max(√(eps·tr Λ/h_r)/‖Γ_r‖, 100·eps·κ_r), where h_r and
κ_r are the softest curvature and the conditioning of the rank-r problem
(``tests/test_population_convergence.py``): the first is where the risk's
rounding hides any change (a value-based line search stops there), large when
λ_r ≈ λ_{r+1} or the spectrum is spread out.
Every population run is also certified: ``grad_rel`` (see
:func:`relative_gradient`) must be at the rounding floor for the run to count
as ``converged``.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from iclsim._validation import check_covariance, check_in_range, check_int, check_nonnegative
from iclsim.engine.evaluate import mean_and_se, risk_grid
from iclsim.engine.runner import train_runs
from iclsim.engine.trainer import (
    SCHEDULES, ScheduleConfig, adam, build_trainer, lbfgs, step_mask, switch_at,
)
from iclsim.linear import model as lsa
from iclsim.linear import oracle
from iclsim.linear.data import sample_gram, sample_prompts, sample_statistic, statistic_prompts

__all__ = [
    "MODES",
    "VERDICTS",
    "TrainStatic",
    "LinearTrainResult",
    "linear_trainer",
    "train",
    "evaluate",
    "classify_runs",
    "assess_runs",
    "relative_gamma_error",
    "relative_gradient",
    "converged_tolerance",
    "optimizer",
    "balance_u",
    "U_BALANCES",
    "TrainingProtocol",
    "PROTOCOL",
]

MODES = ("population", "monte_carlo")
#: How Monte Carlo prompts are drawn: "statistic" samples exactly what the LSA reads
#: (h, or the Gram for the full LSA) in O(d²) per prompt (``sample_statistic``,
#: ``sample_gram``); "tokens" draws every (x_i, y_i) (the reference).
SAMPLERS = ("statistic", "tokens")
#: Block parametrisation: how (u, A, B) are kept balanced (:func:`balance_u`).
U_BALANCES = ("none", "flow")
VERDICTS = ("optimum_reached", "stuck_at_rank_k", "not_converged", "diverged")


@dataclass(frozen=True)
class TrainingProtocol:
    """The verified training protocol of setting 1: the one set of defaults of
    :func:`train` and of a linear sweep file (``[model]``, ``[train]``, ``[axes]``).

    Monte Carlo training of the reduced Γ = A Bᵀ with leave-one-out queries (each of the
    N + 1 token examples of a prompt is the query of the other N: the same population
    objective with ~N times the signal per prompt), Adam β1 = 0.99, learning rate 0.1,
    init scale 0.1 and a Polyak average of the last 25 % of iterates: every rank of the
    canonical example, the weakest direction λ₈ = 0.1 included, reaches Γ_r in 3000
    steps (``sweeps/quickstart.toml``; with one query per prompt, β1 = 0.9 and no
    average, rank 8 stays on the rank-7 plateau at that budget, docs/linear.md).
    """

    mode: str = "monte_carlo"
    parametrization: str = "reduced"
    sampler: str = "tokens"
    loo: bool = True
    adam_b1: float = 0.99
    average_tail: float = 0.25
    learning_rate: float = 0.1
    init_scale: float = 0.1


#: The defaults of :func:`train` and of the linear sweep schema (defined here only).
PROTOCOL = TrainingProtocol()


@dataclass(frozen=True)
class TrainStatic:
    """Everything that fixes the compiled program's shape (one compile per value)."""

    d: int
    n_context: int
    r_max: int
    mode: str = "population"
    parametrization: str = "reduced"
    init: str = "random"
    steps: int = 2000
    batch: int = 256
    schedule: str = "cosine"
    final_lr_fraction: float = 0.01
    average_tail: float = 0.0
    train_noise: bool = False
    adam_b1: float = 0.9
    sampler: str = "statistic"
    """Monte Carlo prompts: "statistic" (exact, O(d²) per prompt) or "tokens" (reference)."""
    u_lr_scale: float = 1.0
    """Block parametrisation: u's learning rate as a fraction of the others' (0: no gradient
    steps on u; ``u_balance="flow"`` still rescales it).
    Γ = u A Bᵀ is invariant under u → c u, A → A / c, and Adam's per-parameter steps let u
    drift (to ~0.1), shrinking every step in Γ-space; a scale of 0.1 does not stop that
    (measured: u ends at 0.07-0.09 after 3000 Monte Carlo steps); ``u_balance`` does."""
    u_balance: str = "flow"
    """Block parametrisation: "flow" rebalances (u, A, B) after every Adam step to the
    balance gradient flow keeps (:func:`balance_u`; Γ unchanged); "none" leaves u free."""
    loo: bool = False
    """Monte Carlo: every one of N + 1 token examples is a query for the other N
    (leave-one-out; the same population objective, ~N + 1 times the signal per prompt);
    reduced/block parametrisations with the token sampler."""
    lbfgs_fraction: float | None = None
    """Fraction of the steps (the last ones) run by L-BFGS on the exact risk;
    ``None``: 0.5 in population mode, 0 in Monte Carlo mode (L-BFGS's line search
    needs a deterministic objective, so it is population-only)."""

    def __post_init__(self):
        if self.lbfgs_fraction is None:
            object.__setattr__(self, "lbfgs_fraction", 0.5 if self.mode == "population" else 0.0)
        check_in_range("lbfgs_fraction", self.lbfgs_fraction, 0.0, 1.0)
        if self.lbfgs_fraction > 0 and self.mode != "population":
            raise ValueError("lbfgs_fraction > 0 needs mode='population' (a deterministic "
                             f"objective for the line search), got mode={self.mode!r}")
        check_in_range("adam_b1", self.adam_b1, 0.0, 0.9999)
        check_in_range("u_lr_scale", self.u_lr_scale, 0.0, 1.0)
        if self.u_balance not in U_BALANCES:
            raise ValueError(f"u_balance must be one of {U_BALANCES}, got {self.u_balance!r}")
        check_int("n_context", self.n_context, 1)
        check_int("batch", self.batch, 1)
        check_int("steps", self.steps, 1)
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.loo and (self.sampler != "tokens" or self.parametrization == "full"):
            raise ValueError("loo=True needs sampler='tokens' and the reduced or block "
                             "parametrisation (every token example serves as a query)")
        if self.mode == "population" and self.parametrization == "full":
            raise ValueError(
                "mode='population' trains on the exact risk of the reduced predictor, so "
                "parametrization must be 'reduced' or 'block'; use mode='monte_carlo' for 'full'"
            )
        self.model_config()  # validates d, r_max, parametrization, init

    def model_config(self) -> lsa.LSAConfig:
        return lsa.LSAConfig(self.d, self.r_max, self.parametrization, self.init)

    @property
    def adam_steps(self) -> int:
        """Steps run by Adam (all but the L-BFGS finish; at least one)."""
        return max(1, self.steps - int(round(self.lbfgs_fraction * self.steps)))


class BalanceState(NamedTuple):
    kappa: jax.Array
    """u² − (‖A‖²_F + ‖B‖²_F)/2 of the initial weights (kept by gradient flow)."""


def balance_u(newton_steps: int = 6) -> optax.GradientTransformation:
    """Rebalance the block parametrisation after each step, keeping Γ = u (A Bᵀ)ᵀ exactly.

    Γ is invariant under u → c·u, A → A/√c, B → B/√c.  Gradient flow conserves
    κ = u² − (‖A‖²_F + ‖B‖²_F)/2 (each of u² − ‖A‖² and u² − ‖B‖² is conserved: the
    loss's derivatives along u, A and B all contract the same ⟨∇_Γ R, B Aᵀ⟩), so u grows
    with the factors; Adam's per-parameter step sizes break this and let u drift to ~0.1
    while A and B grow ~3×, which shrinks every step in Γ-space ~10× and leaves the weak
    directions (ranks 7, 8 of the canonical example) on a plateau.  This transformation
    follows each update with the c > 0 that restores the initial κ — the root of
    c²u² − S/c = κ, S = (‖A‖² + ‖B‖²)/2, unique since the left side increases in c — by
    Newton's method from c = 1 (the weights move little per step).  It acts on the
    weights only; Adam's moments are left as they are.  Needs the block parametrisation
    (weights ``u``, ``a``, ``b``); with u = 0 it leaves the step unchanged.
    """

    def halfnorm(w):
        return 0.5 * (jnp.sum(w["a"] ** 2) + jnp.sum(w["b"] ** 2))

    def init(params):
        return BalanceState(params["u"] ** 2 - halfnorm(params))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("balance_u needs the weights (params) in update()")
        new = jax.tree_util.tree_map(lambda p, d: p + d, params, updates)
        uu, big_s = new["u"] ** 2, halfnorm(new)
        c = jnp.ones_like(uu)
        for _ in range(newton_steps):
            f = c * c * uu - big_s / c - state.kappa
            c = c - f / (2.0 * c * uu + big_s / (c * c))
            c = jnp.maximum(c, 1e-3)
        c = jnp.where((uu > 0) & jnp.isfinite(c), c, 1.0)
        root = jnp.sqrt(c)
        target = {**new, "u": new["u"] * c, "a": new["a"] / root, "b": new["b"] / root}
        return jax.tree_util.tree_map(lambda t, p: t - p, target, params), state

    return optax.GradientTransformation(init, update)


def optimizer(static: TrainStatic):
    """The optax optimizer of ``static`` as a factory ``hyper -> GradientTransformation``.

    Adam with β1 = ``static.adam_b1`` and the learning rate ``hyper["learning_rate"]``
    (traced, injected) under the optax schedule of ``static.schedule`` laid over the
    Adam steps; then, for the last ``lbfgs_fraction`` of the steps, ``optax.lbfgs``
    (zoom line search) — :func:`iclsim.engine.trainer.switch_at`.  Block
    parametrisation: u's Adam steps are scaled by ``u_lr_scale``
    (:func:`iclsim.engine.trainer.step_mask`), and with ``u_balance="flow"`` every Adam
    step is followed by :func:`balance_u` (Γ unchanged; not during the L-BFGS finish).
    """
    sched = ScheduleConfig(kind=static.schedule, steps=static.adam_steps,
                           final_fraction=static.final_lr_fraction)

    def make(hyper):
        first = adam(sched.schedule(hyper["learning_rate"]), static.adam_b1)
        if static.parametrization == "block" and static.u_lr_scale != 1.0:
            scale = {"u": static.u_lr_scale, "a": None, "b": None}
            first = optax.chain(first, step_mask(lambda count: scale))
        if static.parametrization == "block" and static.u_balance == "flow":
            first = optax.chain(first, balance_u())
        if static.adam_steps >= static.steps:
            return first
        return switch_at(first, lbfgs(), static.adam_steps)

    return make


def squared_errors(params, key, factor, n_context, batch, label_noise, input_noise, sampler):
    """(ŷ − y_q)² of ``batch`` fresh prompts (context noise σ², σ_x²), drawn by ``sampler``."""
    if sampler == "tokens":
        prompts = sample_prompts(key, None, n_context, batch, label_noise=label_noise,
                                 input_noise=input_noise, factor=factor)
        return (lsa.apply(params, prompts) - prompts.y_query) ** 2
    if lsa.parametrization_of(params) == "full":
        g = sample_gram(key, factor, n_context, batch, label_noise=label_noise,
                        input_noise=input_noise)
        return (lsa.apply_gram(params, g.gram, g.x_query, n_context) - g.y_query) ** 2
    stat = sample_statistic(key, factor, n_context, batch, label_noise=label_noise,
                            input_noise=input_noise)
    return (lsa.apply(params, statistic_prompts(stat)) - stat.y_query) ** 2


def loo_squared_errors(params, key, factor, n_context, batch, label_noise, input_noise):
    """Leave-one-out squared errors, (batch, N + 1): each of N + 1 examples of a prompt is
    the query of the other N.

    With clean examples (x_j, y_j = x_jᵀw) and their context versions
    x̃_j = x_j + σ_x ξ_j, ỹ_j = y_j + σ ε_j: ŷ_j = x_jᵀ Γ (S − ỹ_j x̃_j)/N with
    S = Σ_i ỹ_i x̃_i.  Each term has exactly the distribution of the one-query loss, so
    the mean is the same population risk (reduced and block parametrisations).
    """
    k_tok, k_y, k_x = jax.random.split(key, 3)
    clean = sample_prompts(k_tok, None, n_context + 1, batch, factor=factor)
    x, y = clean.x, clean.y
    x_ctx = x + jnp.sqrt(input_noise) * jax.random.normal(k_x, x.shape, x.dtype)
    y_ctx = y + jnp.sqrt(label_noise) * jax.random.normal(k_y, y.shape, y.dtype)
    total = jnp.einsum("bn,bnd->bd", y_ctx, x_ctx)
    h = (total[:, None, :] - y_ctx[..., None] * x_ctx) / n_context
    gamma = lsa.effective_gamma(params)
    return (jnp.einsum("bnd,de,bne->bn", x, gamma, h) - y) ** 2


@functools.lru_cache(maxsize=64)
def linear_trainer(static: TrainStatic):
    """The engine trainer for ``static`` (cached: one build, one compile per shape).

    ``hyper`` per run: ``rank``, ``learning_rate``, ``init_scale``,
    ``label_noise`` and ``input_noise`` (training-prompt noise; used only when
    ``static.train_noise``).  ``data``: ``{"cov": Λ, "factor": chol(Λ)}``.
    """
    cfg = static.model_config()

    def init_params(key, hyper, data):
        return lsa.init(key, cfg, rank=hyper["rank"], scale=hyper["init_scale"])

    def noise(hyper, name):
        return hyper[name] if static.train_noise else 0.0

    if static.mode == "population":

        def loss(params, key, hyper, data):
            gamma = lsa.effective_gamma(params)
            return lsa.reduced_population_risk(
                gamma, data["cov"], static.n_context, noise(hyper, "label_noise"),
                noise(hyper, "input_noise"),
            )
    elif static.loo:

        def loss(params, key, hyper, data):
            return jnp.mean(loo_squared_errors(
                params, key, data["factor"], static.n_context, static.batch,
                noise(hyper, "label_noise"), noise(hyper, "input_noise")))
    else:

        def loss(params, key, hyper, data):
            return jnp.mean(squared_errors(
                params, key, data["factor"], static.n_context, static.batch,
                noise(hyper, "label_noise"), noise(hyper, "input_noise"), static.sampler))

    return build_trainer(
        init_params, loss, steps=static.steps, optimizer=optimizer(static),
        average_tail=static.average_tail,
    )


@dataclass
class LinearTrainResult:
    """Per-run results of :func:`train` (runs are rank-major: run = i_rank·seeds + seed).

    Every per-run array has a leading axis of length ``runs = len(ranks)·seeds``.  Two risks
    are kept: ``risk`` is what the verdict uses (exact where it can be), ``test_risk`` is an
    independent Monte Carlo estimate on fresh prompts for every parametrisation, so that the
    two can be compared.  The theory is in ``docs/theory/linear.md``.
    """

    rank: np.ndarray
    """(runs,) int: the rank budget r of each run (rank-major: each rank repeated ``seeds``
    times)."""
    seed: np.ndarray
    """(runs,) int: the seed index 0..seeds−1 of each run (its training key is
    ``fold_in(key, seed)``)."""
    params: Any
    """The trained parameters, a pytree whose leaves have a leading run axis (see
    :mod:`iclsim.linear.model`: ``params["weights"]`` and the rank mask)."""
    gamma: np.ndarray
    """(runs, d, d) effective Γ of each trained model (float64)."""
    loss: np.ndarray
    """(runs, steps) training loss per step (exact risk in population mode, the minibatch
    loss in Monte Carlo mode)."""
    risk: np.ndarray
    """(runs,) final risk on the training distribution, the one the verdict uses: the exact
    population risk :func:`iclsim.linear.oracle.population_risk` of ``gamma`` for the reduced
    and block parametrisations (no sampling error), the Monte Carlo ``test_risk`` for the full
    LSA (whose prediction is not of the form x_qᵀ Γ h alone).  NaN for a diverged run."""
    risk_se: np.ndarray
    """(runs,) standard error of ``risk`` (0 where exact)."""
    test_risk: np.ndarray
    """(runs,) Monte Carlo risk E[(ŷ − y_q)²] on ``eval_prompts`` fresh prompts drawn with the
    evaluation key from the training distribution (context label noise σ₀² =
    ``train_label_noise``, clean query), whatever the parametrisation: the sampled
    cross-check of ``risk``."""
    test_se: np.ndarray
    """(runs,) standard error of ``test_risk`` (sample standard deviation of the squared
    errors / √eval_prompts)."""
    gamma_error: np.ndarray
    """(runs,) ‖Γ − Γ_r‖_F / ‖Γ_r‖_F: the relative Frobenius distance of the trained Γ from
    the closed-form optimum Γ_r of its rank (Theorem A; B(d) with the training noise), i.e.
    whether training found *the* optimum, not only its risk.  NaN where Γ_r is not unique
    (λ_r = λ_{r+1})."""
    optimal_risks: np.ndarray
    """(d+1,) L_0..L_d for the training distribution (the ladder of the verdicts)."""
    verdict: list
    """(runs,) str, from :func:`classify_runs`: ``optimum_reached``, ``stuck_at_rank_k``,
    ``not_converged`` or ``diverged``."""
    stuck_rank: np.ndarray
    """(runs,) k for ``stuck_at_rank_k`` verdicts, else -1."""
    grad_rel: np.ndarray
    """(runs,) :func:`relative_gradient` of the trained weights (NaN for the full LSA)."""
    converged: np.ndarray
    """(runs,) ``grad_rel <= converged_tolerance`` (population mode: else ``not_converged``)."""
    static: TrainStatic
    """The shape-fixing settings of the compiled program (mode, parametrisation, steps,
    batch, sampler, …): :class:`TrainStatic`."""
    wall_time: float
    """Seconds spent training (compile included, assessment excluded)."""
    hyper: dict = field(default_factory=dict)
    """The scalar hyperparameters shared by all runs: ``learning_rate``, ``init_scale``,
    ``train_label_noise``."""

    def to_xarray(self):
        """The per-run fields labelled by their axes: an ``xarray.Dataset`` over (rank, seed).

        Variables ``risk``, ``risk_se``, ``test_risk``, ``test_se``, ``gamma_error``,
        ``grad_rel``, ``converged``, ``stuck_rank``, ``verdict`` (str) have dims
        (rank, seed); ``gamma`` (rank, seed, row, col); ``loss`` (rank, seed, step);
        ``optimal_risk`` is the ladder L_0..L_d on its own dimension ``ladder_rank``.
        E.g. ``res.to_xarray().verdict.sel(rank=3)`` are the verdicts of the rank-3 seeds.
        The hyperparameters are in ``attrs``.
        """
        from iclsim.engine.runner import runs_dataset

        fields = ("risk", "risk_se", "test_risk", "test_se", "gamma_error", "grad_rel",
                  "converged", "stuck_rank", "gamma", "loss")
        per_run = {name: getattr(self, name) for name in fields}
        per_run["verdict"] = np.asarray(self.verdict, dtype=str)
        ladder = np.arange(len(self.optimal_risks))
        return runs_dataset(
            "rank", self.rank, self.seed, per_run,
            trailing_dims={"gamma": ("row", "col"), "loss": ("step",)},
            coords={"optimal_risk": ("ladder_rank", np.asarray(self.optimal_risks)),
                    "ladder_rank": ladder},
            attrs={k: float(v) for k, v in self.hyper.items()})

    def summary_rows(self):
        """One dict per rank: L_r, mean trained risk, mean/max Γ error, verdict counts."""
        rows = []
        for r in np.unique(self.rank):
            sel = self.rank == r
            verdicts = [self.verdict[i] for i in np.flatnonzero(sel)]
            counts = {v: verdicts.count(v) for v in dict.fromkeys(verdicts)}
            rows.append(
                {
                    "rank": int(r),
                    "L_r": float(self.optimal_risks[r]),
                    "risk": float(np.mean(self.risk[sel])),
                    "test_risk": float(np.mean(self.test_risk[sel])),
                    "test_se": float(np.max(self.test_se[sel])),
                    "gamma_error_max": float(np.max(self.gamma_error[sel])),
                    "gamma_error_mean": float(np.mean(self.gamma_error[sel])),
                    "verdicts": counts,
                    "converged": int(np.sum(self.converged[sel])),
                }
            )
        return rows


def relative_gamma_error(gamma, cov, n_context, ranks, *, pretrain_label_noise=0.0):
    """‖Γ − Γ_r‖_F / ‖Γ_r‖_F per run (NaN where λ_r = λ_{r+1} or r = 0)."""
    out = np.full(len(ranks), np.nan)
    for i, r in enumerate(ranks):
        if r == 0:
            continue
        try:
            target = oracle.optimal_gamma(
                cov, n_context, int(r), pretrain_label_noise=pretrain_label_noise
            )
        except oracle.RankTieError:
            continue
        out[i] = np.linalg.norm(gamma[i] - target) / np.linalg.norm(target)
    return out


def converged_tolerance(dtype) -> float:
    """Largest :func:`relative_gradient` of a ``converged`` run: max(1000·eps, 1e-10).

    The gradient of the exact risk evaluated in ``dtype`` carries rounding noise;
    at Γ_r, after the L-BFGS finish, the measured ``grad_rel`` is up to 2e-5 in
    float32 (~170 eps; 60 random spectra, d ≤ 8) and 5e-18…3.4e-13 in float64,
    where the finish can end on the risk's rounding floor with a little gradient
    left along a flat direction: hence the floor 1e-10.  A gradient this small
    bounds the relative error of Γ by about ``κ·grad_rel``, κ the conditioning of
    the rank-r problem (large when λ_r ≈ λ_{r+1}): ≤ 1e-6 in float64 for κ ≤ 1e4.
    """
    return max(1000.0 * float(jnp.finfo(dtype).eps), 1e-10)


def relative_gradient(params, cov, n_context, *, label_noise=0.0, input_noise=0.0):
    """ρ = ‖∇_w R‖ / (2‖Λ²‖_F ‖w‖), the scale-free first-order optimality of the exact risk.

    ``params`` has a leading run axis (reduced or block parametrisation);
    ``label_noise`` and ``input_noise`` (σ², σ_x², per run or scalar) are those of
    the training prompts.  ∇_w is the gradient of the population risk R(Γ(w)) with
    respect to all trained weights, evaluated in the weights' dtype; 2‖Λ²‖_F is the
    norm of ∇_Γ R at Γ = 0, so ρ does not change when Λ or the factors are rescaled.
    Returns (runs,) float64.
    """
    weights = params["weights"]
    dtype = jax.tree_util.tree_leaves(weights)[0].dtype
    runs = jax.tree_util.tree_leaves(weights)[0].shape[0]
    s2 = jnp.broadcast_to(jnp.asarray(label_noise, dtype), (runs,))
    sx2 = jnp.broadcast_to(jnp.asarray(input_noise, dtype), (runs,))
    cov_j = jnp.asarray(cov, dtype)

    def one(run_params, a, b):
        def risk(w):
            gamma = lsa.effective_gamma({**run_params, "weights": w})
            return lsa.reduced_population_risk(gamma, cov_j, n_context, a, b)

        grad = jax.grad(risk)(run_params["weights"])
        return optax.tree.norm(grad), optax.tree.norm(run_params["weights"])

    g, w = jax.jit(jax.vmap(one))(params, s2, sx2)
    scale = 2.0 * np.linalg.norm(np.asarray(cov, float) @ np.asarray(cov, float))
    g, w = np.asarray(g, float), np.asarray(w, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(w > 0, g / (scale * w), np.where(g > 0, np.inf, 0.0))


def classify_runs(risk, risk_se, ranks, optimal_risks, *, rtol=0.1, n_se=3.0):
    """Verdict per run from its final risk and the ladder L_0 > L_1 > … > L_d.

    With tolerance ``tol_k = n_se·SE + rtol·(L_{k−1} − L_k)`` (a fraction of the
    gain the k-th direction brings):

    * ``diverged``: risk is NaN or inf;
    * ``optimum_reached``: risk ≤ L_r + tol_r;
    * ``stuck_at_rank_k`` (k < r): ``|risk − L_k|`` ≤ tol_k for the largest such k
      (the model behaves like a rank-k optimum; the full LSA's spurious rank-1
      trap shows up as ``stuck_at_rank_k`` with k = 1);
    * ``not_converged``: anything else.

    ``optimal_risks`` is one ladder (d+1,) or one per run (runs, d+1).
    Returns ``(verdicts, stuck_rank)`` with ``stuck_rank = -1`` unless stuck.
    """
    ladders = np.asarray(optimal_risks, float)
    if ladders.ndim == 1:
        ladders = np.broadcast_to(ladders, (len(ranks), ladders.size))
    verdicts, stuck = [], np.full(len(ranks), -1)
    for i, (value, se, r) in enumerate(zip(risk, risk_se, ranks)):
        opt = ladders[i]
        gaps = opt[:-1] - opt[1:]
        gaps = np.concatenate([gaps[:1], gaps])  # stuck at rank 0 uses the first gap
        se = 0.0 if not np.isfinite(se) else se
        tol = n_se * se + rtol * gaps
        if not np.isfinite(value):
            verdicts.append("diverged")
        elif value <= opt[r] + tol[r]:
            verdicts.append("optimum_reached")
        else:
            close = [k for k in range(r) if abs(value - opt[k]) <= tol[k]]
            if close:
                stuck[i] = close[-1]
                verdicts.append("stuck_at_rank_k")
            else:
                verdicts.append("not_converged")
    return verdicts, stuck


def assess_runs(params, loss, cov, n_context, ranks, train_label_noise, *, parametrization,
                eval_key, eval_prompts, rtol=0.1, mode=None, sampler="statistic"):
    """Post-training assessment of a batch of runs (host side, float64).

    Per run: effective Γ, the final risk (exact population risk of Γ for the
    reduced/block parametrisations, Monte Carlo test risk on the training
    distribution for the full LSA), the Monte Carlo test risk with its SE, the
    relative Γ error and the verdict against the ladder L_0..L_d of the run's
    training distribution (Theorem A, B(d)).  Non-finite runs are ``diverged``.

    ``grad_rel`` is :func:`relative_gradient` (reduced/block; NaN for the full
    LSA) and ``converged`` is ``grad_rel <= converged_tolerance(dtype)``.  With
    ``mode="population"`` a run that is not ``converged`` cannot be
    ``optimum_reached``: its verdict becomes ``not_converged``.
    """
    ranks = np.asarray(ranks)
    train_label_noise = np.asarray(train_label_noise, float)
    n_runs = len(ranks)
    gamma = np.asarray(jax.vmap(lsa.effective_gamma)(params), float)
    finite = np.isfinite(gamma).all(axis=(1, 2)) & np.isfinite(loss).all(axis=1)
    test_risk, test_se = np.full(n_runs, np.nan), np.full(n_runs, np.nan)
    for level in np.unique(train_label_noise):
        sel = np.flatnonzero(train_label_noise == level)
        sub = jax.tree_util.tree_map(lambda a: a[sel], params)
        m, se = evaluate(eval_key, sub, cov, n_context, label_noise=level, n_prompts=eval_prompts,
                         sampler=sampler)
        test_risk[sel], test_se[sel] = m[:, 0], se[:, 0]
    if parametrization == "full":
        risk, risk_se = test_risk.copy(), test_se.copy()
    else:
        risk = np.array([
            oracle.population_risk(g, cov, n_context, label_noise=s2) if ok else np.nan
            for g, ok, s2 in zip(gamma, finite, train_label_noise)
        ])
        risk_se = np.zeros(n_runs)
    risk = np.where(finite, risk, np.nan)
    ladder = np.array([
        oracle.optimal_risks(cov, n_context, label_noise=s2, pretrain_label_noise=s2)
        for s2 in train_label_noise
    ])
    verdict, stuck = classify_runs(risk, risk_se, ranks, ladder, rtol=rtol)
    if parametrization == "full":
        grad_rel = np.full(n_runs, np.nan)
        converged = np.zeros(n_runs, bool)
    else:
        grad_rel = relative_gradient(params, cov, n_context, label_noise=train_label_noise)
        dtype = jax.tree_util.tree_leaves(params["weights"])[0].dtype
        converged = finite & (grad_rel <= converged_tolerance(dtype))
    if mode == "population":
        verdict = ["not_converged" if v == "optimum_reached" and not ok else v
                   for v, ok in zip(verdict, converged)]
    err = np.array([
        relative_gamma_error(g[None], cov, n_context, [r], pretrain_label_noise=s2)[0]
        for g, r, s2 in zip(gamma, ranks, train_label_noise)
    ])
    return {
        "gamma": gamma, "risk": risk, "risk_se": risk_se, "test_risk": test_risk,
        "test_se": test_se, "gamma_error": err, "ladder": ladder, "verdict": verdict,
        "stuck_rank": stuck, "finite": finite, "grad_rel": grad_rel, "converged": converged,
    }


def _as_levels(label_noise, input_noise):
    s2 = np.atleast_1d(np.asarray(check_nonnegative("label_noise", label_noise), float))
    sx2 = np.atleast_1d(np.asarray(check_nonnegative("input_noise", input_noise), float))
    s2, sx2 = np.broadcast_arrays(s2, sx2)
    return s2.ravel(), sx2.ravel()


@functools.partial(jax.jit, static_argnames=("n_context", "n_batches", "batch", "sampler"))
def _evaluate(key, params, factor, label_noise, input_noise, *, n_context, n_batches, batch,
              sampler):
    keys = jax.random.split(key, n_batches)

    def errors(run_params, s2, sx2, k):
        return squared_errors(run_params, k, factor, n_context, batch, s2, sx2, sampler)

    return risk_grid(errors, keys, params, label_noise, input_noise, factor.dtype)


def evaluate(key, params, cov, n_context, *, label_noise=0.0, input_noise=0.0, n_prompts=32768,
             batch=2048, sampler="statistic"):
    """Monte Carlo risk of trained models on clean or noisy prompts, with standard errors.

    ``params`` has a leading run axis (as returned by :func:`train`).  The noise
    levels ``label_noise`` (σ²) and ``input_noise`` (σ_x²) are broadcast together
    into L (σ², σ_x²) pairs; every run and level is evaluated in one vmapped
    program on the same ``n_prompts`` prompts (common random numbers).

    ``sampler``: "tokens" (every example drawn) or "statistic" (exactly the statistic
    the LSA reads, O(d²) per prompt; see :func:`squared_errors`).

    Returns ``(mean, se)``, each of shape (runs, L), se = sd / sqrt(n_prompts).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    cov = check_covariance(cov)
    n = check_int("n_context", n_context, 1)
    batch = check_int("batch", batch, 1)
    n_prompts = check_int("n_prompts", n_prompts, 2)
    n_batches = max(1, -(-n_prompts // batch))
    s2, sx2 = _as_levels(label_noise, input_noise)
    dtype = jnp.result_type(float)
    factor = jnp.asarray(np.linalg.cholesky(cov), dtype)
    m1, m2 = _evaluate(
        key, params, factor, jnp.asarray(s2, dtype), jnp.asarray(sx2, dtype),
        n_context=n, n_batches=n_batches, batch=batch, sampler=sampler,
    )
    return mean_and_se(m1, m2, n_batches * batch)


def train(
    key,
    cov,
    n_context,
    ranks,
    *,
    mode=PROTOCOL.mode,
    parametrization=PROTOCOL.parametrization,
    init="random",
    seeds=1,
    steps=2000,
    batch=256,
    learning_rate=PROTOCOL.learning_rate,
    init_scale=PROTOCOL.init_scale,
    schedule="cosine",
    final_lr_fraction=0.01,
    average_tail=PROTOCOL.average_tail,
    train_label_noise=0.0,
    r_max=None,
    eval_prompts=32768,
    rtol=0.1,
    adam_b1=PROTOCOL.adam_b1,
    lbfgs_fraction=None,
    sampler=PROTOCOL.sampler,
    loo=PROTOCOL.loo,
    u_lr_scale=1.0,
    u_balance="flow",
    progress=False,
) -> LinearTrainResult:
    """Train rank-limited LSA models for every (rank, seed) in one compiled program.

    The defaults are the verified protocol :data:`PROTOCOL` (Monte Carlo, reduced,
    leave-one-out, β1 = 0.99, learning rate 0.1, tail average 0.25), the same as a linear
    sweep file's.  Population mode (``mode="population"``, the exact risk, finished by
    L-BFGS) takes ``loo=False, sampler="statistic", adam_b1=0.9, average_tail=0.0`` as
    the presets ``sweeps/linear_*.toml`` state them.

    Parameters
    ----------
    key : PRNG key.  Seed s uses ``fold_in(key, s)`` for every rank (common
        random numbers across ranks).
    cov : (d, d) symmetric positive-definite Λ.
    n_context : N >= 1.
    ranks : iterable of ints in [1, d].
    mode : ``"population"`` (Adam on the exact risk of the reduced predictor;
        reduced/block only) or ``"monte_carlo"`` (fresh prompts every step).
    parametrization : ``"reduced"``, ``"block"`` or ``"full"`` (see :mod:`.model`).
    init : ``"random"`` or ``"block"`` (full LSA only).
    seeds : number of seeds per rank (>= 1).
    steps, batch : Adam steps and prompts per step (batch unused in population mode).
    learning_rate, init_scale : positive floats.
    schedule : ``"cosine"`` (decay to ``final_lr_fraction`` of the learning rate) or
        ``"constant"``.
    average_tail : fraction of the final steps whose iterates are averaged
        (Polyak–Ruppert) into the returned weights; 0 returns the last iterate.
    train_label_noise : σ₀², context label-noise variance of the training prompts.
    r_max : padded rank (default ``max(ranks)``).
    eval_prompts : held-out prompts for the Monte Carlo test risk.
    rtol : verdict tolerance, see :func:`classify_runs`.
    adam_b1 : Adam's first-moment decay (0.99 averages more gradient noise than 0.9).
    lbfgs_fraction : fraction of the steps (the last) run by L-BFGS on the exact
        risk; ``None``: 0.5 in population mode, 0 in Monte Carlo mode.  With the
        defaults, population mode reaches the oracle's Γ_r to ≤ 1e-10 relative
        error in float64; in float32 to ~1e-6, more on ill-conditioned spectra
        (see the module docstring).
    sampler : Monte Carlo prompts, ``"statistic"`` (exact and O(d²) per prompt:
        what the LSA reads, see :func:`iclsim.linear.data.sample_statistic`) or
        ``"tokens"`` (every example drawn; the reference).  Also used for the test risk.
    loo : Monte Carlo, reduced/block: every example of an (N + 1)-example prompt is a
        query for the other N (token sampler; same objective, far less gradient noise).
    progress : show a progress bar (stderr) while training (same numbers either way).

    Returns
    -------
    :class:`LinearTrainResult`.  Verdicts compare the final risk with the optimal
    risks of the training distribution (Theorem A; B(d) with training noise).
    """
    cov = check_covariance(cov)
    d = cov.shape[0]
    n = check_int("n_context", n_context, 1)
    ranks = [check_int("ranks[]", r, 1, d) for r in np.atleast_1d(ranks)]
    if not ranks:
        raise ValueError("ranks must contain at least one rank in [1, d]")
    seeds = check_int("seeds", seeds, 1)
    r_max = check_int("r_max", max(ranks) if r_max is None else r_max, max(ranks), d)
    check_in_range("learning_rate", learning_rate, np.finfo(float).tiny)
    check_in_range("init_scale", init_scale, 0.0)
    check_nonnegative("train_label_noise", train_label_noise)
    static = TrainStatic(
        d=d, n_context=n, r_max=r_max, mode=mode, parametrization=parametrization, init=init,
        steps=steps, batch=batch if mode == "monte_carlo" else 1, schedule=schedule,
        final_lr_fraction=final_lr_fraction, average_tail=average_tail,
        train_noise=bool(train_label_noise), adam_b1=float(adam_b1),
        lbfgs_fraction=None if lbfgs_fraction is None else float(lbfgs_fraction),
        sampler="tokens" if loo else sampler, loo=bool(loo), u_lr_scale=float(u_lr_scale),
        u_balance=u_balance,
    )
    dtype = jnp.result_type(float)
    run_rank = np.repeat(np.asarray(ranks), seeds)
    run_seed = np.tile(np.arange(seeds), len(ranks))
    n_runs = len(run_rank)
    hyper = {
        "rank": jnp.asarray(run_rank, jnp.int32),
        "learning_rate": jnp.full(n_runs, learning_rate, dtype),
        "init_scale": jnp.full(n_runs, init_scale, dtype),
        "label_noise": jnp.full(n_runs, train_label_noise, dtype),
        "input_noise": jnp.zeros(n_runs, dtype),
    }
    data = {"cov": jnp.asarray(cov, dtype), "factor": jnp.asarray(np.linalg.cholesky(cov), dtype)}
    train_key, eval_key = jax.random.split(key)
    keys = jax.vmap(lambda s: jax.random.fold_in(train_key, s))(jnp.asarray(run_seed, jnp.int32))
    start = time.perf_counter()
    params, metrics = train_runs(linear_trainer(static), keys, hyper, data, progress=progress)
    params = jax.block_until_ready(params)
    wall = time.perf_counter() - start

    loss = np.asarray(metrics["loss"], float)
    out = assess_runs(
        params, loss, cov, n, run_rank, np.full(n_runs, float(train_label_noise)),
        parametrization=parametrization, eval_key=eval_key, eval_prompts=eval_prompts, rtol=rtol,
        mode=mode,
    )
    return LinearTrainResult(
        rank=run_rank, seed=run_seed, params=params, gamma=out["gamma"], loss=loss,
        risk=out["risk"], risk_se=out["risk_se"], test_risk=out["test_risk"],
        test_se=out["test_se"], gamma_error=out["gamma_error"], optimal_risks=out["ladder"][0],
        verdict=out["verdict"], stuck_rank=out["stuck_rank"], grad_rel=out["grad_rel"],
        converged=out["converged"], static=static, wall_time=wall,
        hyper={"learning_rate": learning_rate, "init_scale": init_scale,
               "train_label_noise": train_label_noise},
    )
