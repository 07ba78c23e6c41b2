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


def jax_inputs(args):
    static = TrainStatic(
        d=args.d, n_context=args.n_context, r_max=args.d, mode="monte_carlo",
        parametrization="reduced", init="random", steps=args.steps, batch=args.batch,
        schedule="cosine", final_lr_fraction=FINAL_LR_FRACTION,
    )
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


def bench_jit_loop(trainer, keys, hyper, data):
    fn = jax.jit(trainer.train)
    run = lambda tree, i: jax.tree_util.tree_map(lambda v: v[i], tree)  # noqa: E731
    t0 = time.perf_counter()
    compiled = fn.lower(run(keys, 0), run(hyper, 0), data).compile()
    compile_s = time.perf_counter() - t0
    # Slice the per-run inputs outside the timed region (a loop over a grid
    # would build them from Python scalars, which is cheaper still).
    inputs = [(run(keys, i), run(hyper, i)) for i in range(keys.shape[0])]
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
                   help="smoke run: 200 steps (an explicit --steps wins)")
    args = p.parse_args(argv)
    if args.steps is None:
        args.steps = 200 if args.quick else 2000
    for name in ("runs", "steps", "batch", "d", "n_context", "floor_steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
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

    wall_b, compile_b, loss_b = bench_jit_loop(trainer, keys, hyper, data)
    rows["b"] = ("(b) jit per-run loop", wall_b, False, tail_loss(loss_b[subset]))
    print(f"  (b) done: {wall_b:.2f} s (+ compile {compile_b:.2f} s)", flush=True)

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

    header = (f"{'method':<26}{'wall s':>10}{'run-steps/s':>13}{'normals/s':>12}"
              f"{'% floor':>9}{'vs (c)':>9}{'vs (b)':>9}{'tail loss':>11}")
    print()
    print(header)
    print("-" * len(header))
    for key in ("a", "b", "c", "d"):
        if key not in rows:
            continue
        name, wall, extrapolated, tl = rows[key]
        rate = total_normals / wall
        vs_c = f"{rows['c'][1] / wall:.1f}x" if "c" in rows else "-"
        vs_b = f"{rows['b'][1] / wall:.2f}x"
        wall_s = f"{wall:.2f}{'*' if extrapolated else ' '}"
        tl_s = "-" if math.isnan(tl) else f"{tl:.4f}"
        print(f"{name:<26}{wall_s:>10}{r * steps / wall:>13,.0f}{rate:>12.3e}"
              f"{100 * rate / floor_rate:>8.1f}%{vs_c:>9}{vs_b:>9}{tl_s:>11}")
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
    print(f"1-min load average at end: {load_average()}")


if __name__ == "__main__":
    main()
