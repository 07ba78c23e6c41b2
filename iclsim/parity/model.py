"""Two-layer multi-head attention model of setting 2 (``docs/theory/parity.md``, "Model").

Layer 1, per example and head h: softmax attention over the D bit positions,
``α_h = softmax(q_h)``, then ``φ_h(z) = cos(π k Σ_b α_hb u_b)`` with
``u_b = (1 − z_b)/2``; when α_h is uniform on block B_j, ``φ_h = χ_j`` exactly.
Layer 2, across examples, linear attention per head with readout c_h:

    ŷ = Σ_h mask_h c_h φ_h(z_q) · (1/N) Σ_i y_i φ_h(z_i).

Parameters are a dict pytree ``{"weights": {"logits": (m_max, D), "readout":
(m_max,)}, "head_mask": (m_max,)}``; only ``weights`` is trained.  Heads are padded
to ``m_max`` and masked so that every head count shares one compiled program; a
masked head contributes nothing to ŷ and gets zero gradient.

Stackable form.  :func:`prompt_tokens` lays a prompt out as the token matrix
Z ∈ R^{(N+1)×(D+1)} (rows (z_i, y_i), i ≤ N, then the query (z_q, 0)),
:func:`parity_layer` maps Z to Z + attention(Z) (both stages above, writing into
the label slot), and :func:`read_prediction` reads ŷ off the query token's
label slot; :func:`apply_stack` composes layers.  With one layer,
``read_prediction(parity_layer(params, prompt_tokens(p), k)) == apply(params, p, k)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from iclsim._validation import check_int

__all__ = [
    "ParityConfig",
    "head_mask",
    "init",
    "attention",
    "features",
    "apply_attention",
    "apply",
    "block_mass",
    "hard_attention",
    "moments",
    "population_loss",
    "prompt_tokens",
    "read_prediction",
    "attention_layer",
    "parity_layer",
    "apply_stack",
]


@dataclass(frozen=True)
class ParityConfig:
    """Static shape of a parity model.

    K : number of feature blocks (>= 1); k : parity degree = block size (>= 1);
    distractor_bits : D₀ (>= 0); m_max : number of padded heads (>= 1).
    """

    K: int
    k: int
    distractor_bits: int = 0
    m_max: int = 1

    def __post_init__(self):
        check_int("K", self.K, 1)
        check_int("k", self.k, 1)
        check_int("distractor_bits", self.distractor_bits, 0)
        check_int("m_max", self.m_max, 1)

    @property
    def D(self) -> int:
        """Number of bits, K·k + D₀."""
        return self.K * self.k + self.distractor_bits


def head_mask(heads, m_max: int):
    """Float mask of length ``m_max`` with ones in the first ``heads`` entries (may be traced)."""
    return (jnp.arange(m_max) < heads).astype(jnp.result_type(float))


def init(key, config: ParityConfig, *, heads, scale=0.1):
    """Initial parameters: logits and readout ~ N(0, scale²), padded readouts 0.

    ``heads`` (the number of active heads, 0..m_max) may be traced; the padded
    heads' readouts start at exactly zero as well as being masked.
    """
    if not isinstance(heads, jax.core.Tracer):
        check_int("heads", heads, 0, config.m_max)
    dtype = jnp.result_type(float)
    k_q, k_c = jax.random.split(key)
    mask = head_mask(heads, config.m_max)
    logits = scale * jax.random.normal(k_q, (config.m_max, config.D), dtype)
    readout = scale * jax.random.normal(k_c, (config.m_max,), dtype) * mask
    return {"weights": {"logits": logits, "readout": readout}, "head_mask": mask}


def attention(params):
    """α = softmax(logits) row-wise, shape (m_max, D)."""
    return jax.nn.softmax(params["weights"]["logits"], axis=-1)


def features(alpha, z, k):
    """φ_h(z) = cos(π k Σ_b α_hb u_b), u_b = (1 − z_b)/2: shape ``z.shape[:-1] + (m,)``."""
    u = 0.5 * (1.0 - z)
    return jnp.cos(jnp.pi * k * jnp.einsum("...d,hd->...h", u, alpha))


def apply_attention(alpha, readout, mask, prompts, k):
    """ŷ (B,) for explicit attention rows ``alpha`` (m, D), readout (m,) and mask (m,).

    ``ŷ = Σ_h mask_h c_h φ_h(z_q) (1/N) Σ_i y_i φ_h(z_i)``.
    """
    n = prompts.y.shape[-1]
    phi_ctx = features(alpha, prompts.z, k)  # (B, N, m)
    h = jnp.einsum("...n,...nh->...h", prompts.y, phi_ctx) / n
    phi_q = features(alpha, prompts.z_query, k)  # (B, m)
    c = readout * jax.lax.stop_gradient(mask)
    return jnp.einsum("h,...h,...h->...", c, phi_q, h)


def apply(params, prompts, k):
    """Prediction ŷ (B,) for a batch of :class:`~iclsim.parity.Prompts`.

    ``k`` is the parity degree (``config.k``); it cannot be read from the shapes
    (D = K·k + D₀), so it is passed explicitly.
    """
    return apply_attention(
        attention(params), params["weights"]["readout"], params["head_mask"], prompts, k
    )


def block_mass(params, config: ParityConfig):
    """Attention mass of each head on each feature block, shape (m_max, K)."""
    alpha = attention(params)
    kk = config.K * config.k
    return alpha[:, :kk].reshape(alpha.shape[0], config.K, config.k).sum(axis=-1)


def hard_attention(blocks, config: ParityConfig) -> np.ndarray:
    """(len(blocks), D) float64 rows, row h uniform (1/k) on block ``blocks[h]`` (0-based)."""
    blocks = [check_int("blocks[h]", j, 0, config.K - 1) for j in blocks]
    alpha = np.zeros((len(blocks), config.D))
    for h, j in enumerate(blocks):
        alpha[h, j * config.k : (j + 1) * config.k] = 1.0 / config.k
    return alpha


def moments(alpha, n_features, k):
    """JAX twin of :func:`iclsim.parity.oracle.feature_moments`: (A (m, K), G (m, m))."""
    w = 0.5 * jnp.pi * k * alpha
    theta = w.sum(axis=-1)
    m, d = alpha.shape
    in_block = np.zeros((n_features, d), dtype=bool)
    for j in range(n_features):
        in_block[j, j * k : (j + 1) * k] = True
    factors = jnp.where(in_block[None], jnp.sin(w)[:, None, :], jnp.cos(w)[:, None, :])
    a = jnp.cos(theta - 0.5 * jnp.pi * k)[:, None] * jnp.prod(factors, axis=-1)
    plus = jnp.prod(jnp.cos(w[:, None, :] + w[None, :, :]), axis=-1)
    minus = jnp.prod(jnp.cos(w[:, None, :] - w[None, :, :]), axis=-1)
    g = 0.5 * (
        jnp.cos(theta[:, None] + theta[None, :]) * plus
        + jnp.cos(theta[:, None] - theta[None, :]) * minus
    )
    return a, g


def population_loss(params, config: ParityConfig, pi, n_context, mu=1.0):
    """Exact population loss ((5) of ``docs/theory/parity.md``) of the masked model, in JAX.

    Differentiable:

    ``L = 1 − 2μ Σ_h c_h Σ_j π_j A_hj² + cᵀ (G ∘ M) c``,
    ``M = (1 − 1/N) μ² A diag(π) Aᵀ + G/N``, with ``c = readout ∘ head_mask`` and
    μ = (1 − 2p)(1 − 2q)^k the context signal (may be traced).  The float64
    reference is :func:`iclsim.parity.oracle.population_loss`.
    """
    n = n_context
    pi = jnp.asarray(pi)
    a, g = moments(attention(params), config.K, config.k)
    c = params["weights"]["readout"] * jax.lax.stop_gradient(params["head_mask"])
    m_mat = (1.0 - 1.0 / n) * mu**2 * (a * pi) @ a.T + g / n
    return 1.0 - 2.0 * mu * c @ (a**2 @ pi) + c @ (g * m_mat) @ c


# --------------------------------------------------------------------------------------
# Stackable layers: tokens in, tokens out
# --------------------------------------------------------------------------------------


def prompt_tokens(prompts):
    """Token matrix of a batch of prompts, shape (B, N+1, D+1).

    Row i ≤ N is the context token (z_i, y_i); the last row is the query token
    (z_q, 0).
    """
    ctx = jnp.concatenate([prompts.z, prompts.y[..., None]], axis=-1)
    q = jnp.concatenate([prompts.z_query, jnp.zeros_like(prompts.z_query[..., :1])], axis=-1)
    return jnp.concatenate([ctx, q[..., None, :]], axis=-2)


def read_prediction(tokens):
    """ŷ = the query token's label slot, ``tokens[..., N, D]``, shape (B,)."""
    return tokens[..., -1, -1]


def attention_layer(alpha, readout, mask, tokens, k):
    """The m-head layer for explicit attention rows ``alpha`` (m, D), readout and mask (m,).

    Token j = (z_j, y_j) goes to (z_j, y_j + Σ_h mask_h c_h φ_h(z_j) · h_h) with

        φ_h(z) = cos(π k Σ_b α_hb (1 − z_b)/2),  h_h = (1/N) Σ_{i ≤ N+1} y_i φ_h(z_i)

    (``docs/theory/parity.md``, "Model"): stage 1 is the within-token softmax
    attention over bit positions, stage 2 the linear attention across tokens with
    values y_i and readout c_h.  The bits pass through unchanged; every token,
    the query included, is a key and a value (the query's label slot is 0 in the
    first layer); N = ``tokens.shape[-2] − 1``.
    """
    tokens = jnp.asarray(tokens)
    n = tokens.shape[-2] - 1
    z, y = tokens[..., :-1], tokens[..., -1]
    phi = features(alpha, z, k)  # (B, N+1, m)
    h = jnp.einsum("...n,...nh->...h", y, phi) / n
    c = readout * jax.lax.stop_gradient(mask)
    update = jnp.einsum("h,...nh,...h->...n", c, phi, h)
    return tokens.at[..., -1].add(update)


def parity_layer(params, tokens, k):
    """:func:`attention_layer` with α = softmax(logits): tokens (B, N+1, D+1) → same shape.

    ``read_prediction(parity_layer(params, prompt_tokens(p), k))`` equals
    ``apply(params, p, k)``.
    """
    return attention_layer(
        attention(params), params["weights"]["readout"], params["head_mask"], tokens, k
    )


def apply_stack(layers, prompts, k):
    """ŷ (B,) of the layers (a sequence of parameter dicts) applied in order.

    One layer gives :func:`apply`.
    """
    tokens = prompt_tokens(prompts)
    for params in layers:
        tokens = parity_layer(params, tokens, k)
    return read_prediction(tokens)
