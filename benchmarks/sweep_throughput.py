"""Throughput of the vmapped training sweep against per-run loops (JAX and PyTorch).

What is compared
----------------
The same work is done three ways in one process: R runs (default 32) of the
setting-1 Monte Carlo LSA trainer — reduced parametrisation Γ = (A∘mask) Bᵀ with
the rank mask, ranks cycling 1..d, Adam at lr 1e-2 with the engine's cosine
schedule (decay to 1% of lr), fresh prompts every step (d = 8, N = 16,
batch 256, 2000 steps, Λ = diag(4, 2.5, 1.5, 1, 0.6, 0.35, 0.2, 0.1)):

(a) ``vmap``: the product's path, ``jax.jit(jax.vmap(trainer.train, in_axes=(0, 0, None)))``
    over all R runs — one compile, one call;
(b) ``jit loop``: ``jax.jit(trainer.train)`` compiled once and called R times in
    a Python loop;
(c) ``torch eager``: a typical PyTorch research script — per run, an eager Python
    loop over steps (``torch.randn`` prompts, x = z Lᵀ, w ~ N(0, I), y = x·w,
    ŷ = x_qᵀ (A Bᵀ) h, ``loss.backward()``, ``torch.optim.Adam`` with a
    ``LambdaLR`` cosine schedule), float32, ``torch.set_num_threads(<cores>)``
    unless a short probe finds one thread faster (``--torch-threads`` forces it).
    To keep it affordable it is timed on a subset of the runs (``--torch-runs``,
    default 4, evenly spread over the ranks) and scaled linearly to R; the
    output says so.
(d) ``RNG floor``: JAX alone drawing the normals of the same shapes as one
    training step of all R runs (same per-step key derivation:
    ``fold_in`` + ``split``), jitted, in a ``lax.scan`` over steps.  Nothing
    else is computed, so no trainer that draws its prompts with the JAX RNG can
    beat this rate.

How to run
----------
    python benchmarks/sweep_throughput.py            # defaults, a few minutes on 2 cores
    python benchmarks/sweep_throughput.py --quick    # 200 steps, smoke run
    python benchmarks/sweep_throughput.py --runs 16 --steps 500 --skip-torch

PyTorch comes from the ``bench`` extra (``pip install torch==2.13.0``); without
it, or with ``--skip-torch``, row (c) is skipped.

What the numbers mean
---------------------
* ``wall s``: seconds for the whole work (R runs × steps), compile excluded
  (compile times of (a) and (b) are printed separately); ``*`` marks a number
  extrapolated linearly from fewer runs/steps.
* ``run-steps/s``: R·steps / wall — training steps of single runs per second.
* ``normals/s``: Gaussian draws per second, counting batch·((N+1)·d + d) per run
  per step (x_1..x_N, x_q and w; the training prompts are noiseless so no noise
  is drawn).  ``% floor`` divides by the rate of (d).
* ``vs (c)``, ``vs (b)``: speed-up, i.e. wall of (c) or (b) divided by this row's wall.
* ``tail loss``: mean training loss over the last 10% of steps, averaged over
  the runs that (c) timed — the same runs in every method, as a check that the
  methods do the same work (the values differ by Monte Carlo noise only; the
  random streams of JAX and PyTorch are of course different).

The target for the product is (a) ≥ 10× over (c) and ≥ 3× over (b).

Sufficient-statistic sampler
----------------------------------------
(e) ``vmap sweep, statistic``: (a) with its prompts drawn by
    ``iclsim.linear.data.sample_statistic`` (h = (1/N) Σ y_i x_i, one χ²_N and
    d normals per prompt instead of N·d; exact in distribution) — the same
    trainer, optimizer and keys.  ``vs tokens`` = wall of (a) / wall of (e).

(e0) ``statistic, gamma χ²``: (e) with the sampler's previous χ²_N draw
    (``2 · jax.random.gamma(N/2)``, a rejection sampler whose vmapped ``while``
    loop runs until the slowest of all values is accepted), swapped in while
    tracing: the in-process baseline of the current draw (vectorised
    Marsaglia–Tsang, ``iclsim.linear.data._gamma``).
(e1) ``statistic, jax.random draws``: (e) with the sampler's previous normal and
    uniform draws — one ``jax.random.normal`` / ``uniform`` per component, each
    from its own split key — swapped in while tracing for the product's one
    paired-output Threefry call per sampler call
    (``iclsim.linear.data._standard_draws``: under JAX's default
    ``jax_threefry_partitionable=True`` a 32-bit word costs one hash, the product
    keeps both outputs of each hash).  (e), (e0) and (e1) alternate, two passes
    each, best wall kept.
(f) ``statistic RNG floor``: only the statistic sampler's draws of one step of
    all R runs — exactly ``iclsim.linear.data._statistic_draws``, the function
    the sampler calls (w, the query and g: 3d normals per prompt, and the χ²_N),
    with the trainer's key derivation (``fold_in(step)``; the sampler splits
    once), jitted, in a ``lax.scan``; (f0), (f1) the same with the draws of
    (e0), (e1).  In the table their ``normals/s`` is work-equivalent (token
    normals replaced per second, marked ``~``).  A second table gives (e), (e0),
    (e1) as a percentage of their floors (target ≥ 75 %).

Per-part breakdown (``--skip-parts`` skips it): one training step of (e), (e0)
and (e1) split into key derivation, sampling (keys + draws + h), loss + gradient
(on prompts drawn once), optimizer update (Adam + cosine schedule as the product
builds it), tail averaging (running sum of the iterates) and loss recording (a
scalar per step stacked by the scan) — each alone, jitted, vmapped over the R
runs, in a scan of ``--floor-steps`` steps whose every step depends on the
carry, scaled to the full step count; run-steps/s and share of the full sweep.
The parts need not add up to 100 %: the full step is one fused program.

Context-length series (``--series``, default N ∈ {16, 64, 256, 1024}): loss +
gradient of the reduced LSA for R runs × batch prompts, vmapped and jitted, in a
``lax.scan`` over ``--series-steps`` steps with the token sampler and 10x as many
with the statistic sampler (a few ms per step), in this process; ms per step and the ratio
tokens / statistic.  The statistic sampler's cost should not grow with N.

PRNG (``--prng-compare``): the RNG floor and the loss + gradient step at
``--n-context`` under ``jax_default_prng_impl`` = ``threefry2x32`` (JAX's
default, deterministic across backends, the product's choice) and ``rbg``
(XLA's RngBitGenerator); ratio rbg / threefry.  ``--prng rbg`` runs everything
under rbg instead.

    python benchmarks/sweep_throughput.py --n-context 20 --skip-torch --prng-compare
    python benchmarks/sweep_throughput.py --only-series --series 16 64 256 1024

GPU sizes (``benchmarks/gpu_check.sh``): ``--runs 1024 --jit-loop-runs 16 --r-scan 1024
4096 16384`` — (b) timed on a subset and scaled, and the run-count scan with the
projected time of 10,000 runs × 10,000 steps.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import contextlib
import dataclasses

from iclsim.linear import data as linear_data
from iclsim.linear import model as lsa
from iclsim.linear import training as linear_training
from iclsim.linear.training import TrainStatic, linear_trainer

CANONICAL_SPECTRUM = (4.0, 2.5, 1.5, 1.0, 0.6, 0.35, 0.2, 0.1)
LEARNING_RATE = 1e-2
INIT_SCALE = 0.1
FINAL_LR_FRACTION = 0.01


def n_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def load_average() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except (AttributeError, OSError):  # pragma: no cover - non-Unix
        return "n/a"


def spectrum(d: int) -> np.ndarray:
    if d == len(CANONICAL_SPECTRUM):
        return np.asarray(CANONICAL_SPECTRUM)
    return np.geomspace(4.0, 0.1, d)  # same range as the canonical spectrum


def normals_per_run_step(args) -> int:
    return args.batch * ((args.n_context + 1) * args.d + args.d)


def run_ranks(args) -> np.ndarray:
    return (np.arange(args.runs) % args.d) + 1


def torch_subset(args) -> np.ndarray:
    k = args.runs if args.torch_runs <= 0 else min(args.torch_runs, args.runs)
    return np.unique(np.linspace(0, args.runs - 1, k).round().astype(int))


def tail_loss(losses: np.ndarray) -> float:
    """Mean over the last 10% of steps (losses: (runs, steps))."""
    k = max(1, losses.shape[-1] // 10)
    return float(np.mean(losses[..., -k:]))


def block(tree):
    return jax.block_until_ready(tree)


# ----------------------------------------------------------------------------- JAX


def jax_static(args) -> TrainStatic:
    return TrainStatic(
        d=args.d, n_context=args.n_context, r_max=args.d, mode="monte_carlo",
        parametrization="reduced", init="random", steps=args.steps, batch=args.batch,
        schedule="cosine", final_lr_fraction=FINAL_LR_FRACTION,
    )


def jax_inputs(args):
    static = jax_static(args)
    if has_sampler_field():  # the token-sampler baseline, explicitly
        static = dataclasses.replace(static, sampler="tokens")
    trainer = linear_trainer(static)
    dtype = jnp.result_type(float)
    r = args.runs
    hyper = {
        "rank": jnp.asarray(run_ranks(args), jnp.int32),
        "learning_rate": jnp.full(r, LEARNING_RATE, dtype),
        "init_scale": jnp.full(r, INIT_SCALE, dtype),
        "label_noise": jnp.zeros(r, dtype),
        "input_noise": jnp.zeros(r, dtype),
    }
    cov = np.diag(spectrum(args.d))
    data = {"cov": jnp.asarray(cov, dtype), "factor": jnp.asarray(np.linalg.cholesky(cov), dtype)}
    root = jax.random.PRNGKey(args.seed)
    keys = jax.vmap(lambda i: jax.random.fold_in(root, i))(jnp.arange(r))
    return trainer, keys, hyper, data


def bench_vmap(trainer, keys, hyper, data):
    fn = jax.jit(jax.vmap(trainer.train, in_axes=(0, 0, None)))
    t0 = time.perf_counter()
    compiled = fn.lower(keys, hyper, data).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    params, metrics = block(compiled(keys, hyper, data))
    wall = time.perf_counter() - t0
    return wall, compile_s, np.asarray(metrics["loss"])


def bench_jit_loop(trainer, keys, hyper, data, subset=None):
    """(b) over all runs, or over the runs in ``subset`` (the caller scales to R)."""
    fn = jax.jit(trainer.train)
    run = lambda tree, i: jax.tree_util.tree_map(lambda v: v[i], tree)  # noqa: E731
    t0 = time.perf_counter()
    compiled = fn.lower(run(keys, 0), run(hyper, 0), data).compile()
    compile_s = time.perf_counter() - t0
    # Slice the per-run inputs outside the timed region (a loop over a grid
    # would build them from Python scalars, which is cheaper still).
    indices = range(keys.shape[0]) if subset is None else [int(i) for i in subset]
    inputs = [(run(keys, i), run(hyper, i)) for i in indices]
    block(inputs)
    losses = []
    t0 = time.perf_counter()
    for key, hyp in inputs:
        params, metrics = block(compiled(key, hyp, data))
        losses.append(metrics["loss"])
    wall = time.perf_counter() - t0
    return wall, compile_s, np.stack([np.asarray(v) for v in losses])


def bench_rng_floor(args, keys, floor_steps: int, repeats: int = 3):
    """Normals/s of JAX drawing one step's prompts for all runs, nothing else (best of ``repeats``)."""
    b, n, d = args.batch, args.n_context, args.d
    dtype = jnp.result_type(float)

    def one_run(key, step):
        # Same derivation as the trainer + sampler: fold_in(step), split into 4.
        k_w, k_x, _, _ = jax.random.split(jax.random.fold_in(key, step), 4)
        w = jax.random.normal(k_w, (b, d), dtype)
        z = jax.random.normal(k_x, (b, n + 1, d), dtype)
        return w, z

    @jax.jit
    def floor(keys):
        # The draws are kept alive by an elementwise running sum (a parallel
        # elementwise fusion on CPU); reducing them to a scalar instead makes
        # XLA:CPU emit a reduction fusion that runs slower than the trainer.
        def body(acc, step):
            w, z = jax.vmap(one_run, in_axes=(0, None))(keys, step)
            return (acc[0] + w, acc[1] + z), None

        r = keys.shape[0]
        zeros = (jnp.zeros((r, b, d), dtype), jnp.zeros((r, b, n + 1, d), dtype))
        acc, _ = jax.lax.scan(body, zeros, jnp.arange(floor_steps))
        return acc

    compiled = floor.lower(keys).compile()
    block(compiled(keys))  # warm-up (first-call allocations)
    wall = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        block(compiled(keys))
        wall = min(wall, time.perf_counter() - t0)
    total = keys.shape[0] * floor_steps * normals_per_run_step(args)
    return total / wall, wall


# ------------------------------------------------------------- statistic sampler


_SWAP_CALLS: list = []


def _statistic_as_prompts(key, cov, n_context, batch, *, label_noise=0.0, input_noise=0.0,
                          task=None, factor=None):
    """Drop-in for ``sample_prompts`` in the reduced/block trainer: the statistic sampler."""
    _SWAP_CALLS.append(n_context)
    if factor is None:
        factor = linear_data.covariance_factor(cov)
    stat = linear_data.sample_statistic(key, factor, n_context, batch, label_noise=label_noise,
                                        input_noise=input_noise, task=task)
    return linear_data.statistic_prompts(stat)


@contextlib.contextmanager
def statistic_sampler_scope():
    """While tracing, the product's Monte Carlo trainer draws its prompts with the statistic
    sampler (its loss reads ``training.sample_prompts`` at trace time).  Used only until
    ``TrainStatic`` has a ``sampler`` field; then :func:`statistic_trainer` uses that."""
    saved = linear_training.sample_prompts
    linear_training.sample_prompts = _statistic_as_prompts
    try:
        yield
    finally:
        linear_training.sample_prompts = saved


def has_sampler_field() -> bool:
    return "sampler" in {f.name for f in dataclasses.fields(TrainStatic)}


def bench_vmap_statistic(args, keys, hyper, data, variant="product"):
    """(e): (a) with the statistic sampler — the same trainer, optimizer, keys and runs
    (``variant`` of :data:`DRAW_VARIANTS`: "gamma" is (e0), the previous χ² draw; "jax_draws"
    is (e1), the previous normal/uniform draws)."""
    static = jax_static(args)
    if has_sampler_field():
        trainer = linear_trainer(dataclasses.replace(static, sampler="statistic"))
        scope = contextlib.nullcontext()
    else:
        trainer = linear_trainer(static)
        scope = statistic_sampler_scope()
    # A fresh function object: a jit of the same ``trainer.train`` could reuse (a)'s trace.
    train = lambda key, hyper, data: trainer.train(key, hyper, data)  # noqa: E731
    fn = jax.jit(jax.vmap(train, in_axes=(0, 0, None)))
    t0 = time.perf_counter()
    _SWAP_CALLS.clear()
    with scope, draw_scope(variant):
        compiled = fn.lower(keys, hyper, data).compile()
    compile_s = time.perf_counter() - t0
    if not has_sampler_field() and not _SWAP_CALLS:
        raise RuntimeError("(e): the trainer did not call training.sample_prompts while tracing, "
                           "so the statistic sampler could not be swapped in; use --skip-statistic")
    t0 = time.perf_counter()
    params, metrics = block(compiled(keys, hyper, data))
    wall = time.perf_counter() - t0
    return wall, compile_s, np.asarray(metrics["loss"])


def _chi_square_gamma(key, dfs, batch, dtype, draws=None):
    """The statistic sampler's previous χ² draw (the baseline of (e0), (f0)): sums of squared
    normals up to 8 degrees of freedom, ``2 · jax.random.gamma(df/2)`` above — JAX's gamma is
    a rejection sampler whose ``while`` loop, vmapped, runs until the slowest of all values
    is accepted, splitting a key per value and pass.  ``draws`` (the product's pre-drawn
    χ² words) is ignored: under :func:`chi_square_scope` the sampler draws none for it."""
    dfs = np.asarray(dfs, int).reshape(-1)
    out = jnp.zeros((batch, dfs.size), dtype)
    small = np.flatnonzero(dfs <= 8)
    large = np.flatnonzero(dfs > 8)
    k_small, k_large = jax.random.split(key)
    if small.size:
        width = int(dfs[small].max())
        z = jax.random.normal(k_small, (batch, small.size, width), dtype)
        keep = np.arange(width)[None, :] < dfs[small][:, None]
        out = out.at[:, small].set(jnp.sum(jnp.where(keep, z * z, 0.0), axis=-1))
    if large.size:
        shape = jnp.asarray(0.5 * dfs[large], dtype)
        out = out.at[:, large].set(2.0 * jax.random.gamma(k_large, shape, (batch, large.size),
                                                          dtype))
    return out


@contextlib.contextmanager
def chi_square_scope(kind):
    """``"product"``: the sampler as it is; ``"gamma"``: its χ² draw replaced, while tracing,
    by :func:`_chi_square_gamma` (the previous version, kept as the in-process baseline; the
    sampler's one draw then holds no χ² words)."""
    saved = linear_data._chi_square, linear_data._chi_square_parts
    if kind == "gamma":
        linear_data._chi_square = _chi_square_gamma
        linear_data._chi_square_parts = lambda dfs, batch, candidates=None: {}
    try:
        yield
    finally:
        linear_data._chi_square, linear_data._chi_square_parts = saved


CHI_KINDS = ("product", "gamma")


def _standard_draws_jax(key, parts, dtype):
    """The statistic sampler's previous normal/uniform draws (the baseline of (e1), (f1)): one
    ``jax.random.normal`` / ``uniform`` per component, each from its own split key (under the
    default ``jax_threefry_partitionable=True`` one Threefry hash per 32-bit word, one of its
    two outputs XOR-ed away) — instead of the product's one paired-output Threefry call,
    ``iclsim.linear.data._standard_draws`` (same parts, shapes and laws)."""
    keys = jax.random.split(key, max(len(parts), 1))
    draw = {"normal": jax.random.normal, "uniform": jax.random.uniform}
    return {name: draw[kind](k, shape, dtype)
            for k, (name, (kind, shape)) in zip(keys, parts.items())}


@contextlib.contextmanager
def standard_draws_scope(kind):
    """``"product"``: the sampler as it is; ``"jax"``: its normal/uniform draws replaced, while
    tracing, by :func:`_standard_draws_jax` (the previous draws, the in-process baseline)."""
    saved = linear_data._standard_draws
    if kind == "jax":
        linear_data._standard_draws = _standard_draws_jax
    try:
        yield
    finally:
        linear_data._standard_draws = saved


#: The statistic sampler's draws timed: the product, the previous χ² draw (e0, f0), the
#: previous normal/uniform draws (e1, f1).
DRAW_VARIANTS = {"product": ("e", "f", "(e) vmap sweep, statistic", "(f) statistic RNG floor"),
                 "gamma": ("e0", "f0", "(e0) statistic, gamma χ²", "(f0) floor, gamma χ²"),
                 "jax_draws": ("e1", "f1", "(e1) statistic, jax draws",
                               "(f1) floor, jax draws")}


@contextlib.contextmanager
def draw_scope(variant):
    """The sampler's draws of ``variant`` (a key of :data:`DRAW_VARIANTS`) while tracing."""
    if variant not in DRAW_VARIANTS:
        raise ValueError(f"unknown draw variant {variant!r}")
    with chi_square_scope("gamma" if variant == "gamma" else "product"), \
            standard_draws_scope("jax" if variant == "jax_draws" else "product"):
        yield


def time_scan(body, carry, steps, repeats=2):
    """Best-of-``repeats`` wall of ``jit(lax.scan(body, carry, arange(steps)))`` (compile and a
    warm-up call excluded)."""
    def program(c):
        return jax.lax.scan(body, c, jnp.arange(steps))

    compiled = jax.jit(program).lower(carry).compile()
    block(compiled(carry))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        block(compiled(carry))
        best = min(best, time.perf_counter() - t0)
    return best


def bench_statistic_floor(args, keys, floor_steps, variant="product"):
    """(f): the statistic sampler's RNG floor — only its draws of one step of all runs (w, the
    query, the χ²_N, g: 3d normals and one χ² per prompt), drawn by the very function the
    sampler calls, ``iclsim.linear.data._statistic_draws`` (its key split, its one Threefry
    call), from the trainer's per-step key ``fold_in(key, step)``, in a scan; ``variant``
    as :func:`bench_vmap_statistic` ((f0), (f1))."""
    b, n, d = args.batch, args.n_context, args.d
    dtype = jnp.result_type(float)

    def one_run(key, step):
        w, q, chi, g = linear_data._statistic_draws(jax.random.fold_in(key, step), n, b, d, dtype)
        return w + q + g, chi

    def body(acc, step):
        normals, chi = jax.vmap(one_run, in_axes=(0, None))(keys, step)
        return (acc[0] + normals, acc[1] + chi), None

    zeros = (jnp.zeros((keys.shape[0], b, d), dtype), jnp.zeros((keys.shape[0], b), dtype))
    with draw_scope(variant):
        return time_scan(body, zeros, floor_steps, repeats=3)


def bench_parts(args, keys, hyper, data, part_steps, variant="product"):
    """Seconds of ``part_steps`` steps of each part of the statistic sweep's training step alone
    (all R runs, vmapped, jitted, in a scan; each step depends on the carry, so nothing is
    hoisted out of the loop).  Parts: key derivation, sampling (keys + draws + h), loss +
    gradient (on prompts drawn once), optimizer update (Adam + cosine schedule, as the product
    builds it), tail averaging (the running sum of the iterates), loss recording (a scalar per
    step stacked by the scan)."""
    static = dataclasses.replace(jax_static(args), sampler="statistic")
    b, n = args.batch, args.n_context
    factor = data["factor"]
    dtype = jnp.result_type(float)
    r = keys.shape[0]
    params = jax.vmap(lambda k, rank: lsa.init(k, static.model_config(), rank=rank,
                                               scale=INIT_SCALE))(keys, hyper["rank"])
    weights = params["weights"]
    out = {}

    def keys_body(acc, step):
        k = jax.vmap(lambda key: jax.random.fold_in(key, step))(keys)
        return acc ^ k, None

    out["key derivation"] = time_scan(keys_body, jnp.zeros_like(keys), part_steps)

    def sample_one(key, step):
        stat = linear_data.sample_statistic(jax.random.fold_in(key, step), factor, n, b)
        return stat.h + stat.x_query + stat.w, stat.y_query

    def sample_body(acc, step):
        x, y = jax.vmap(sample_one, in_axes=(0, None))(keys, step)
        return (acc[0] + x, acc[1] + y), None

    with draw_scope(variant):
        out["sampling"] = time_scan(
            sample_body, (jnp.zeros((r, b, args.d), dtype), jnp.zeros((r, b), dtype)), part_steps)

    prompts = jax.vmap(lambda k: linear_data.statistic_prompts(
        linear_data.sample_statistic(k, factor, n, b)))(keys)

    def loss_one(w, p, prm):
        return jnp.mean((lsa.apply({**p, "weights": w}, prm) - prm.y_query) ** 2)

    def grad_body(w, step):
        value, grads = jax.vmap(jax.value_and_grad(loss_one))(w, params, prompts)
        return jax.tree_util.tree_map(lambda a, g: a - 1e-6 * g, w, grads), None

    out["loss + gradient"] = time_scan(grad_body, weights, part_steps)

    make = linear_training.optimizer(static)

    def opt_init(w, hyp):
        return optax.with_extra_args_support(make(hyp)).init(w)

    opt_state = jax.vmap(opt_init)(weights, hyper)
    fixed_grads = jax.tree_util.tree_map(lambda a: 0.1 * a, weights)

    def opt_one(w, s, g, hyp):
        upd, s = optax.with_extra_args_support(make(hyp)).update(g, s, w)
        return optax.apply_updates(w, upd), s

    def opt_body(carry, step):
        w, s = carry
        g = jax.tree_util.tree_map(lambda a, f: f + 1e-3 * a, w, fixed_grads)
        return jax.vmap(opt_one)(w, s, g, hyper), None

    out["optimizer update"] = time_scan(opt_body, (weights, opt_state), part_steps)

    tail_start = part_steps // 2

    def tail_body(carry, step):
        w, acc = carry
        w = jax.tree_util.tree_map(lambda a: a * 1.0000001, w)
        in_tail = (step >= tail_start).astype(dtype)
        acc = jax.tree_util.tree_map(lambda s, a: s + in_tail * a, acc, w)
        return (w, acc), None

    zeros = jax.tree_util.tree_map(jnp.zeros_like, weights)
    out["tail averaging"] = time_scan(tail_body, (weights, zeros), part_steps)

    def record_body(v, step):
        v = v * 0.999 + 1.0
        return v, v

    out["loss recording"] = time_scan(record_body, jnp.zeros((r,), dtype), part_steps)
    return out


def loss_grad_program(args, n_context, sampler, steps):
    """jit: R runs × ``steps`` steps of loss + gradient of the reduced LSA (no optimizer)."""
    d, b, r = args.d, args.batch, args.runs
    dtype = jnp.result_type(float)
    factor = jnp.asarray(np.linalg.cholesky(np.diag(spectrum(d))), dtype)
    cfg = lsa.LSAConfig(d, d, "reduced")

    def loss(params, key):
        if sampler == "statistic":
            prompts = linear_data.statistic_prompts(
                linear_data.sample_statistic(key, factor, n_context, b))
        else:
            prompts = linear_data.sample_prompts(key, None, n_context, b, factor=factor)
        return jnp.mean((lsa.apply(params, prompts) - prompts.y_query) ** 2)

    step_fn = jax.vmap(jax.value_and_grad(loss))

    def program(keys):
        ranks = jnp.asarray(run_ranks(args))
        params = jax.vmap(lambda k, rank: lsa.init(k, cfg, rank=rank, scale=INIT_SCALE))(
            keys, ranks)

        def body(acc, step):
            step_keys = jax.vmap(lambda k: jax.random.fold_in(k, step))(keys)
            value, grads = step_fn(params, step_keys)
            g = sum(jnp.sum(v) for v in jax.tree_util.tree_leaves(grads["weights"]))
            return acc + jnp.sum(value) + 1e-30 * g, None

        acc, _ = jax.lax.scan(body, jnp.zeros((), dtype), jnp.arange(steps))
        return acc

    return jax.jit(program)


def time_program(fn, keys, repeats=2):
    compiled = fn.lower(keys).compile()
    block(compiled(keys))  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        block(compiled(keys))
        best = min(best, time.perf_counter() - t0)
    return best


def bench_series(args, keys):
    """ms per step of loss + gradient (R runs × batch prompts), tokens vs statistic, per N."""
    rows = []
    for n in args.series:
        cell = {}
        for sampler in ("tokens", "statistic"):
            # the statistic step takes a few ms: 10x the steps, so that one timing is not a
            # few tens of ms that any other process on the cores can double
            steps = args.series_steps * (10 if sampler == "statistic" else 1)
            wall = time_program(loss_grad_program(args, n, sampler, steps), keys)
            cell[sampler] = 1e3 * wall / steps
        rows.append((n, cell["tokens"], cell["statistic"]))
        print(f"  series N={n}: tokens {cell['tokens']:.2f} ms/step, "
              f"statistic {cell['statistic']:.2f} ms/step", flush=True)
    return rows


def make_keys(args):
    root = jax.random.PRNGKey(args.seed)
    return jax.vmap(lambda i: jax.random.fold_in(root, i))(jnp.arange(args.runs))


def bench_prng(args):
    """RNG floor and loss + gradient steps under threefry and rbg (same process)."""
    out = {}
    before = jax.config.jax_default_prng_impl
    try:
        for impl in ("threefry2x32", "rbg"):
            jax.config.update("jax_default_prng_impl", impl)
            keys = make_keys(args)
            floor_steps = min(args.floor_steps, args.series_steps * 10)
            rate, _ = bench_rng_floor(args, keys, floor_steps)
            cell = {"floor": rate}
            for sampler in ("tokens", "statistic"):
                wall = time_program(
                    loss_grad_program(args, args.n_context, sampler, args.series_steps), keys)
                cell[sampler] = 1e3 * wall / args.series_steps
            out[impl] = cell
            print(f"  prng {impl}: floor {rate:.3e} normals/s, tokens {cell['tokens']:.2f} "
                  f"ms/step, statistic {cell['statistic']:.2f} ms/step", flush=True)
    finally:
        jax.config.update("jax_default_prng_impl", before)
    return out


def print_series(rows, args):
    print()
    print(f"context-length series: loss + gradient of the reduced LSA, R={args.runs} runs × "
          f"{args.batch} prompts, d={args.d}, {args.series_steps} steps (statistic: "
          f"{10 * args.series_steps}; best of 2), "
          f"{jnp.dtype(jnp.result_type(float)).name}")
    header = f"{'N':>6}{'tokens ms/step':>16}{'statistic ms/step':>19}{'tokens/statistic':>18}"
    print(header)
    print("-" * len(header))
    for n, tok, sta in rows:
        print(f"{n:>6}{tok:>16.2f}{sta:>19.2f}{tok / sta:>17.1f}x")
    stats = [r[2] for r in rows]
    if len(stats) > 1:
        print(f"statistic sampler: max/min cost per step over N = {max(stats) / min(stats):.2f} "
              "(target: flat within 1.5x)")


def print_prng(out):
    print()
    print("PRNG implementation (jax_default_prng_impl), same process:")
    header = f"{'impl':<14}{'floor normals/s':>17}{'tokens ms/step':>16}{'statistic ms/step':>19}"
    print(header)
    print("-" * len(header))
    for impl, c in out.items():
        print(f"{impl:<14}{c['floor']:>17.3e}{c['tokens']:>16.2f}{c['statistic']:>19.2f}")
    if len(out) == 2:
        t, r = out["threefry2x32"], out["rbg"]
        print(f"rbg vs threefry: floor {r['floor'] / t['floor']:.2f}x, tokens step "
              f"{t['tokens'] / r['tokens']:.2f}x, statistic step "
              f"{t['statistic'] / r['statistic']:.2f}x (> 1: rbg faster); the product keeps "
              "threefry (deterministic across backends)")


# ------------------------------------------------------------------------- PyTorch


def torch_cosine(step: int, steps: int) -> float:
    frac = min(max(step / steps, 0.0), 1.0)
    return FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * frac))


def torch_train_one(torch, args, rank: int, seed: int, chol):
    """One run, written as a typical eager PyTorch research script."""
    d, n, b, steps = args.d, args.n_context, args.batch, args.steps
    torch.manual_seed(seed)
    mask = (torch.arange(d) < rank).float()
    a = (INIT_SCALE * torch.randn(d, d) * mask).requires_grad_()
    bb = (INIT_SCALE * torch.randn(d, d) * mask).requires_grad_()
    opt = torch.optim.Adam([a, bb], lr=LEARNING_RATE)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: torch_cosine(s, steps))
    losses = []
    for _ in range(steps):
        w = torch.randn(b, d)
        x_all = torch.randn(b, n + 1, d) @ chol.T
        y_all = torch.einsum("bnd,bd->bn", x_all, w)
        x, x_q = x_all[:, :n], x_all[:, n]
        y, y_q = y_all[:, :n], y_all[:, n]
        h = torch.einsum("bn,bnd->bd", y, x) / n
        gamma = (a * mask) @ bb.T
        pred = ((x_q @ gamma) * h).sum(-1)
        loss = ((pred - y_q) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return np.asarray(losses)


def torch_threads(torch, args, chol) -> tuple[int, str]:
    """Thread count for (c): ``--torch-threads``, or (0) the faster of 1 and all cores.

    On a loaded machine PyTorch's OpenMP pool with as many threads as cores can
    be an order of magnitude slower than one thread (spin-waiting workers
    competing with the other load), which would flatter (a) unfairly; the probe
    keeps the baseline honest.
    """
    cores = n_cores()
    if args.torch_threads > 0:
        return args.torch_threads, f"--torch-threads {args.torch_threads}"
    probe = argparse.Namespace(**{**vars(args), "steps": 30})
    timings = {}
    for threads in dict.fromkeys((cores, 1)):
        torch.set_num_threads(threads)
        torch_train_one(torch, argparse.Namespace(**{**vars(args), "steps": 3}), 1, 0, chol)
        t0 = time.perf_counter()
        torch_train_one(torch, probe, args.d, 0, chol)
        timings[threads] = (time.perf_counter() - t0) / probe.steps
    best = min(timings, key=timings.get)
    probe_s = ", ".join(f"{t} thread(s) {1e3 * v:.2f} ms/step" for t, v in timings.items())
    return best, f"auto: probe {probe_s}"


def bench_torch(torch, args, subset):
    chol = torch.from_numpy(np.linalg.cholesky(np.diag(spectrum(args.d))).astype(np.float32))
    threads, how = torch_threads(torch, args, chol)
    torch.set_num_threads(threads)
    ranks = run_ranks(args)
    # Warm-up (first-call allocator/dispatcher setup), not timed.
    torch_train_one(torch, argparse.Namespace(**{**vars(args), "steps": 5}), 1, 0, chol)
    losses = []
    t0 = time.perf_counter()
    for i in subset:
        losses.append(torch_train_one(torch, args, int(ranks[i]), args.seed + int(i), chol))
    wall = time.perf_counter() - t0
    return wall, np.stack(losses), threads, how


# ---------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=32, help="R, number of runs (default 32)")
    p.add_argument("--steps", type=int, default=None,
                   help="Adam steps per run (default 2000, or 200 with --quick)")
    p.add_argument("--batch", type=int, default=256, help="prompts per step (default 256)")
    p.add_argument("--d", type=int, default=8, help="input dimension (default 8)")
    p.add_argument("--n-context", type=int, default=16, help="context length N (default 16)")
    p.add_argument("--torch-runs", type=int, default=4,
                   help="runs of (c) actually timed, scaled to R (default 4; <= 0: all)")
    p.add_argument("--floor-steps", type=int, default=500,
                   help="steps of the RNG-floor measurement (default 500, capped at --steps)")
    p.add_argument("--torch-threads", type=int, default=0,
                   help="torch.set_num_threads for (c) (default 0: the faster of 1 and all "
                        "cores, by a 30-step probe)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-torch", action="store_true", help="skip the PyTorch loop (c)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 200 steps, 3 series steps (explicit values win)")
    p.add_argument("--skip-statistic", action="store_true",
                   help="skip row (e), the sweep with the statistic sampler")
    p.add_argument("--skip-parts", action="store_true",
                   help="skip the per-part breakdown of the statistic sweep's training step")
    p.add_argument("--series", type=int, nargs="*", default=[16, 64, 256, 1024],
                   help="context lengths of the loss+gradient series (default 16 64 256 1024; "
                        "empty: skip)")
    p.add_argument("--series-steps", type=int, default=None,
                   help="steps per series measurement (default 10, or 3 with --quick)")
    p.add_argument("--only-series", action="store_true",
                   help="skip rows (a)-(e): run only the series, --r-scan and --prng-compare")
    p.add_argument("--prng", choices=("threefry", "rbg"), default="threefry",
                   help="jax_default_prng_impl for the whole run (default threefry, the product's)")
    p.add_argument("--jit-loop-runs", type=int, default=0,
                   help="runs of (b) actually timed, scaled to R (default 0: all)")
    p.add_argument("--r-scan", type=int, nargs="*", default=[],
                   help="also time (a) and (e) at each of these run counts R (GPU sizes, e.g. "
                        "1024 4096 16384) and project 10,000 runs × 10,000 steps")
    p.add_argument("--prng-compare", action="store_true",
                   help="also time the RNG floor and a loss+gradient step under threefry and rbg")
    args = p.parse_args(argv)
    if args.series_steps is None:
        args.series_steps = 3 if args.quick else 10
    if args.steps is None:
        args.steps = 200 if args.quick else 2000
    if any(n < 1 for n in args.series + args.r_scan):
        p.error("--series and --r-scan values must be >= 1")
    for name in ("runs", "steps", "batch", "d", "n_context", "floor_steps", "series_steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.prng == "rbg":
        jax.config.update("jax_default_prng_impl", "rbg")
    if args.only_series:
        return main_series(args)
    r, steps = args.runs, args.steps
    per_step = normals_per_run_step(args)
    total_normals = r * steps * per_step
    floor_steps = min(args.floor_steps, steps)
    subset = torch_subset(args)

    torch = None
    torch_note = None
    if args.skip_torch:
        torch_note = "(c) skipped (--skip-torch)"
    else:
        try:
            import torch  # noqa: F811
        except ImportError as exc:
            torch_note = f"(c) skipped: PyTorch is not importable ({exc}); pip install torch==2.13.0"

    print("sweep throughput: Monte Carlo LSA trainer, reduced Γ = (A∘mask)Bᵀ, Adam + cosine")
    print(f"  R={r} runs (ranks cycling 1..{args.d}), d={args.d}, N={args.n_context}, "
          f"batch={args.batch}, steps={steps}, lr={LEARNING_RATE}, float32")
    print(f"  spectrum Λ = {np.round(spectrum(args.d), 3).tolist()}")
    versions = f"jax {jax.__version__} ({jax.default_backend()})"
    if torch is not None:
        versions += f", torch {torch.__version__}"
    print(f"  {versions}, python {platform.python_version()}, {n_cores()} cores")
    print(f"  1-min load average at start: {load_average()} "
          "(other processes on the cores slow every row and make timings noisy)")
    print(f"  normals per run-step = batch·((N+1)·d + d) = {per_step:,}; "
          f"total = {total_normals:.3e}")
    sys.stdout.flush()

    print(f"  prng {jax.config.jax_default_prng_impl}"
          f"{'' if args.prng == 'threefry' else ' (--prng)'}", flush=True)
    trainer, keys, hyper, data = jax_inputs(args)

    rows = {}
    # The floor runs first, before PyTorch has started its thread pool.
    floor_rate, floor_wall = bench_rng_floor(args, keys, floor_steps)
    wall_d = total_normals / floor_rate
    rows_d = ("(d) JAX RNG floor", wall_d, floor_steps < steps, float("nan"))
    print(f"  (d) done: {floor_wall:.2f} s for {floor_steps} steps (best of 3)", flush=True)

    wall_a, compile_a, loss_a = bench_vmap(trainer, keys, hyper, data)
    rows["a"] = ("(a) vmap sweep [product]", wall_a, False, tail_loss(loss_a[subset]))
    print(f"  (a) done: {wall_a:.2f} s (+ compile {compile_a:.2f} s)", flush=True)

    loop_runs = (np.arange(r) if args.jit_loop_runs <= 0 or args.jit_loop_runs >= r else
                 np.unique(np.concatenate([subset, np.linspace(0, r - 1, args.jit_loop_runs)
                                           .round().astype(int)])))
    wall_b, compile_b, loss_b = bench_jit_loop(trainer, keys, hyper, data, loop_runs)
    scaled_b = len(loop_runs) < r
    wall_b = wall_b * r / len(loop_runs)
    loss_b_sub = loss_b[np.searchsorted(loop_runs, subset)]
    rows["b"] = ("(b) jit per-run loop", wall_b, scaled_b, tail_loss(loss_b_sub))
    print(f"  (b) done: {wall_b:.2f} s (+ compile {compile_b:.2f} s)"
          + (f", timed on {len(loop_runs)} of {r} runs and scaled" if scaled_b else ""),
          flush=True)

    stat_floor = {}
    parts = {}
    if not args.skip_statistic:
        # The product and the previous draws (χ²: e0; normals/uniforms: e1) alternate, twice,
        # so that load drifts hit all alike; each row keeps its best wall.
        part_steps = min(args.floor_steps, steps)
        for rep in range(2):
            for variant, (key, _, name, _) in DRAW_VARIANTS.items():
                wall_e, compile_e, loss_e = bench_vmap_statistic(args, keys, hyper, data, variant)
                if key not in rows or wall_e < rows[key][1]:
                    rows[key] = (name, wall_e, False, tail_loss(loss_e[subset]))
                f_wall = (bench_statistic_floor(args, keys, floor_steps, variant)
                          * steps / floor_steps)
                stat_floor[variant] = min(stat_floor.get(variant, float("inf")), f_wall)
                if not args.skip_parts:
                    got = bench_parts(args, keys, hyper, data, part_steps, variant)
                    best = parts.setdefault(variant, {})
                    for part, sec in got.items():
                        best[part] = min(best.get(part, float("inf")), sec * steps / part_steps)
                print(f"  ({key}) pass {rep + 1}: sweep {wall_e:.2f} s (+ compile "
                      f"{compile_e:.2f} s), floor {f_wall:.2f} s", flush=True)
        for variant, (_, key, _, name) in DRAW_VARIANTS.items():
            rows[key] = (name, stat_floor[variant], floor_steps < steps, float("nan"))

    thread_note = None
    if torch is not None:
        wall_c_sub, loss_c, threads, how = bench_torch(torch, args, subset)
        scaled = len(subset) < r
        wall_c = wall_c_sub * r / len(subset)
        rows["c"] = ("(c) torch eager loop", wall_c, scaled, tail_loss(loss_c))
        thread_note = f"(c) torch.set_num_threads({threads}) [{how}]"
        print(f"  (c) done: {wall_c_sub:.2f} s for {len(subset)} runs, {threads} thread(s)",
              flush=True)
        if scaled:
            torch_note = (f"(c) timed on {len(subset)} of {r} runs (indices {subset.tolist()}, "
                          f"ranks {run_ranks(args)[subset].tolist()}): {wall_c_sub:.2f} s, "
                          f"scaled linearly ×{r / len(subset):g}")
    rows["d"] = rows_d

    header = (f"{'method':<29}{'wall s':>10}{'run-steps/s':>13}{'normals/s':>12}"
              f"{'% floor':>9}{'vs (c)':>9}{'vs (b)':>9}{'vs tokens':>10}{'tail loss':>11}")
    print()
    print(header)
    print("-" * len(header))
    for key in ("a", "e", "e0", "e1", "b", "c", "d", "f", "f0", "f1"):
        if key not in rows:
            continue
        name, wall, extrapolated, tl = rows[key]
        # (e) draws far fewer normals: its "normals/s" counts the token sampler's normals
        # it replaces (the work-equivalent rate), marked with "~".
        rate = total_normals / wall
        vs_c = f"{rows['c'][1] / wall:.1f}x" if "c" in rows else "-"
        vs_b = f"{rows['b'][1] / wall:.2f}x"
        vs_tok = f"{rows['a'][1] / wall:.2f}x"
        wall_s = f"{wall:.2f}{'*' if extrapolated else ' '}"
        tl_s = "-" if math.isnan(tl) else f"{tl:.4f}"
        rate_s = f"{'~' if key[0] in 'ef' else ''}{rate:.3e}"
        print(f"{name:<29}{wall_s:>10}{r * steps / wall:>13,.0f}{rate_s:>12}"
              f"{100 * rate / floor_rate:>8.1f}%{vs_c:>9}{vs_b:>9}{vs_tok:>10}{tl_s:>11}")
    print()
    print(f"compile (excluded above): (a) {compile_a:.2f} s, (b) {compile_b:.2f} s")
    print(f"(d) measured on {floor_steps} steps × {r} runs: {floor_wall:.2f} s (best of 3)"
          + (", scaled to the full step count" if floor_steps < steps else ""))
    if torch_note:
        print(torch_note)
    if thread_note:
        print(thread_note)
    print("* = extrapolated linearly; tail loss = mean loss over the last 10% of steps, "
          f"runs {subset.tolist()}")
    target_c = "c" in rows and rows["c"][1] / wall_a >= 10
    target_b = wall_b / wall_a >= 3
    verdict = [f"(a) vs (b) = {wall_b / wall_a:.2f}x ({'met' if target_b else 'NOT met'}, target >= 3x)"]
    if "c" in rows:
        verdict.insert(0, f"(a) vs (c) = {rows['c'][1] / wall_a:.1f}x "
                          f"({'met' if target_c else 'NOT met'}, target >= 10x)")
    print("target: " + "; ".join(verdict))
    if "e" in rows:
        wall_e = rows["e"][1]
        line = f"(e) vs (a) = {wall_a / wall_e:.2f}x (target >= 3x)"
        if "c" in rows:
            line += f"; (e) vs (c) = {rows['c'][1] / wall_e:.1f}x (target >= 15x)"
        print("statistic sampler: " + line + ("" if has_sampler_field() else
              " [(e) built by swapping the trainer's prompt sampler while tracing]"))
    if "e" in rows:
        print_statistic_floor(rows, stat_floor, parts, args)
    if args.series:
        print_series(bench_series(args, keys), args)
    if args.r_scan:
        print_r_scan(bench_r_scan(args), args)
    if args.prng_compare:
        print_prng(bench_prng(args))
    print(f"1-min load average at end: {load_average()}")


def print_statistic_floor(rows, stat_floor, parts, args):
    """The statistic sweep against its own RNG floor, and its step split into parts."""
    r, steps = args.runs, args.steps
    print()
    print(f"statistic sampler vs its own RNG floor ((f): only its normal, uniform and χ² "
          f"draws), N={args.n_context}; product draws vs the previous ones (gamma: the χ² by "
          "jax.random.gamma; jax_draws: jax.random.normal/uniform per component), best of 2 "
          "passes each, same process")
    header = (f"{'draws':<11}{'sweep s':>9}{'run-steps/s':>13}{'floor s':>9}"
              f"{'floor run-steps/s':>19}{'% floor':>9}")
    print(header)
    print("-" * len(header))
    for variant, (key, _, _, _) in DRAW_VARIANTS.items():
        wall = rows[key][1]
        fl = stat_floor[variant]
        print(f"{variant:<11}{wall:>9.2f}{r * steps / wall:>13,.0f}{fl:>9.2f}"
              f"{r * steps / fl:>19,.0f}{100 * fl / wall:>8.1f}%")
    print(f"(e) vs (e0): {rows['e0'][1] / rows['e'][1]:.2f}x; (e) vs (e1): "
          f"{rows['e1'][1] / rows['e'][1]:.2f}x; (f) vs (f1): "
          f"{stat_floor['jax_draws'] / stat_floor['product']:.2f}x; (e) at "
          f"{100 * stat_floor['product'] / rows['e'][1]:.1f}% of its floor (target >= 75%)")
    if not parts:
        return
    print()
    print(f"one training step of the statistic sweep, split into parts: each part alone, "
          f"jitted, vmapped over R={r} runs, in a scan (best of 2, scaled to {steps} steps); "
          "share = part / full sweep (e), (e0) or (e1)")
    header = (f"{'part':<20}" + "".join(f"{variant + ' s':>13}{'run-steps/s':>13}{'share':>8}"
                                        for variant in parts))
    print(header)
    print("-" * len(header))
    names = list(next(iter(parts.values())))
    for part in names + ["full step"]:
        line = f"{part:<20}"
        for variant, (key, _, _, _) in DRAW_VARIANTS.items():
            if variant not in parts:
                continue
            sec = rows[key][1] if part == "full step" else parts[variant][part]
            line += (f"{sec:>13.3f}{r * steps / sec:>13,.0f}"
                     f"{100 * sec / rows[key][1]:>7.1f}%")
        print(line)


def bench_r_scan(args):
    """(a) and (e) at each R of ``--r-scan`` (same steps, batch, N)."""
    rows = []
    for runs in args.r_scan:
        sub = argparse.Namespace(**{**vars(args), "runs": runs})
        trainer, keys, hyper, data = jax_inputs(sub)
        wall_a, _, _ = bench_vmap(trainer, keys, hyper, data)
        wall_e, _, _ = bench_vmap_statistic(sub, keys, hyper, data)
        rows.append((runs, wall_a, wall_e))
        print(f"  R={runs}: tokens {wall_a:.2f} s, statistic {wall_e:.2f} s", flush=True)
    return rows


def print_r_scan(rows, args):
    print()
    print(f"run-count scan: the vmapped sweep (a) tokens and (e) statistic, {args.steps} steps, "
          f"N={args.n_context}, batch={args.batch}, d={args.d}; 'T(1e4 x 1e4)' = 10,000 runs x "
          "10,000 steps at the measured rate (linear projection)")
    header = (f"{'R':>7}{'tokens s':>10}{'run-steps/s':>14}{'T(1e4x1e4)':>12}"
              f"{'statistic s':>13}{'run-steps/s':>14}{'T(1e4x1e4)':>12}{'ratio':>8}")
    print(header)
    print("-" * len(header))
    for runs, wall_a, wall_e in rows:
        rate_a, rate_e = runs * args.steps / wall_a, runs * args.steps / wall_e
        print(f"{runs:>7}{wall_a:>10.2f}{rate_a:>14,.0f}{1e8 / rate_a:>11.0f}s"
              f"{wall_e:>13.2f}{rate_e:>14,.0f}{1e8 / rate_e:>11.0f}s{wall_a / wall_e:>7.1f}x")


def main_series(args):
    print("sweep throughput, series only: loss + gradient of the reduced LSA")
    print(f"  R={args.runs} runs, d={args.d}, batch={args.batch}, jax {jax.__version__} "
          f"({jax.default_backend()}), {n_cores()} cores, prng {jax.config.jax_default_prng_impl}, "
          f"dtype {jnp.dtype(jnp.result_type(float)).name}")
    print(f"  1-min load average at start: {load_average()}", flush=True)
    if args.series:
        print_series(bench_series(args, make_keys(args)), args)
    if args.r_scan:
        print_r_scan(bench_r_scan(args), args)
    if args.prng_compare:
        print_prng(bench_prng(args))
    print(f"1-min load average at end: {load_average()}")


if __name__ == "__main__":
    main()
