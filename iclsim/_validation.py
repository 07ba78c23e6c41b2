"""Input checks shared by the oracles, data samplers and trainers.

Every check raises ``ValueError`` with a message that names the argument and the
allowed range, so that a bad call fails at the boundary and never deep inside JAX.
Values that are JAX tracers (inside ``jit``/``vmap``) cannot be inspected and are
passed through unchecked.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np

__all__ = [
    "is_traced",
    "check_int",
    "check_nonnegative",
    "check_in_range",
    "check_covariance",
]


def is_traced(value) -> bool:
    """True when ``value`` is an abstract JAX value (inside a transformation)."""
    try:
        import jax

        return isinstance(value, jax.core.Tracer)
    except Exception:  # pragma: no cover - jax always importable in practice
        return False


def check_int(name: str, value, lo: int, hi: int | None = None) -> int:
    """Return ``value`` as an int in ``[lo, hi]`` (``hi=None``: unbounded)."""
    if isinstance(value, bool) or not isinstance(value, (Integral, np.integer)):
        if isinstance(value, (Real, np.floating)) and float(value).is_integer():
            value = int(value)
        else:
            raise ValueError(
                f"{name} must be an integer in {_range(lo, hi)}, got {value!r}"
            )
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        raise ValueError(f"{name} must be an integer in {_range(lo, hi)}, got {value}")
    return value


def check_in_range(name: str, value, lo: float, hi: float | None = None):
    """Check a real scalar or array lies in ``[lo, hi]`` and is finite; return it.

    Arrays are checked elementwise; tracers pass through unchecked.
    """
    if is_traced(value):
        return value
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a real number in {_range(lo, hi)}, got {value!r}")
    arr = arr.astype(float)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite and in {_range(lo, hi)}, got {value!r}")
    if np.any(arr < lo) or (hi is not None and np.any(arr > hi)):
        raise ValueError(f"{name} must be in {_range(lo, hi)}, got {value!r}")
    return value


def check_nonnegative(name: str, value):
    """Check a (scalar or array) variance-like argument is finite and >= 0."""
    return check_in_range(name, value, 0.0, None)


def check_covariance(cov, name: str = "cov", *, rtol: float = 1e-10) -> np.ndarray:
    """Return ``cov`` as a float64 symmetric positive-definite (d, d) array.

    Raises ``ValueError`` if it is not square, has non-finite entries, is not
    symmetric to relative tolerance ``rtol``, or has a non-positive eigenvalue.
    The returned matrix is exactly symmetrised, ``(cov + cov.T) / 2``.
    """
    arr = np.asarray(cov, dtype=float)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] < 1:
        raise ValueError(
            f"{name} must be a square (d, d) matrix with d >= 1, got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must have finite entries (found NaN or inf)")
    scale = max(np.max(np.abs(arr)), np.finfo(float).tiny)
    if np.max(np.abs(arr - arr.T)) > rtol * scale:
        raise ValueError(
            f"{name} must be symmetric (max |cov - cov.T| <= {rtol:g} * max|cov|)"
        )
    arr = 0.5 * (arr + arr.T)
    lam_min = float(np.linalg.eigvalsh(arr)[0])
    if not lam_min > 0.0:
        raise ValueError(
            f"{name} must be positive definite (all eigenvalues > 0), "
            f"smallest eigenvalue is {lam_min:.3g}"
        )
    return arr


def _range(lo, hi) -> str:
    if hi is None:
        return f"[{lo}, inf)"
    return f"[{lo}, {hi}]"


def finite_float(name: str, value) -> float:
    """Return a finite Python float or raise ``ValueError`` naming ``name``."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite real number, got {value!r}") from None
    if not math.isfinite(out):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    return out
