"""Setting 2: in-context sparse parity with a two-layer multi-head attention model.

Theory: ``docs/theory/parity.md``.  Public API:

* oracle (exact, float64 numpy): :func:`optimal_readout`, :func:`optimal_risk`,
  :func:`optimal_risks`, :func:`fixed_task_risk`, :func:`best_heads`,
  :func:`population_loss`, :func:`signal`;
* data (JAX): :func:`sample_prompts`, :class:`Prompts`;
* model (JAX): :mod:`iclsim.parity.model` (``ParityConfig``, ``init``, ``apply``,
  ``attention``, ``block_mass``, ``hard_attention``, ``population_loss``);
* training: :func:`train`, :func:`evaluate`, :func:`classify_runs`;
* sweeps: :class:`ParitySweepConfig` and the engine setting :data:`PARITY`
  (``iclsim run sweeps/parity_*.toml``, or
  ``iclsim.engine.sweep.run_sweep(cfg, PARITY)``).
"""

from iclsim.parity import model
from iclsim.parity.data import Prompts, sample_prompts
from iclsim.parity.oracle import (
    BestHeads,
    best_heads,
    fixed_task_risk,
    optimal_readout,
    optimal_risk,
    optimal_risks,
    population_loss,
    signal,
    thresholds,
)
from iclsim.parity.sweep import PARITY, ParitySweepConfig
from iclsim.parity.training import ParityTrainResult, classify_runs, evaluate, train

__all__ = [
    "model",
    "Prompts",
    "sample_prompts",
    "BestHeads",
    "best_heads",
    "fixed_task_risk",
    "optimal_readout",
    "optimal_risk",
    "optimal_risks",
    "population_loss",
    "signal",
    "thresholds",
    "PARITY",
    "ParitySweepConfig",
    "ParityTrainResult",
    "classify_runs",
    "evaluate",
    "train",
]
