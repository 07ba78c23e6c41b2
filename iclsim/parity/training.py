"""Training and evaluation of the parity model (setting 2) on the shared engine.

Two protocols (spec ``parity.md``, "Training: what to expect and report"):

``"joint"``
    all m heads trained together from small random logits (known to collapse
    several heads onto the most important block for m >= 2);
``"progressive"``
    heads are added one at a time in ``heads`` equal phases of the run: during
    phase h only head h's logits and all readouts train, earlier heads' logits are
    frozen, and head h starts (at its phase start) away from the bits already
    covered, with logits ``log max(1 − k·Σ_{h'<h} α_{h'}, 0.01)``.

Two modes: ``"population"`` minimises the exact loss (5) of the spec (no
sampling); ``"monte_carlo"`` trains on fresh prompts, with the squared loss of
the query or (``loo=True``) the leave-one-out loss over N + 1 examples, each the
query for the other N (same population loss, less gradient noise).

Each protocol is an optax transformation (:func:`optimizer`): freezing is a
step-dependent mask on gradients and updates, the fresh start of a head is an
update (:func:`_fresh_start`), the per-phase restarts are ``optax.join_schedules``.
Population mode ends with L-BFGS on all active heads (the last
``lbfgs_fraction`` = 25 % of the steps) and moves the progressive logits by
normalised gradient descent (``logit_step``); it reaches R_m to rounding.

Every run gets a verdict from its attention masses and readout: see
:func:`classify_runs`; in population mode a run also needs a gradient at the
rounding floor (``converged``, :func:`converged_tolerance`).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from iclsim._validation import check_in_range, check_int
from iclsim.engine.evaluate import mean_and_se, risk_grid
from iclsim.engine.runner import train_runs
from iclsim.engine.trainer import (
    SCHEDULES,
    ScheduleConfig,
    adam,
    build_trainer,
    lbfgs,
    step_mask,
    switch_at,
)
from iclsim.parity import model as pm
from iclsim.parity import oracle
from iclsim.parity.data import sample_prompts

__all__ = [
    "MODES",
    "PROTOCOLS",
    "VERDICTS",
    "ParityStatic",
    "ParityTrainResult",
    "parity_trainer",
    "optimizer",
    "train",
    "evaluate",
    "classify_runs",
    "assess_runs",
    "gradient_norm",
    "converged_tolerance",
]

MODES = ("population", "monte_carlo")
PROTOCOLS = ("joint", "progressive")
LOGIT_STEPS = ("adam", "normalized")
VERDICTS = ("optimum_reached", "collapsed", "wrong_feature", "not_converged", "diverged")


@dataclass(frozen=True)
class ParityStatic:
    """What fixes the compiled program's shape (one compile per value)."""

    n_features: int
    k: int
    n_context: int
    m_max: int
    distractor_bits: int = 0
    mode: str = "monte_carlo"
    protocol: str = "progressive"
    steps: int = 2000
    batch: int = 256
    loo: bool = True
    schedule: str = "cosine"
    final_lr_fraction: float = 0.01
    train_noise: bool = False
    adam_b1: float | None = None
    """Adam's β1; ``None``: 0.9 in population mode, 0.99 in Monte Carlo mode (averages
    ~100 steps of gradient noise: with 0.9 the attention mass stalls near 0.97)."""
    readout_warmup: float = 0.1
    """Fraction of each progressive phase during which only the readouts train."""
    logit_step: str | None = None
    """Progressive protocol's logit step: ``"adam"`` or ``"normalized"`` (gradient
    descent on unit-norm logit rows, see :func:`optimizer`); ``None``: normalized in
    population mode, Adam in Monte Carlo mode (whose noisy gradients Adam's β1
    averages)."""
    lbfgs_fraction: float | None = None
    """Fraction of the steps (the last ones) in which L-BFGS trains all active heads
    jointly on the exact loss (5); ``None``: 0.25 in population mode, 0 in Monte
    Carlo mode (the line search needs a deterministic objective)."""

    def __post_init__(self):
        if self.adam_b1 is None:
            object.__setattr__(self, "adam_b1", 0.9 if self.mode == "population" else 0.99)
        if self.logit_step is None:
            object.__setattr__(self, "logit_step",
                               "normalized" if self.mode == "population" else "adam")
        if self.logit_step not in LOGIT_STEPS:
            raise ValueError(f"logit_step must be one of {LOGIT_STEPS}, got {self.logit_step!r}")
        if self.lbfgs_fraction is None:
            object.__setattr__(self, "lbfgs_fraction",
                               0.25 if self.mode == "population" else 0.0)
        check_in_range("lbfgs_fraction", self.lbfgs_fraction, 0.0, 1.0)
        if self.lbfgs_fraction > 0 and self.mode != "population":
            raise ValueError("lbfgs_fraction > 0 needs mode='population' (a deterministic "
                             f"objective for the line search), got mode={self.mode!r}")
        check_in_range("adam_b1", self.adam_b1, 0.0, 0.9999)
        check_in_range("readout_warmup", self.readout_warmup, 0.0, 0.9)
        check_int("n_features", self.n_features, 1)
        check_int("k", self.k, 1)
        check_int("n_context", self.n_context, 1)
        check_int("m_max", self.m_max, 1, self.n_features)
        check_int("distractor_bits", self.distractor_bits, 0)
        check_int("steps", self.steps, 1)
        check_int("batch", self.batch, 1)
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.loo and self.train_noise and self.mode == "monte_carlo":
            raise ValueError("loo=True needs clean training prompts (its targets are context "
                             "labels); set loo=False to train on noisy prompts")

    def model_config(self) -> pm.ParityConfig:
        return pm.ParityConfig(self.n_features, self.k, self.distractor_bits, self.m_max)

    @property
    def adam_steps(self) -> int:
        """Steps of the first-order protocol (all but the L-BFGS finish; at least one)."""
        return max(1, self.steps - int(round(self.lbfgs_fraction * self.steps)))


def _signal(label_flip, bit_flip, k):
    return (1.0 - 2.0 * label_flip) * (1.0 - 2.0 * bit_flip) ** k


def _loss_fn(static: ParityStatic):
    """Per-step training loss ``loss(params, key, hyper, data)`` of ``static``.

    ``population``: the exact loss (5) at μ = (1 − 2p)(1 − 2q)^k; ``monte_carlo``:
    the squared error of the query on ``batch`` fresh prompts or, with ``loo``, the
    mean over the N + 1 leave-one-out queries of each prompt (same expectation).
    """
    cfg = static.model_config()
    k, n = static.k, static.n_context

    def noise(hyper, name):
        return hyper[name] if static.train_noise else 0.0

    def loss(params, key, hyper, data):
        if static.mode == "population":
            mu = _signal(noise(hyper, "label_flip"), noise(hyper, "bit_flip"), k)
            return pm.population_loss(params, cfg, data["pi"], n, mu)
        alpha = pm.attention(params)
        c = params["weights"]["readout"] * jax.lax.stop_gradient(params["head_mask"])
        if static.loo:
            prompts = sample_prompts(key, data["pi"], n + 1, k, static.batch,
                                     distractor_bits=static.distractor_bits,
                                     label_flip=noise(hyper, "label_flip"),
                                     bit_flip=noise(hyper, "bit_flip"))
            phi = pm.features(alpha, prompts.z, k)  # (B, N+1, m)
            total = jnp.einsum("bn,bnh->bh", prompts.y, phi)
            others = (total[:, None, :] - prompts.y[..., None] * phi) / n
            pred = jnp.einsum("bnh,bnh,h->bn", phi, others, c)
            return jnp.mean((pred - prompts.y) ** 2)
        prompts = sample_prompts(key, data["pi"], n, k, static.batch,
                                 distractor_bits=static.distractor_bits,
                                 label_flip=noise(hyper, "label_flip"),
                                 bit_flip=noise(hyper, "bit_flip"))
        return jnp.mean((pm.apply(params, prompts, k) - prompts.y_query) ** 2)

    return loss


def _phases(static: ParityStatic, heads):
    """``phase(step) -> (h, start)`` of the progressive protocol and the phase length.

    ``heads`` (traced) equal phases of ``steps // heads`` steps over the first
    ``static.adam_steps`` steps; the last phase also takes the remainder.
    """
    heads = jnp.maximum(heads, 1)
    length = jnp.maximum(static.adam_steps // heads, 1)

    def phase(step):
        h = jnp.minimum(step // length, heads - 1)
        return h, h * length

    return phase, length


def _unit_rows(name):
    """Normalise each row of the ``name`` gradient to unit norm (a stateless optax transform)."""

    def f(updates, params):
        del params
        g = updates[name]
        g = g / jnp.maximum(jnp.linalg.norm(g, axis=-1, keepdims=True), 1e-12)
        return {**updates, name: g}

    return optax.stateless(f)


class _CountState(NamedTuple):
    count: jax.Array


def _fresh_start(static: ParityStatic, heads):
    """Move head h's logits to its fresh start at the end of phase h − 1 (an optax transform).

    Re-initialising weights is not a gradient step, but it is an update: at the last
    step of phase h − 1 this transformation adds ``log max(1 − k·Σ_{h'<h} α_{h'}, 0.01)``
    (α of the earlier heads *after* this step's update) to row h of the logits, so
    that phase h starts uniform on the bits not yet covered (plus the row's init
    noise: the row was frozen since init).  The readout of head h needs no reset: it
    has been frozen at 0 since init (``parity_trainer``'s init).  The step count lives
    in the state, so the protocol stays a pure function of (weights, optimizer state) and resumes
    bitwise.  Head 0's fresh start, log 1 = 0, is its init.
    """
    phase, _ = _phases(static, heads)
    k = static.k

    def init(params):
        del params
        return _CountState(jnp.zeros((), jnp.int32))

    def update(updates, state, params):
        idx = jnp.arange(static.m_max)
        h, start = phase(state.count + 1)
        begins = (state.count + 1 == start) & (h >= 1)
        logits = params["logits"] + updates["logits"]
        alpha = jax.nn.softmax(logits, axis=-1)
        covered = jnp.sum(jnp.where((idx < h)[:, None], alpha, 0.0), axis=0)
        fresh = jnp.log(jnp.maximum(1.0 - k * covered, 0.01))
        row = ((idx == h) & begins)[:, None]
        new = jnp.where(row, updates["logits"] + fresh[None, :], updates["logits"])
        return {**updates, "logits": new}, _CountState(optax.safe_increment(state.count))

    return optax.GradientTransformation(init, update)


def optimizer(static: ParityStatic):
    """The optax optimizer of ``static``: a factory ``hyper -> GradientTransformation``.

    ``joint``: Adam (β1 = ``adam_b1``, learning rate ``hyper["learning_rate"]``
    injected) under the optax schedule of ``static.schedule``.

    ``progressive``: the protocol is the chain

    1. :func:`~iclsim.engine.trainer.step_mask` on the gradient: only the active
       head's logit row and the readouts of heads started so far (later heads'
       readouts stay at their init value 0, so those heads contribute nothing);
    2. each logit row's gradient normalised to unit norm (the active head keeps
       sharpening while its gradient decays);
    3. the step, under the schedule restarted at every phase boundary
       (``optax.join_schedules``): Adam on everything (``logit_step="adam"``), or
       (``"normalized"``, population mode's default) plain gradient descent on the
       unit-norm logit rows — normalised gradient descent, each row moving by
       exactly the learning rate — and Adam on the readouts
       (``optax.partition``).  On the exact loss the normalised step keeps the
       ordering of the gradient's coordinates, so the new head's race between
       blocks follows ∝ π_j from the uniform start; Adam's per-coordinate
       scaling equalises the first steps (sign-like) and, with close importances
       (π = (0.4, 0.35, 0.25), N = 10), sent the single head to block 2;
    4. ``step_mask`` on the update: only the active head's logits, and only after
       the readout warm-up (the first ``readout_warmup`` of its phase) — zeroing
       the update, not only the gradient, stops Adam's momentum moving frozen rows;
    5. :func:`_fresh_start`: the next head's logits move to their fresh start at the
       end of each phase.

    Population mode (``lbfgs_fraction`` > 0): after ``adam_steps`` steps of that
    chain, ``optax.lbfgs`` (zoom line search) trains all active heads' logits and
    readouts jointly on the exact loss (:func:`iclsim.engine.trainer.switch_at`).
    """
    sched = ScheduleConfig(kind=static.schedule, steps=static.adam_steps,
                           final_fraction=static.final_lr_fraction)

    def progressive(hyper):
        idx = jnp.arange(static.m_max)  # built while tracing: int32 or int64 as configured
        phase, length = _phases(static, hyper["heads"])
        boundaries = [jnp.where(h < hyper["heads"], h * length, static.steps + 1)
                      for h in range(1, static.m_max)]
        lr = sched.restarting(hyper["learning_rate"], boundaries, length)

        def grad_mask(count):
            h, _ = phase(count)
            return {"logits": (idx == h)[:, None], "readout": idx <= h}

        def update_mask(count):
            h, start = phase(count)
            warm = count - start >= jnp.floor(static.readout_warmup * length)
            return {"logits": ((idx == h) & warm)[:, None], "readout": None}

        if static.logit_step == "normalized":
            steps = optax.partition(
                {"logits": optax.inject_hyperparams(optax.sgd)(learning_rate=lr),
                 "readout": adam(lr, static.adam_b1)},
                {"logits": "logits", "readout": "readout"},
            )
        else:
            steps = adam(lr, static.adam_b1)
        return optax.chain(step_mask(grad_mask), _unit_rows("logits"), steps,
                           step_mask(update_mask), _fresh_start(static, hyper["heads"]))

    def make(hyper):
        if static.protocol == "progressive":
            first = progressive(hyper)
        else:
            first = adam(sched.schedule(hyper["learning_rate"]), static.adam_b1)
        if static.adam_steps >= static.steps:
            return first
        return switch_at(first, lbfgs(), static.adam_steps)

    return make


@functools.lru_cache(maxsize=64)
def parity_trainer(static: ParityStatic):
    """The engine trainer for ``static`` (cached).

    ``hyper`` per run: ``heads``, ``learning_rate``, ``init_scale``,
    ``label_flip``, ``bit_flip`` (training noise; used when ``static.train_noise``).
    ``data``: ``{"pi": π}``.  The protocol is the optax chain of :func:`optimizer`;
    the progressive protocol starts every readout at 0 (head h's readout stays 0 and
    frozen until its phase, so the head contributes nothing before it).
    """
    cfg = static.model_config()

    def init_params(key, hyper, data):
        params = pm.init(key, cfg, heads=hyper["heads"], scale=hyper["init_scale"])
        if static.protocol == "progressive":
            w = params["weights"]
            params = {**params, "weights": {**w, "readout": jnp.zeros_like(w["readout"])}}
        return params

    return build_trainer(init_params, _loss_fn(static), steps=static.steps,
                         optimizer=optimizer(static))


def classify_runs(block_mass, readout, heads, gamma, finite, *, mass=0.99, readout_rtol=0.02):
    """Verdict per run from attention masses (runs, m_max, K) and readouts (runs, m_max).

    For the first ``heads`` heads of a run, b_h = argmax_j mass_hj:

    * ``diverged``: non-finite parameters or loss;
    * ``collapsed``: two heads share a block (b_h = b_h' for h ≠ h');
    * ``wrong_feature``: the blocks are distinct but not the top-m set {0..m−1};
    * ``optimum_reached``: blocks = top m, every head has mass ≥ ``mass`` on its
      block, and ``|c_h − γ_{b_h}|`` ≤ ``readout_rtol``·γ_{b_h};
    * ``not_converged``: blocks = top m but the mass or readout criterion fails.
    """
    verdicts = []
    for bm, c, m, ok in zip(block_mass, readout, heads, finite):
        m = int(m)
        if not ok:
            verdicts.append("diverged")
            continue
        blocks = np.argmax(bm[:m], axis=1)
        if len(set(blocks.tolist())) < m:
            verdicts.append("collapsed")
        elif set(blocks.tolist()) != set(range(m)):
            verdicts.append("wrong_feature")
        else:
            peak = bm[np.arange(m), blocks]
            target = np.asarray(gamma)[blocks]
            good = np.all(peak >= mass) and np.all(np.abs(c[:m] - target) <= readout_rtol * target)
            verdicts.append("optimum_reached" if good else "not_converged")
    return verdicts


def _as_levels(label_flip, bit_flip):
    p = np.atleast_1d(np.asarray(check_in_range("label_flip", label_flip, 0.0, 0.5), float))
    q = np.atleast_1d(np.asarray(check_in_range("bit_flip", bit_flip, 0.0, 0.5), float))
    p, q = np.broadcast_arrays(p, q)
    return p.ravel(), q.ravel()


@functools.partial(jax.jit, static_argnames=("n_context", "k", "distractor_bits", "n_batches",
                                              "batch"))
def _evaluate(key, params, pi, label_flip, bit_flip, *, n_context, k, distractor_bits, n_batches,
              batch):
    keys = jax.random.split(key, n_batches)

    def squared_errors(run_params, p, q, kk):
        prompts = sample_prompts(kk, pi, n_context, k, batch, distractor_bits=distractor_bits,
                                 label_flip=p, bit_flip=q)
        return (pm.apply(run_params, prompts, k) - prompts.y_query) ** 2

    return risk_grid(squared_errors, keys, params, label_flip, bit_flip, pi.dtype)


def evaluate(key, params, pi, n_context, k, *, label_flip=0.0, bit_flip=0.0, distractor_bits=0,
             n_prompts=32768, batch=2048):
    """Monte Carlo risk (runs, L) and SE of trained models on (p, q) noise pairs (broadcast)."""
    pi = oracle.check_pi(pi)
    n = check_int("n_context", n_context, 1)
    n_prompts = check_int("n_prompts", n_prompts, 2)
    batch = check_int("batch", batch, 1)
    n_batches = max(1, -(-n_prompts // batch))
    p, q = _as_levels(label_flip, bit_flip)
    dtype = jnp.result_type(float)
    m1, m2 = _evaluate(key, params, jnp.asarray(pi, dtype), jnp.asarray(p, dtype),
                       jnp.asarray(q, dtype), n_context=n, k=int(k),
                       distractor_bits=int(distractor_bits), n_batches=n_batches, batch=batch)
    return mean_and_se(m1, m2, n_batches * batch)


def converged_tolerance(dtype) -> float:
    """Largest :func:`gradient_norm` of a ``converged`` population run: max(1000 eps, 1e-10).

    The loss (5) is O(1) (y = ±1, L = 1 at c = 0), so the gradient needs no
    rescaling.  Measured at the end of population training (30 random instances,
    K ≤ 4, k ≤ 3, N ≤ 16): float32 ≤ 3e-6 where the finish completed, 2e-4 where
    its line search stalled (k = 3; relative gap to R_m 4e-6); float64 ≤ 6e-13, and
    up to 3e-11 in other runs: there the finish ends on the loss's rounding floor
    with a little gradient left along the flat logit directions (softmax near
    saturation), hence the 1e-10 floor of the tolerance.
    """
    return max(1000.0 * float(jnp.finfo(dtype).eps), 1e-10)


def gradient_norm(params, pi, n_context, k, *, distractor_bits=0):
    """‖∇_w L‖ of the exact clean loss (5) at the trained weights, per run (float64 out).

    ``params`` has a leading run axis; the gradient is taken in the weights' dtype
    with respect to all trained weights (logits and readouts).
    """
    w = params["weights"]
    dtype = w["readout"].dtype
    cfg = pm.ParityConfig(len(pi), int(k), int(distractor_bits), w["readout"].shape[-1])
    return np.asarray(_gradient_norms(params, jnp.asarray(pi, dtype), cfg=cfg,
                                      n_context=int(n_context)), float)


@functools.partial(jax.jit, static_argnames=("cfg", "n_context"))
def _gradient_norms(params, pi, *, cfg, n_context):
    """One compiled program per static shape (cached across calls and groups)."""

    def one(run_params):
        def objective(weights):
            return pm.population_loss({**run_params, "weights": weights}, cfg, pi, n_context)

        return optax.tree.norm(jax.grad(objective)(run_params["weights"]))

    return jax.vmap(one)(params)


def assess_runs(params, loss, pi, n_context, k, heads, *, distractor_bits, eval_key, eval_prompts,
                mode=None):
    """Per run: attention, block masses, readout, exact loss (5), MC test risk, verdict.

    ``grad_norm`` is :func:`gradient_norm` and ``converged`` is ``grad_norm <=
    converged_tolerance(dtype)``.  With ``mode="population"`` a run that is not
    ``converged`` cannot be ``optimum_reached``: its verdict becomes
    ``not_converged``.
    """
    cfg = pm.ParityConfig(len(pi), k, distractor_bits, params["weights"]["readout"].shape[-1])
    alpha = np.asarray(jax.vmap(pm.attention)(params), float)
    mass = np.asarray(jax.vmap(lambda p: pm.block_mass(p, cfg))(params), float)
    readout = np.asarray(params["weights"]["readout"], float)
    mask = np.asarray(params["head_mask"], float)
    finite = (np.isfinite(alpha).all(axis=(1, 2)) & np.isfinite(readout).all(axis=1)
              & np.isfinite(loss).all(axis=1))
    risk = np.full(len(heads), np.nan)
    for i in np.flatnonzero(finite):
        m = int(heads[i])
        risk[i] = oracle.population_loss(alpha[i, :m], readout[i, :m] * mask[i, :m], pi, n_context,
                                         k, distractor_bits=distractor_bits) if m else 1.0
    test, se = evaluate(eval_key, params, pi, n_context, k, distractor_bits=distractor_bits,
                        n_prompts=eval_prompts)
    gamma = oracle.optimal_readout(pi, n_context)
    verdict = classify_runs(mass, readout, heads, gamma, finite)
    grad_norm = gradient_norm(params, pi, n_context, k, distractor_bits=distractor_bits)
    converged = finite & (grad_norm <= converged_tolerance(params["weights"]["readout"].dtype))
    if mode == "population":
        verdict = ["not_converged" if v == "optimum_reached" and not ok else v
                   for v, ok in zip(verdict, converged)]
    return {"alpha": alpha, "block_mass": mass, "readout": readout, "risk": risk,
            "test_risk": test[:, 0], "test_se": se[:, 0], "verdict": verdict, "finite": finite,
            "grad_norm": grad_norm, "converged": converged}


@dataclass
class ParityTrainResult:
    """Per-run results of :func:`train` (runs are heads-major: run = i_heads·seeds + seed).

    Every per-run array has a leading axis of length ``runs = len(heads)·seeds``;
    :meth:`to_xarray` labels them by (heads, seed).  The theory is in
    ``docs/theory/parity.md``.
    """

    heads: np.ndarray
    """(runs,) int: the head count m of each run (heads-major)."""
    seed: np.ndarray
    """(runs,) int: the seed index 0..seeds−1 of each run (key ``fold_in(key, seed)``)."""
    params: Any
    """The trained parameters, a pytree whose leaves have a leading run axis (see
    :mod:`iclsim.parity.model`)."""
    block_mass: np.ndarray
    """(runs, m_max, K) attention mass of each head on each block."""
    readout: np.ndarray
    """(runs, m_max) readout weight c_h of each head (γ_{b_h} of Theorem C at the optimum)."""
    risk: np.ndarray
    """(runs,) exact population loss (5) of the trained model (clean)."""
    test_risk: np.ndarray
    """(runs,) Monte Carlo loss on ``eval_prompts`` fresh clean prompts: the sampled
    cross-check of ``risk``."""
    test_se: np.ndarray
    """(runs,) standard error of ``test_risk``."""
    loss: np.ndarray
    """(runs, steps) training loss per step (exact loss in population mode, the minibatch
    loss in Monte Carlo mode)."""
    optimal_risks: np.ndarray
    """(K+1,) R_0..R_K (Theorem C)."""
    verdict: list
    """(runs,) str, from :func:`classify_runs`: ``optimum_reached``, ``not_converged``,
    ``wrong_feature``, ``collapsed`` or ``diverged``."""
    grad_norm: np.ndarray
    """(runs,) :func:`gradient_norm` of the trained weights."""
    converged: np.ndarray
    """(runs,) ``grad_norm <= converged_tolerance`` (population mode: else ``not_converged``)."""
    static: ParityStatic
    """The shape-fixing settings of the compiled program: :class:`ParityStatic`."""
    wall_time: float
    """Seconds spent training (compile included, assessment excluded)."""

    def to_xarray(self):
        """The per-run fields labelled by their axes: an ``xarray.Dataset`` over (heads, seed).

        ``risk``, ``test_risk``, ``test_se``, ``grad_norm``, ``converged``, ``verdict`` (str)
        have dims (heads, seed); ``block_mass`` (heads, seed, head, block); ``readout``
        (heads, seed, head); ``loss`` (heads, seed, step); ``optimal_risk`` is the ladder
        R_0..R_K on its own dimension ``ladder_heads``.  E.g.
        ``res.to_xarray().risk.sel(heads=2)``.
        """
        from iclsim.engine.runner import runs_dataset

        fields = ("risk", "test_risk", "test_se", "grad_norm", "converged", "block_mass",
                  "readout", "loss")
        per_run = {name: getattr(self, name) for name in fields}
        per_run["verdict"] = np.asarray(self.verdict, dtype=str)
        return runs_dataset(
            "heads", self.heads, self.seed, per_run,
            trailing_dims={"block_mass": ("head", "block"), "readout": ("head",),
                           "loss": ("step",)},
            coords={"optimal_risk": ("ladder_heads", np.asarray(self.optimal_risks)),
                    "ladder_heads": np.arange(len(self.optimal_risks))})

    def summary_rows(self):
        """One dict per head count: R_m, best and median trained risk, verdict counts."""
        rows = []
        for m in np.unique(self.heads):
            sel = self.heads == m
            verdicts = [self.verdict[i] for i in np.flatnonzero(sel)]
            counts = {v: verdicts.count(v) for v in dict.fromkeys(verdicts)}
            ok = np.isfinite(self.risk[sel])
            rows.append({
                "heads": int(m), "R_m": float(self.optimal_risks[m]),
                "best_risk": float(np.min(self.risk[sel][ok])) if ok.any() else float("nan"),
                "median_risk": float(np.median(self.risk[sel][ok])) if ok.any() else float("nan"),
                "success": counts.get("optimum_reached", 0), "runs": int(sel.sum()),
                "verdicts": counts, "converged": int(np.sum(self.converged[sel])),
            })
        return rows


def train(key, pi, n_context, k, heads, *, mode="monte_carlo", protocol="progressive", seeds=1,
          steps=6000, batch=256, learning_rate=0.1, init_scale=None, loo=True, distractor_bits=0,
          m_max=None, schedule="cosine", final_lr_fraction=0.01, eval_prompts=16384,
          adam_b1=None, readout_warmup=0.1, lbfgs_fraction=None, logit_step=None,
          progress=False):
    """Train m-head parity models for every (m, seed) in one compiled program.

    Parameters follow :class:`ParityStatic`; ``heads`` is an iterable of head
    counts in [1, K].  Seed s uses ``fold_in(key, s)`` for every m.
    Returns :class:`ParityTrainResult` with verdicts from :func:`classify_runs`.
    ``progress=True`` shows a progress bar (stderr) while training (same numbers).

    The defaults are the recipe that makes progressive training reliable on the
    canonical example (``docs/parity.md``, "Training protocols"): each head
    starts uniform on the bits not yet covered (``init_scale`` = 0 adds no noise;
    the joint protocol defaults to 0.1), trains its readout alone for the first
    ``readout_warmup`` = 10 % of its phase, then its logits under a cosine
    schedule that restarts each phase — with Adam (β1 = 0.99) on fresh prompts,
    with normalised gradient descent (``logit_step``) on the exact loss; the
    updates (not only the gradients) of frozen heads are zeroed.  ``steps`` is
    the whole run: phases are ``adam_steps // m`` long, ``adam_steps`` being all
    steps but the last ``lbfgs_fraction`` (population mode: 25 %), in which
    L-BFGS trains all heads jointly on the exact loss.  With these defaults,
    population mode picked the top-m blocks in all of 30 random instances (K ≤ 4,
    k ≤ 3, N ≤ 16, π_j/π_{j+1} ≥ 1.02) and ended at R_m to a relative 1.3e-15
    (readout at γ to 4e-11) in float64; in float32 to 3e-7 (readout 5e-4),
    except two k = 3 runs whose line search stalled (gap 4e-6, flagged
    ``not_converged``).
    """
    pi = oracle.check_pi(pi)
    n_features = len(pi)
    n = check_int("n_context", n_context, 1)
    k = check_int("k", k, 1)
    heads = [check_int("heads[]", m, 1, n_features) for m in np.atleast_1d(heads)]
    seeds = check_int("seeds", seeds, 1)
    m_max = check_int("m_max", max(heads) if m_max is None else m_max, max(heads), n_features)
    check_in_range("learning_rate", learning_rate, np.finfo(float).tiny)
    if init_scale is None:
        init_scale = 0.0 if protocol == "progressive" else 0.1
    check_in_range("init_scale", init_scale, 0.0)
    static = ParityStatic(n_features=n_features, k=k, n_context=n, m_max=m_max,
                          distractor_bits=int(distractor_bits), mode=mode, protocol=protocol,
                          steps=steps, batch=batch if mode == "monte_carlo" else 1, loo=bool(loo),
                          schedule=schedule, final_lr_fraction=final_lr_fraction,
                          adam_b1=None if adam_b1 is None else float(adam_b1),
                          readout_warmup=float(readout_warmup),
                          lbfgs_fraction=None if lbfgs_fraction is None else float(lbfgs_fraction),
                          logit_step=logit_step)
    dtype = jnp.result_type(float)
    run_heads = np.repeat(np.asarray(heads), seeds)
    run_seed = np.tile(np.arange(seeds), len(heads))
    r = len(run_heads)
    hyper = {
        "heads": jnp.asarray(run_heads, jnp.int32),
        "learning_rate": jnp.full(r, learning_rate, dtype),
        "init_scale": jnp.full(r, init_scale, dtype),
        "label_flip": jnp.zeros(r, dtype),
        "bit_flip": jnp.zeros(r, dtype),
    }
    data = {"pi": jnp.asarray(pi, dtype)}
    train_key, eval_key = jax.random.split(key)
    keys = jax.vmap(lambda s: jax.random.fold_in(train_key, s))(jnp.asarray(run_seed, jnp.int32))
    start = time.perf_counter()
    params, metrics = train_runs(parity_trainer(static), keys, hyper, data, progress=progress)
    params = jax.block_until_ready(params)
    wall = time.perf_counter() - start
    loss = np.asarray(metrics["loss"], float)
    out = assess_runs(params, loss, pi, n, k, run_heads, distractor_bits=distractor_bits,
                      eval_key=eval_key, eval_prompts=eval_prompts, mode=mode)
    return ParityTrainResult(
        heads=run_heads, seed=run_seed, params=params, block_mass=out["block_mass"],
        readout=out["readout"], risk=out["risk"], test_risk=out["test_risk"],
        test_se=out["test_se"], loss=loss, optimal_risks=oracle.optimal_risks(pi, n),
        verdict=out["verdict"], grad_norm=out["grad_norm"], converged=out["converged"],
        static=static, wall_time=wall,
    )
