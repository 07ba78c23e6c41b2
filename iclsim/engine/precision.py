"""Matrix-product precision: full float32 on accelerators, or the backend's fast default.

On GPUs and TPUs XLA computes float32 matrix products in reduced precision unless
told otherwise (TF32 — a 10-bit mantissa — on NVIDIA Ampere and later, bfloat16
passes on TPU); on CPU the default is already full float32.  The accuracy claims
of the simulator (population-mode Γ to ~1e-5 relative error in float32, risks to
1e-4) were measured on CPU, so programs that train, evaluate or compare with the
oracle should run their dots at full float32 precision:

``"float32"`` (the default, :data:`DEFAULT_PRECISION`)
    every ``dot_general`` traced inside the scope gets ``Precision.HIGHEST`` (full
    float32; no effect on the results on CPU, and none on float64);
``"fast"``
    the backend default (``Precision.DEFAULT``): TF32 / bfloat16 passes on
    accelerators; for throughput measurements and for showing what it costs.

How it works.  JAX reads ``jax_default_matmul_precision`` when it *traces* a
function (for ``jit``: at the first call with a new signature, or at
``.lower``), and the setting is part of the jit cache key, so the same jitted
function traced under the two settings gives two programs and never reuses the
wrong one.  Hence: enter the scope around the call (or the ``lower``) of the
jitted program, not around its definition::

    from iclsim.engine.precision import precision_scope

    with precision_scope(static.precision):        # "float32" | "fast"
        params, metrics = vmapped_train(keys, hyper, data)

or decorate the entry point: ``run = with_precision("float32")(run)``.
Explicit ``precision=`` arguments inside the code still win over the scope.

Checking it.  :func:`dot_precisions` lists the precision of every dot in a
lowered program (``jax.jit(f).lower(*args).as_text()``), so a test or a user can
confirm that a whole trainer runs at the intended precision on any backend
(``tests/test_precision.py``).
"""

from __future__ import annotations

import contextlib
import functools
import re

import jax

__all__ = [
    "PRECISIONS",
    "DEFAULT_PRECISION",
    "check_precision",
    "matmul_precision",
    "precision_scope",
    "with_precision",
    "set_precision",
    "dot_precisions",
]

#: ``"float32"``: full float32 dots (Precision.HIGHEST); ``"fast"``: the backend default.
PRECISIONS = ("float32", "fast")
DEFAULT_PRECISION = "float32"

_MATMUL = {"float32": "float32", "fast": None}


def check_precision(precision) -> str:
    """Return ``precision`` if it is one of :data:`PRECISIONS`, else raise ``ValueError``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def matmul_precision(precision) -> str | None:
    """The ``jax_default_matmul_precision`` value of ``precision``: ``"float32"`` or None."""
    return _MATMUL[check_precision(precision)]


@contextlib.contextmanager
def precision_scope(precision=DEFAULT_PRECISION):
    """Context manager: functions traced inside run their dots at ``precision``.

    Scopes nest; the innermost wins (``"fast"`` inside ``"float32"`` restores the
    backend default).
    """
    with jax.default_matmul_precision(matmul_precision(precision)):
        yield


def with_precision(precision=DEFAULT_PRECISION):
    """Decorator: every call of the decorated function runs inside :func:`precision_scope`.

    Use it on the function that *calls* (and so traces) the jitted program, or on
    a jitted function itself (``with_precision("float32")(jax.jit(f))``).
    """
    check_precision(precision)

    def decorate(fn):
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            with precision_scope(precision):
                return fn(*args, **kwargs)

        return wrapped

    return decorate


def set_precision(precision=DEFAULT_PRECISION) -> None:
    """Set the process-wide default (``jax.config.update``), e.g. once in a CLI entry point."""
    jax.config.update("jax_default_matmul_precision", matmul_precision(precision))


_STABLEHLO_DOT = re.compile(r"stablehlo\.dot(?:_general)?\b")
_PRETTY = re.compile(r"precision\s*=\s*\[([A-Z_]+)\s*,\s*([A-Z_]+)\]")
_GENERIC = re.compile(r"precision_config\s*=\s*\[#stablehlo<precision\s+([A-Z_]+)>\s*,"
                      r"\s*#stablehlo<precision\s+([A-Z_]+)>\]")


def dot_precisions(lowered_text: str) -> list[tuple[str, str] | None]:
    """Operand precisions of every dot in a lowered StableHLO module, in order.

    ``lowered_text`` is ``jax.jit(f).lower(*args).as_text()``.  Each entry is a
    pair such as ``("HIGHEST", "HIGHEST")`` or ``("DEFAULT", "DEFAULT")``, or None
    for a dot that carries no precision attribute (the backend default).  Dots in
    nested regions (scan and while bodies, custom derivatives) are included.
    """
    out: list[tuple[str, str] | None] = []
    for line in lowered_text.splitlines():
        if not _STABLEHLO_DOT.search(line):
            continue
        match = _PRETTY.search(line) or _GENERIC.search(line)
        out.append((match.group(1), match.group(2)) if match else None)
    return out
