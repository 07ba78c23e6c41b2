"""Flax NNX face of the two models (optional: ``pip install 'iclsim[flax]'``).

:class:`LinearSelfAttention` (setting 1, ``docs/theory/linear.md``) and
:class:`ParityAttention` (setting 2, ``docs/theory/parity.md``) hold the weights
of one layer as ``nnx.Param`` and its padding mask as a :class:`Mask` variable
(state that ``nnx.grad`` and ``nnx.Optimizer(..., wrt=nnx.Param)`` leave alone).
Their ``__call__`` maps a token matrix to a token matrix by delegating to the pure
functions :func:`iclsim.linear.model.lsa_layer` and
:func:`iclsim.parity.model.parity_layer`, so modules stack (e.g. in
``nnx.Sequential``) and compute exactly what the pure functions compute:

* ``LinearSelfAttention``: Z ↦ Z + Z W^{KQ}ᵀ (Zᵀ Z) W^{PV}ᵀ / N, i.e.
  f(E) = E + W^{PV} E (Eᵀ W^{KQ} E)/N with tokens as rows (block and reduced
  parametrisations through their full embedding);
* ``ParityAttention``: (z_j, y_j) ↦ (z_j, y_j + Σ_h c_h φ_h(z_j) (1/N) Σ_i y_i φ_h(z_i)),
  φ_h(z) = cos(π k Σ_b softmax(q_h)_b (1 − z_b)/2).

Tokens come from ``prompt_tokens(prompts)`` of each model module and the
prediction is ``read_prediction(tokens)`` (the query token's label slot);
``module.predict(prompts)`` is the model's ``apply``.  ``module.params`` is the
parameter pytree of the pure functions and ``Module.from_params`` builds a module
from one, so the training engine's parameters and the modules interconvert.

This module imports flax; ``import iclsim`` does not.
"""

from __future__ import annotations

try:
    from flax import nnx
except ImportError as exc:  # pragma: no cover - exercised by a test with flax hidden
    raise ImportError(
        "iclsim.nn needs Flax (flax.nnx); install it with: pip install 'iclsim[flax]'"
    ) from exc

import jax.numpy as jnp

from iclsim.linear import model as lsa
from iclsim.parity import model as pm

__all__ = ["Mask", "LinearSelfAttention", "ParityAttention"]

_LSA_WEIGHTS = {"full": ("w_pv", "a", "b"), "block": ("a", "b", "u"), "reduced": ("a", "b")}


class Mask(nnx.Variable):
    """A fixed 0/1 padding mask (rank or heads): module state that is not trained."""


class LinearSelfAttention(nnx.Module):
    """One LSA layer of setting 1 as a Flax NNX module.

    ``LinearSelfAttention(config, rank=r, rngs=nnx.Rngs(0), scale=0.1)`` draws the
    weights of :func:`iclsim.linear.model.init` from ``rngs.params()``; the weight
    names (``w_pv``, ``a``, ``b``, ``u``) are those of the pure parameter dict,
    and ``rank_mask`` is a :class:`Mask`.  ``__call__(tokens)`` is
    :func:`~iclsim.linear.model.lsa_layer` (tokens (..., N+1, d+1) → same shape).
    """

    def __init__(self, config: lsa.LSAConfig, *, rank, rngs: nnx.Rngs, scale=0.1):
        self.parametrization = config.parametrization
        self._assign(lsa.init(rngs.params(), config, rank=rank, scale=scale))

    def _assign(self, params):
        kind = lsa.parametrization_of(params)
        if kind != self.parametrization:
            raise ValueError(f"expected {self.parametrization} parameters, got {kind}")
        for name in _LSA_WEIGHTS[kind]:
            setattr(self, name, nnx.Param(jnp.asarray(params["weights"][name])))
        self.rank_mask = Mask(jnp.asarray(params["rank_mask"]))

    @classmethod
    def from_params(cls, params) -> LinearSelfAttention:
        """A module holding the pure parameter dict ``params`` (any parametrisation)."""
        kind = lsa.parametrization_of(params)
        d_rows, r_max = params["weights"]["a"].shape
        d = d_rows - 1 if kind == "full" else d_rows
        module = cls(lsa.LSAConfig(d, r_max, kind), rank=0, rngs=nnx.Rngs(0))
        module._assign(params)
        return module

    @property
    def params(self):
        """The parameter pytree ``{"weights": {...}, "rank_mask": ...}`` of the pure functions."""
        names = _LSA_WEIGHTS[self.parametrization]
        weights = {name: getattr(self, name).get_value() for name in names}
        return {"weights": weights, "rank_mask": self.rank_mask.get_value()}

    def __call__(self, tokens):
        """Layer output tokens, :func:`iclsim.linear.model.lsa_layer`."""
        return lsa.lsa_layer(self.params, tokens)

    def predict(self, prompts):
        """ŷ (B,) of this layer alone, :func:`iclsim.linear.model.apply`."""
        return lsa.apply(self.params, prompts)

    def effective_gamma(self):
        """Γ of the reduced predictor, :func:`iclsim.linear.model.effective_gamma`."""
        return lsa.effective_gamma(self.params)


class ParityAttention(nnx.Module):
    """The m-head attention layer of setting 2 as a Flax NNX module.

    ``ParityAttention(config, heads=h, rngs=nnx.Rngs(0), scale=0.1)`` draws
    ``logits`` (m_max, D) and ``readout`` (m_max,) as in
    :func:`iclsim.parity.model.init`; ``head_mask`` is a :class:`Mask` and the
    parity degree ``k`` a static attribute.  ``__call__(tokens)`` is
    :func:`~iclsim.parity.model.parity_layer` (tokens (..., N+1, D+1) → same shape).
    """

    def __init__(self, config: pm.ParityConfig, *, heads, rngs: nnx.Rngs, scale=0.1):
        self.k = config.k
        self._assign(pm.init(rngs.params(), config, heads=heads, scale=scale))

    def _assign(self, params):
        self.logits = nnx.Param(jnp.asarray(params["weights"]["logits"]))
        self.readout = nnx.Param(jnp.asarray(params["weights"]["readout"]))
        self.head_mask = Mask(jnp.asarray(params["head_mask"]))

    @classmethod
    def from_params(cls, params, k: int) -> ParityAttention:
        """A module holding the pure parameter dict ``params``, parity degree ``k``."""
        m_max, d = params["weights"]["logits"].shape
        module = cls(pm.ParityConfig(K=1, k=k, distractor_bits=d - k, m_max=m_max),
                     heads=0, rngs=nnx.Rngs(0))
        module._assign(params)
        return module

    @property
    def params(self):
        """The parameter pytree ``{"weights": {...}, "head_mask": ...}`` of the pure functions."""
        return {
            "weights": {"logits": self.logits.get_value(), "readout": self.readout.get_value()},
            "head_mask": self.head_mask.get_value(),
        }

    def __call__(self, tokens):
        """Layer output tokens, :func:`iclsim.parity.model.parity_layer`."""
        return pm.parity_layer(self.params, tokens, self.k)

    def predict(self, prompts):
        """ŷ (B,) of this layer alone, :func:`iclsim.parity.model.apply`."""
        return pm.apply(self.params, prompts, self.k)
