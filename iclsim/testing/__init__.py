"""Verification kit: check your own trained weights against iclsim's closed-form optima.

Guide: ``docs/testing.md``.  Theory: ``docs/theory/linear.md`` (Theorem A: the rank-r
optimum Γ_r of linear self-attention) and ``docs/theory/parity.md`` (Theorem C: the m-head
optimum of sparse parity).

* assertions (float64 numpy, built on :mod:`iclsim.linear.oracle` and
  :mod:`iclsim.parity.oracle`): :func:`assert_lsa_optimal`, :func:`assert_parity_optimal`,
  :func:`assert_risk_close`, :func:`excess_risk`, :func:`lsa_gamma`;
* hypothesis strategies that draw only what the oracles accept: :func:`spectra`,
  :func:`covariances`, :func:`importances`, :func:`noise_levels`, :func:`linear_configs`,
  :func:`parity_configs`.

hypothesis is optional: ``import iclsim.testing`` and the assertions work without it; a
strategy called without it raises ``ImportError`` (``pip install hypothesis``, or the extra
``pip install 'iclsim[testing]'``).
"""

from iclsim.testing.assertions import (
    assert_lsa_optimal,
    assert_parity_optimal,
    assert_risk_close,
    excess_risk,
    lsa_gamma,
)
from iclsim.testing.strategies import (
    Covariance,
    LinearCase,
    ParityCase,
    covariances,
    importances,
    linear_configs,
    noise_levels,
    parity_configs,
    spectra,
)

__all__ = [
    "assert_lsa_optimal",
    "assert_parity_optimal",
    "assert_risk_close",
    "excess_risk",
    "lsa_gamma",
    "Covariance",
    "LinearCase",
    "ParityCase",
    "covariances",
    "importances",
    "linear_configs",
    "noise_levels",
    "parity_configs",
    "spectra",
]
