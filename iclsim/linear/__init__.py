"""Setting 1: in-context linear regression with rank-r linear self-attention.

Theory: ``docs/theory/linear.md``.  Public API:

* oracle (exact, float64 numpy): :func:`optimal_gamma`, :func:`population_risk`,
  :func:`optimal_risk`, :func:`optimal_risks`, :func:`noise_sensitivity`,
  :func:`best_rank`;
* data (JAX): :func:`sample_prompts`, :class:`Prompts`;
* models (JAX): :mod:`iclsim.linear.model` (``init``, ``apply``, ``effective_gamma``);
* training: :func:`train`, :func:`evaluate`.

Argument order of the oracle: the problem ``(cov, n_context)`` in this order everywhere; a
predictor to evaluate comes first (``population_risk(gamma, cov, n_context)``), a rank budget
after the problem (``optimal_gamma(cov, n_context, rank)``); noise levels are keyword-only.
"""

from iclsim.linear import model
from iclsim.linear.data import Prompts, sample_prompts
from iclsim.linear.oracle import (
    BestRank,
    RankTieError,
    RankTieWarning,
    best_rank,
    eigh_descending,
    noise_sensitivity,
    optimal_gamma,
    optimal_risk,
    optimal_risks,
    population_risk,
)
from iclsim.linear.training import LinearTrainResult, classify_runs, evaluate, train

__all__ = [
    "model",
    "Prompts",
    "sample_prompts",
    "BestRank",
    "RankTieError",
    "RankTieWarning",
    "best_rank",
    "eigh_descending",
    "noise_sensitivity",
    "optimal_gamma",
    "optimal_risk",
    "optimal_risks",
    "population_risk",
    "LinearTrainResult",
    "classify_runs",
    "evaluate",
    "train",
]
