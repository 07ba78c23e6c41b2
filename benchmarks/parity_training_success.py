"""Training success rate of the parity model (setting 2) over seeds, per head count m.

Canonical example of ``docs/theory/parity.md`` (K = 6, k = 2, N = 16).  For each
protocol and mode it prints, per m: the number of runs whose verdict is
``optimum_reached`` and the counts of every failure mode (``collapsed``,
``wrong_feature``, ``not_converged``, ``diverged``), the median and largest gap
between the exact loss (5) of the trained model and R_m, and the wall time.

* ``progressive``: one run with m = K heads per seed; after phase h (``--phase-steps``
  steps each) its first h heads ARE an h-head model trained with phase length
  ``--phase-steps`` (same schedule, masks and data stream as a run with m = h and
  steps = h·phase), so one run per seed yields every m <= K.
* ``joint``: one run per (m, seed), ``--joint-steps`` steps, all heads together.

Usage (numbers of docs/parity.md, ~25 min in all on 2 CPU cores)::

    python benchmarks/parity_training_success.py --protocol progressive --mode population
    python benchmarks/parity_training_success.py --protocol progressive --mode monte_carlo
    python benchmarks/parity_training_success.py --protocol joint --mode population
    python benchmarks/parity_training_success.py --protocol joint --mode monte_carlo --joint-steps 1500
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from iclsim.parity import oracle
from iclsim.parity import training as pt

PI = np.array([0.40, 0.25, 0.15, 0.10, 0.06, 0.04])
N_CONTEXT = 16
K_DEG = 2


def _row(m, verdicts, gap, wall):
    counts = {v: verdicts.count(v) for v in pt.VERDICTS if verdicts.count(v)}
    return {"m": int(m), "success": verdicts.count("optimum_reached"), "runs": len(verdicts),
            "verdicts": counts, "gap_median": float(np.nanmedian(gap)),
            "gap_max": float(np.nanmax(gap)), "wall_s": round(wall, 1)}


def progressive(args):
    n_feat = len(PI)
    static = pt.ParityStatic(n_features=n_feat, k=K_DEG, n_context=N_CONTEXT, m_max=n_feat,
                             mode=args.mode, protocol="progressive",
                             steps=args.phase_steps * n_feat,
                             batch=args.batch if args.mode == "monte_carlo" else 1)
    trainer = pt.parity_trainer(static)
    s = args.seeds
    dtype = jnp.result_type(float)
    hyper = {"heads": jnp.full(s, n_feat, jnp.int32), "learning_rate": jnp.full(s, args.lr, dtype),
             "init_scale": jnp.full(s, args.init_scale, dtype), "label_flip": jnp.zeros(s, dtype),
             "bit_flip": jnp.zeros(s, dtype)}
    data = {"pi": jnp.asarray(PI, dtype)}
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(args.seed), i))(jnp.arange(s))
    state = jax.jit(jax.vmap(trainer.init, in_axes=(0, 0, None)))(keys, hyper, data)
    run = jax.jit(jax.vmap(trainer.run, in_axes=(0, 0, None, None)), static_argnums=3)
    r_m = oracle.optimal_risks(PI, N_CONTEXT)
    start = time.perf_counter()
    rows = []
    for h in range(1, n_feat + 1):
        state, loss = run(state, hyper, data, args.phase_steps)
        params = jax.block_until_ready(state.params)
        out = pt.assess_runs(params, np.asarray(loss), PI, N_CONTEXT, K_DEG, np.full(s, h),
                             distractor_bits=0, eval_key=jax.random.key(1), eval_prompts=4096)
        rows.append(_row(h, out["verdict"], out["risk"] - r_m[h], time.perf_counter() - start))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def joint(args):
    res = pt.train(jax.random.key(args.seed), PI, N_CONTEXT, K_DEG, range(1, len(PI) + 1),
                   mode=args.mode, protocol="joint", seeds=args.seeds, steps=args.joint_steps,
                   batch=args.batch, learning_rate=args.lr, init_scale=args.init_scale,
                   eval_prompts=4096)
    rows = []
    for m in range(1, len(PI) + 1):
        sel = np.flatnonzero(res.heads == m)
        rows.append(_row(m, [res.verdict[i] for i in sel],
                         res.risk[sel] - res.optimal_risks[m], res.wall_time))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", choices=pt.PROTOCOLS, default="progressive")
    parser.add_argument("--mode", choices=pt.MODES, default="population")
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--phase-steps", type=int, default=1000,
                        help="progressive: steps per head phase (default 1000)")
    parser.add_argument("--joint-steps", type=int, default=6000, help="joint: steps (default 6000)")
    parser.add_argument("--batch", type=int, default=256, help="Monte Carlo prompts per step")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--init-scale", type=float, default=None,
                        help="logit init noise (default: 0 progressive, 0.1 joint)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.init_scale is None:
        args.init_scale = 0.0 if args.protocol == "progressive" else 0.1
    print(f"# {args.protocol}, {args.mode}, {args.seeds} seeds, lr {args.lr}, "
          f"init_scale {args.init_scale}, batch {args.batch}, JAX {jax.__version__}")
    (progressive if args.protocol == "progressive" else joint)(args)


if __name__ == "__main__":
    main()
