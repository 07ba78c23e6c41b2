"""Shared test set-up: JAX dtype per test, XLA's compile level, hypothesis profiles and
strategies.

In-process tests run in float32, the dtype users run (JAX's default).  A test (or a whole
module, ``pytestmark = pytest.mark.float64``) that checks float64 identities says so with the
``float64`` marker; it then runs inside ``jax.enable_x64(True)``.

The suite's processes (this one, the CLI subprocesses the tests start) compile with LLVM at
-O0 (:data:`QUICK_XLA_FLAG`): the same XLA programs after the same HLO passes, machine code
compiled ~3x faster and run a little slower; most tests here are compile-bound.  What users
run is XLA's default level: ``tests/test_compile_level.py`` trains the same runs at both
levels and finds the same numbers to float rounding.  ``XLA_FLAGS`` that already set
``--xla_backend_optimization_level`` win (``XLA_FLAGS=--xla_backend_optimization_level=2
python -m pytest`` runs the whole suite at the default level).
"""

import os
import subprocess
import sys
from pathlib import Path

#: LLVM optimisation level of the suite's processes (see the module docstring).
QUICK_XLA_FLAG = "--xla_backend_optimization_level=0"


def quick_compile_env(env: dict) -> dict:
    """``env`` with :data:`QUICK_XLA_FLAG` appended to ``XLA_FLAGS``, unless ``XLA_FLAGS``
    already sets the level."""
    flags = env.get("XLA_FLAGS", "")
    if "--xla_backend_optimization_level" in flags:
        return dict(env)
    return {**env, "XLA_FLAGS": " ".join(f for f in (flags, QUICK_XLA_FLAG) if f)}


# Before JAX creates its CPU client, which reads XLA_FLAGS once per process.
os.environ.update(quick_compile_env(dict(os.environ)))

import jax  # noqa: E402
import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import pytest


#: JAX's x64 flag as this process started (JAX_ENABLE_X64 may set it); every test module must
#: leave it so at import, or module-scoped fixtures would compute in another dtype.
_X64_AT_START = bool(jax.config.jax_enable_x64)


def pytest_collection_finish(session):
    """Fail the session if importing a test module changed JAX's global x64 flag (it did once:
    a benchmark module loaded by a test called ``jax.config.update`` at import, so the suite's
    module fixtures ran in float64 and their tests in float32)."""
    if bool(jax.config.jax_enable_x64) != _X64_AT_START:
        raise pytest.UsageError(
            "collecting the tests changed jax_enable_x64 "
            f"({_X64_AT_START} -> {bool(jax.config.jax_enable_x64)}): a test module or what it "
            "imports sets JAX configuration at import")


@pytest.fixture(autouse=True, scope="module")
def _jax_module_dtype(request):
    """Module-scoped fixtures are set up before a test's own dtype: give them the module's
    (float32 unless the module is marked ``float64``)."""
    x64 = request.node.get_closest_marker("float64") is not None
    with jax.enable_x64(x64):
        yield


@pytest.fixture(autouse=True)
def _jax_dtype(request):
    """float32 unless the test is marked ``float64`` (then x64 for that test only)."""
    x64 = request.node.get_closest_marker("float64") is not None
    with jax.enable_x64(x64):
        yield

settings.register_profile(
    "default", deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
settings.register_profile(
    "thorough", deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

#: The canonical example of docs/theory/linear.md.
CANONICAL_LAMBDA = np.array([4.0, 2.5, 1.5, 1.0, 0.6, 0.35, 0.2, 0.1])
CANONICAL_N = 20


def random_rotation(seed: int, d: int) -> np.ndarray:
    """A Haar-ish random orthogonal matrix (QR of a Gaussian matrix, signs fixed)."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


@st.composite
def spectra(draw, min_d=1, max_d=6, min_gap=1e-3):
    """Decreasing positive spectra with relative gaps >= min_gap (no rank ties)."""
    d = draw(st.integers(min_d, max_d))
    logs = draw(
        st.lists(st.floats(-2.0, 2.0, allow_nan=False), min_size=d, max_size=d, unique=True)
    )
    lam = np.sort(np.exp(np.array(logs)))[::-1]
    if d > 1 and np.min(lam[:-1] / lam[1:] - 1.0) < min_gap:
        lam = lam * (1.0 + min_gap) ** np.arange(d)[::-1] ** 1  # spread out near-ties
        lam = np.sort(lam)[::-1]
    return lam


@st.composite
def covariances(draw, min_d=1, max_d=6):
    """(Λ, λ, U): a random non-diagonal covariance with its spectrum and eigenbasis."""
    lam = draw(spectra(min_d=min_d, max_d=max_d))
    seed = draw(st.integers(0, 2**31 - 1))
    u = random_rotation(seed, len(lam))
    cov = (u * lam) @ u.T
    return 0.5 * (cov + cov.T), lam, u


FAULTS = Path(__file__).with_name("fault_injection.py")


def run_cli(*args, env=None, cache=None, kill_after_checkpoints=0, timeout=600):
    """The ``iclsim`` CLI in a subprocess (compiled as this process: :data:`QUICK_XLA_FLAG`);
    ``kill_after_checkpoints`` > 0 SIGKILLs it after that many chunk checkpoints (injected from
    outside the product, tests/fault_injection.py); ``cache``: a persistent XLA compilation
    cache folder shared by the subprocesses."""
    full_env = dict(os.environ, **(env or {}))
    if cache is not None:
        full_env["JAX_COMPILATION_CACHE_DIR"] = str(cache)
        full_env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    if kill_after_checkpoints:
        cmd = [sys.executable, str(FAULTS), str(kill_after_checkpoints), "--", *args]
    else:
        cmd = [sys.executable, "-m", "iclsim.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout)


def result_folder(root) -> Path:
    """The single result folder ``<root>/<name>-<config hash>/<code hash>/`` below ``root``
    (hidden folders such as ``.trained``, the trained parameters, are not results)."""
    (config_folder,) = [p for p in Path(root).iterdir() if p.is_dir()
                        and not p.name.startswith(".")]
    (code_folder,) = [p for p in config_folder.iterdir() if p.is_dir()]
    return code_folder
