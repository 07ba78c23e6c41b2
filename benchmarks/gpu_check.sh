#!/usr/bin/env bash
# GPU check: one prepared script for a short slot on one accelerator.
#
#   bash benchmarks/gpu_check.sh            # ~5 min on one H100/H200-class GPU
#   bash benchmarks/gpu_check.sh --quick    # smaller sizes (smoke run; also what runs on a CPU)
#
# Run from anywhere; it works in the repository root.  Stages, each under its own time cap
# (a stage that fails or times out is reported and the script goes on):
#   0. environment: GPU, driver, python, jax/jaxlib, devices; installs only if needed
#      (pip install -e ".[dev]"; jax[cuda12] pinned to the installed jax version);
#   1. precision: population-mode training of the canonical example (float32, ranks 1..8)
#      with precision "float32" (Precision.HIGHEST on every dot) and "fast" (the backend
#      default: TF32 on NVIDIA Ampere+), Γ error vs the oracle, R(Γ) − L_r, certificates;
#      plus the relative error of one float32 matmul under each setting;
#   2. throughput: benchmarks/sweep_throughput.py at GPU size — the vmapped sweep with the
#      token and the statistic sampler, the per-run jitted loop (subset, scaled), the RNG
#      floor, the context-length series N = 16..1024, the run-count scan R = 1024, 4096,
#      16384 with the projected time of 10,000 runs × 10,000 steps, threefry vs rbg;
#   3. the README's main job end to end (iclsim run sweeps/quickstart.toml);
#   4. the precision and sampler tests (tests/test_precision.py, tests/test_statistic_sampler.py).
# Everything it prints also goes to $OUT/gpu_check.txt ($OUT if set, else
# benchmarks/gpu_check_out/).  XLA_PYTHON_CLIENT_PREALLOCATE=false throughout.

set -u -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
ROOT=$(pwd)

QUICK=0
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (use --quick or --help)" >&2; exit 2 ;;
  esac
done

OUTDIR="${OUT:-$ROOT/benchmarks/gpu_check_out}"
mkdir -p "$OUTDIR" || exit 1
LOG="$OUTDIR/gpu_check.txt"
: > "$LOG"
exec > >(tee -a "$LOG") 2>&1

export XLA_PYTHON_CLIENT_PREALLOCATE=false
export PYTHONUNBUFFERED=1
T0=$(date +%s)

say() { echo "[$(date +%H:%M:%S) +$(( $(date +%s) - T0 ))s] $*"; }

# stage NAME CAP_SECONDS CMD...: run CMD under a time cap, report rc and wall time.
SUMMARY=()
stage() {
  local name=$1 cap=$2
  shift 2
  say "===== $name (cap ${cap}s)"
  say "\$ $*"
  local start=$(date +%s)
  timeout --kill-after=10 "$cap" "$@"
  local rc=$?
  local wall=$(( $(date +%s) - start ))
  local what="ok"
  [ "$rc" -ne 0 ] && what="FAILED (rc=$rc)"
  [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && what="TIMED OUT after ${cap}s"
  say "===== $name: $what in ${wall}s"
  SUMMARY+=("$name: $what, ${wall}s")
  return 0
}

# ------------------------------------------------------------------ 0. environment
say "===== environment"
echo "host: $(uname -srm), $(nproc) cores, repo $ROOT ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no git'))"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader \
    || nvidia-smi -L
else
  echo "nvidia-smi: not found"
fi

PY=""
for cand in "$ROOT/.venv/bin/python" python3 python; do
  if command -v "$cand" >/dev/null 2>&1 \
     && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    PY=$cand
    break
  fi
done
if [ -z "$PY" ]; then
  say "no python >= 3.11 found; nothing to run"
  exit 1
fi
say "python: $PY ($("$PY" --version 2>&1))"

PIP_FLAGS=(--quiet --disable-pip-version-check --retries 0 --timeout 10)
if ! "$PY" -c 'import jax, optax, numpy, xarray, hypothesis, pytest' 2>/dev/null; then
  say "dependencies missing: $PY -m pip install -e .[dev]"
  timeout 300 "$PY" -m pip install "${PIP_FLAGS[@]}" -e "$ROOT[dev]" \
    || say "pip install -e .[dev] failed (offline?); continuing with what is installed"
fi
if ! "$PY" -c 'import iclsim' 2>/dev/null; then
  say "iclsim not installed: using PYTHONPATH=$ROOT (pure python package)"
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi

backend() { "$PY" -c 'import jax; print(jax.default_backend())' 2>/dev/null || echo none; }
BACKEND=$(backend)
if [ "$BACKEND" != "gpu" ] && command -v nvidia-smi >/dev/null 2>&1; then
  JAXV=$("$PY" -c 'import jax; print(jax.__version__)' 2>/dev/null || echo "")
  say "a GPU is present but JAX's backend is '$BACKEND': pip install jax[cuda12]==$JAXV"
  timeout 300 "$PY" -m pip install "${PIP_FLAGS[@]}" "jax[cuda12]${JAXV:+==$JAXV}" \
    || say "pip install jax[cuda12] failed (offline?)"
  BACKEND=$(backend)
fi
"$PY" - <<'EOF' || true
import jax, jaxlib, numpy
print(f"jax {jax.__version__}, jaxlib {jaxlib.__version__}, numpy {numpy.__version__}, "
      f"backend {jax.default_backend()}, devices {jax.devices()}")
print(f"default prng {jax.config.jax_default_prng_impl}, "
      f"default matmul precision {jax.config.jax_default_matmul_precision}")
EOF
if [ "$BACKEND" = "gpu" ]; then
  SIZE=gpu
else
  SIZE=cpu
  QUICK=1
  say "WARNING: JAX backend is '$BACKEND', not gpu: running the small (--quick) sizes only"
fi
say "sizes: $SIZE$([ "$QUICK" = 1 ] && echo ' (quick)')"

# ------------------------------------------------------------------ 1. precision
if [ "$QUICK" = 1 ]; then PREC_STEPS=600; PREC_SEEDS=1; else PREC_STEPS=3000; PREC_SEEDS=4; fi
PREC_PY="$OUTDIR/precision_check.py"
cat > "$PREC_PY" <<'EOF'
import sys, time
import numpy as np
import jax
import jax.numpy as jnp
from iclsim.engine.precision import PRECISIONS, precision_scope
from iclsim.linear import oracle, train
from iclsim.linear import model as lsa

steps, seeds = int(sys.argv[1]), int(sys.argv[2])
assert jnp.result_type(float) == jnp.float32, "precision check expects float32 (x64 off)"
lam = np.array([4.0, 2.5, 1.5, 1.0, 0.6, 0.35, 0.2, 0.1])
q, r = np.linalg.qr(np.random.default_rng(0).standard_normal((8, 8)))
u = q * np.sign(np.diag(r))
cov = (u * lam) @ u.T
cov = 0.5 * (cov + cov.T)
n = 20
print(f"backend {jax.default_backend()}: canonical Λ (random rotation), N={n}, ranks 1..8, "
      f"{seeds} seed(s), population mode, {steps} steps, lr 0.05, float32")

# One float32 matmul against float64: shows whether the backend drops precision.
a = np.random.default_rng(1).standard_normal((512, 512)).astype(np.float32)
ref = a.astype(np.float64) @ a.astype(np.float64)
for p in PRECISIONS:
    with precision_scope(p):
        got = np.asarray(jax.jit(lambda x: x @ x)(jnp.asarray(a)), np.float64)
    print(f"  matmul 512x512 float32, precision {p!r:10}: max rel error "
          f"{np.max(np.abs(got - ref)) / np.max(np.abs(ref)):.2e}")

# The exact risk (population objective) at Γ_r in float32 vs the float64 oracle.
for p in PRECISIONS:
    errs = []
    for rank in range(1, 9):
        g = oracle.optimal_gamma(cov, n, rank)
        with precision_scope(p):
            val = float(jax.jit(lsa.reduced_population_risk, static_argnums=2)(
                jnp.asarray(g, jnp.float32), jnp.asarray(cov, jnp.float32), n))
        exact = oracle.population_risk(g, cov, n)
        errs.append(abs(val - exact) / exact)
    print(f"  R(Γ_r) in float32 JAX vs float64 oracle, precision {p!r:10}: max rel error "
          f"{max(errs):.2e}")

header = (f"  {'precision':<10}{'wall s':>8}{'max Γ err':>11}{'max |R-L_r|/L_r':>17}"
          f"{'max grad_rel':>14}{'converged':>11}{'optimum':>9}{'max |test-R|/SE':>17}")
print(header)
for p in PRECISIONS:
    t0 = time.perf_counter()
    with precision_scope(p):
        res = train(jax.random.PRNGKey(0), cov, n, list(range(1, 9)), mode="population",
                    seeds=seeds, steps=steps, learning_rate=0.05)
    wall = time.perf_counter() - t0
    ladder = np.asarray(res.optimal_risks)
    gap = np.abs(res.risk - ladder[res.rank]) / ladder[res.rank]
    z = np.abs(res.test_risk - res.risk) / res.test_se
    conv = int(np.sum(getattr(res, "converged", np.zeros(len(res.rank), bool))))
    grad = np.nanmax(getattr(res, "grad_rel", np.full(len(res.rank), np.nan)))
    opt = sum(v == "optimum_reached" for v in res.verdict)
    print(f"  {p:<10}{wall:>8.1f}{np.nanmax(res.gamma_error):>11.2e}{np.nanmax(gap):>17.2e}"
          f"{grad:>14.2e}{conv:>7}/{len(res.rank):<3}{opt:>5}/{len(res.rank):<3}{np.nanmax(z):>13.2f}")
print("  claims (docs/sweeps.md, CPU float32): Γ error ~1e-6-1e-5, R(Γ) = L_r to ~1e-7; "
      "a 'fast' row far above that means TF32 breaks them on this backend")
EOF
stage "precision float32 vs fast" "$([ "$QUICK" = 1 ] && echo 150 || echo 100)" \
  "$PY" "$PREC_PY" "$PREC_STEPS" "$PREC_SEEDS"

# ------------------------------------------------------------------ 2. throughput
if [ "$QUICK" = 1 ]; then
  BENCH=(--runs 8 --steps 100 --n-context 20 --skip-torch --jit-loop-runs 2 --floor-steps 50
         --series 16 256 --series-steps 3 --prng-compare)
else
  BENCH=(--runs 1024 --steps 500 --n-context 20 --skip-torch --jit-loop-runs 16 --floor-steps 200
         --series 16 64 256 1024 --series-steps 20 --r-scan 1024 4096 16384 --prng-compare)
fi
# --skip-torch: row (c) is a CPU PyTorch loop; a PyTorch CUDA peer is not part of this script.
stage "throughput" "$([ "$QUICK" = 1 ] && echo 240 || echo 200)" \
  "$PY" "$ROOT/benchmarks/sweep_throughput.py" "${BENCH[@]}"

# ------------------------------------------------------------------ 3. main job
stage "README main job (iclsim run sweeps/quickstart.toml)" 90 \
  "$PY" -m iclsim.cli run "$ROOT/sweeps/quickstart.toml" --out "$OUTDIR/quickstart" --quiet

# ------------------------------------------------------------------ 4. tests
stage "precision and sampler tests" 90 \
  "$PY" -m pytest -q -x -p no:cacheprovider "$ROOT/tests/test_precision.py" \
  "$ROOT/tests/test_statistic_sampler.py"

# ------------------------------------------------------------------ summary
say "===== summary (backend $BACKEND, sizes $SIZE$([ "$QUICK" = 1 ] && echo ', quick'))"
for line in "${SUMMARY[@]}"; do echo "  $line"; done
say "total $(( $(date +%s) - T0 ))s; numbers in $LOG"
