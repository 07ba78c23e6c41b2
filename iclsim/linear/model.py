"""Linear self-attention (LSA) models of setting 1 (``docs/theory/linear.md``, "Model").

Three parametrisations of one layer, one head, with a key-query matrix of
rank at most r, padded to ``r_max`` columns and masked so that every rank shares
one compiled program:

``"full"``
    f(E) = E + W^{PV} E (Eᵀ W^{KQ} E) / N,  ŷ = f(E)[d, N],
    W^{KQ} = (A ∘ mask) Bᵀ with A, B ∈ R^{(d+1)×r_max}; W^{PV} ∈ R^{(d+1)×(d+1)}.
``"block"``
    W^{PV} = [[0, 0], [0, u]], W^{KQ} = [[W₁₁, 0], [0, 0]], W₁₁ = (A ∘ mask) Bᵀ,
    A, B ∈ R^{d×r_max}; exactly ŷ = x_qᵀ Γ h with Γ = u W₁₁ᵀ.
``"reduced"``
    ŷ = x_qᵀ Γ h with Γ = (A ∘ mask) Bᵀ, h = (1/N) Σ_i y_i x_i.

Parameters are a dict pytree ``{"weights": {...}, "rank_mask": (r_max,)}``; only
``weights`` is trained, and the parametrisation is read from the weight names.
Every model exposes :func:`effective_gamma`, the Γ of the reduced predictor it
implements, to be compared with :func:`iclsim.linear.optimal_gamma`.

Stackable form.  :func:`prompt_tokens` lays a prompt out as the token matrix
Z ∈ R^{(N+1)×(d+1)} (rows z_i = (x_i, y_i), i ≤ N, then the query (x_q, 0)),
:func:`lsa_layer` maps Z to the layer output f(Z) of the same shape (residual
form, Z + attention(Z)), and :func:`read_prediction` reads ŷ off the query
token's y-slot; :func:`apply_stack` composes layers.  With one layer,
``read_prediction(lsa_layer(params, prompt_tokens(p))) == apply(params, p)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from iclsim._validation import check_int

__all__ = [
    "PARAMETRIZATIONS",
    "INITS",
    "LSAConfig",
    "init",
    "apply",
    "apply_full_reference",
    "effective_gamma",
    "parametrization_of",
    "rank_mask",
    "to_full",
    "reduced_population_risk",
    "prompt_tokens",
    "read_prediction",
    "lsa_layer",
    "lsa_layer_full",
    "apply_stack",
]

PARAMETRIZATIONS = ("full", "block", "reduced")
INITS = ("random", "block")


@dataclass(frozen=True)
class LSAConfig:
    """Static shape of an LSA model.

    d : input dimension (>= 1); r_max : number of padded rank columns (>= 1);
    parametrization : one of ``PARAMETRIZATIONS``; init : ``"random"`` (all
    weights N(0, scale²)) or ``"block"`` (full LSA only: block-structured
    weights, W^{PV} = e_d e_dᵀ and A, B random on the x-rows, zero on the y-row).
    """

    d: int
    r_max: int
    parametrization: str = "reduced"
    init: str = "random"

    def __post_init__(self):
        check_int("d", self.d, 1)
        check_int("r_max", self.r_max, 1)
        if self.parametrization not in PARAMETRIZATIONS:
            raise ValueError(
                f"parametrization must be one of {PARAMETRIZATIONS}, got {self.parametrization!r}"
            )
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.init == "block" and self.parametrization != "full":
            raise ValueError(
                "init='block' applies to parametrization='full' only "
                "(the block and reduced parametrisations are block-structured already)"
            )


def rank_mask(rank, r_max: int):
    """Float mask of length ``r_max`` with ones in the first ``rank`` entries (rank may be traced)."""
    return (jnp.arange(r_max) < rank).astype(jnp.result_type(float))


def init(key, config: LSAConfig, *, rank, scale=0.1):
    """Initial parameters for ``config`` at the given (possibly traced) rank and scale.

    Random init: every weight entry ~ N(0, scale²), except the block
    parametrisation's scalar u, which starts at 1 (A and B carry the scale).
    Block init (full LSA): W^{PV} = e_d e_dᵀ, A and B ~ N(0, scale²) on their
    first d rows and 0 on the last (y) row, so the model starts in the block form
    of ``docs/theory/linear.md`` with Γ = (A Bᵀ)ᵀ restricted to x.
    """
    d, r = config.d, config.r_max
    dtype = jnp.result_type(float)
    k_pv, k_a, k_b = jax.random.split(key, 3)
    mask = rank_mask(rank, r)
    if config.parametrization == "full":
        a = scale * jax.random.normal(k_a, (d + 1, r), dtype)
        b = scale * jax.random.normal(k_b, (d + 1, r), dtype)
        if config.init == "block":
            w_pv = jnp.zeros((d + 1, d + 1), dtype).at[d, d].set(1.0)
            a = a.at[d].set(0.0)
            b = b.at[d].set(0.0)
        else:
            w_pv = scale * jax.random.normal(k_pv, (d + 1, d + 1), dtype)
        weights = {"w_pv": w_pv, "a": a, "b": b}
    else:
        weights = {
            "a": scale * jax.random.normal(k_a, (d, r), dtype),
            "b": scale * jax.random.normal(k_b, (d, r), dtype),
        }
        if config.parametrization == "block":
            weights["u"] = jnp.ones((), dtype)
    # Padded columns start at exactly zero as well as being masked.
    weights["a"] = weights["a"] * mask
    weights["b"] = weights["b"] * mask
    return {"weights": weights, "rank_mask": mask}


def parametrization_of(params) -> str:
    """``"full"``, ``"block"`` or ``"reduced"``, read from the weight names."""
    w = params["weights"]
    if "w_pv" in w:
        return "full"
    if "u" in w:
        return "block"
    return "reduced"


def _low_rank(params):
    w = params["weights"]
    mask = jax.lax.stop_gradient(params["rank_mask"])
    return (w["a"] * mask) @ w["b"].T


def effective_gamma(params):
    """Γ of the reduced predictor ``ŷ = x_qᵀ Γ h`` that the model implements.

    reduced: Γ = (A∘m) Bᵀ.  block: Γ = u W₁₁ᵀ.  full: the coefficient of the part
    of ŷ that is bilinear in (x_q, h),

    .. math:: Γ = v_y K_{xx}ᵀ + K_{yx}ᵀ v_xᵀ,

    with v = W^{PV}[d, :] = (v_x, v_y) and K = W^{KQ} split into its
    x-block K_xx = K[:d, :d] and y-row K_yx = K[d, :d].  The full LSA's other
    terms (not of the reduced form) vanish at block-structured weights.  The
    spurious rank-1 minimum of ``docs/theory/linear.md`` is ``v_y ≈ 0`` with Γ = K_yxᵀ v_xᵀ.
    """
    kind = parametrization_of(params)
    w = params["weights"]
    if kind == "reduced":
        return _low_rank(params)
    if kind == "block":
        return w["u"] * _low_rank(params).T
    d = w["w_pv"].shape[0] - 1
    kq = _low_rank(params)
    v = w["w_pv"][d]
    return v[d] * kq[:d, :d].T + jnp.outer(kq[d, :d], v[:d])


def _context_average(prompts):
    """h = (1/N) Σ_i y_i x_i, shape (B, d)."""
    n = prompts.y.shape[-1]
    return jnp.einsum("...n,...nd->...d", prompts.y, prompts.x) / n


def apply(params, prompts):
    """Prediction ŷ (B,) of the model for a batch of :class:`~iclsim.linear.Prompts`."""
    kind = parametrization_of(params)
    if kind in ("reduced", "block"):
        gamma = effective_gamma(params)
        h = _context_average(prompts)
        return jnp.einsum("...d,de,...e->...", prompts.x_query, gamma, h)
    w = params["weights"]
    d = w["w_pv"].shape[0] - 1
    n = prompts.y.shape[-1]
    # Tokens e_j = (x_j, y_j), query e_q = (x_q, 0); Z has shape (B, N+1, d+1).
    ctx = jnp.concatenate([prompts.x, prompts.y[..., None]], axis=-1)
    e_q = jnp.concatenate([prompts.x_query, jnp.zeros_like(prompts.x_query[..., :1])], axis=-1)
    z = jnp.concatenate([ctx, e_q[..., None, :]], axis=-2)
    kq = _low_rank(params)
    # ŷ = E[d, N] + (1/N) v · Σ_j e_j (e_jᵀ W^{KQ} e_q), with E[d, N] = 0.
    k = jnp.einsum("ij,...j->...i", kq, e_q)
    s = jnp.einsum("...ni,...i->...n", z, k)
    mixed = jnp.einsum("...n,...ni->...i", s, z)
    return jnp.einsum("i,...i->...", w["w_pv"][d], mixed) / n


def apply_gram(params, gram, x_query, n_context):
    """Prediction ŷ of any parametrisation from the context Gram G = Σ_{i≤N} z_i z_iᵀ.

    z_i = (x_i, y_i) and the query token e_q = (x_q, 0).  The full LSA attends over the
    N context tokens and the query (no causal mask), so
    ŷ = (1/N) v ᵀ (G + e_q e_qᵀ) W^{KQ} e_q with v the last row of W^{PV}
    (``docs/theory/linear.md``, the full layer); since e_q's last entry is 0 this is
    what :func:`apply` computes from the tokens.  The reduced and block
    parametrisations read h = G[:d, d] / N.  ``gram`` (B, d+1, d+1), ``x_query`` (B, d).
    """
    kind = parametrization_of(params)
    d = x_query.shape[-1]
    if kind in ("reduced", "block"):
        gamma = effective_gamma(params)
        h = gram[..., :d, d] / n_context
        return jnp.einsum("...d,de,...e->...", x_query, gamma, h)
    w = params["weights"]
    e_q = jnp.concatenate([x_query, jnp.zeros_like(x_query[..., :1])], axis=-1)
    k = jnp.einsum("ij,...j->...i", _low_rank(params), e_q)
    mixed = jnp.einsum("...ij,...j->...i", gram, k) + e_q * jnp.einsum("...i,...i->...", e_q,
                                                                        k)[..., None]
    return jnp.einsum("i,...i->...", w["w_pv"][d], mixed) / n_context


def apply_full_reference(w_pv, w_kq, prompts):
    """The full LSA of ``docs/theory/linear.md`` written literally.

    Builds E and f(E) = E + W^{PV} E (Eᵀ W^{KQ} E)/N and returns f(E)[d, N].

    O(N²) reference implementation used by the tests; ``w_kq`` is the full
    (d+1)×(d+1) key-query matrix.
    """
    n = prompts.y.shape[-1]
    ctx = jnp.concatenate([prompts.x, prompts.y[..., None]], axis=-1)
    e_q = jnp.concatenate([prompts.x_query, jnp.zeros_like(prompts.x_query[..., :1])], axis=-1)
    emb = jnp.swapaxes(jnp.concatenate([ctx, e_q[..., None, :]], axis=-2), -1, -2)
    attn = jnp.swapaxes(emb, -1, -2) @ w_kq @ emb
    out = emb + w_pv @ emb @ attn / n
    return out[..., -1, -1]


def to_full(params):
    """Embed block or reduced parameters into the full LSA (same predictions).

    Reduced Γ = A Bᵀ: W^{PV} = e_d e_dᵀ, W^{KQ} = [[Γᵀ, 0], [0, 0]].
    Block (u, W₁₁ = A Bᵀ): W^{PV} = u e_d e_dᵀ, W^{KQ} = [[W₁₁, 0], [0, 0]].
    """
    kind = parametrization_of(params)
    if kind == "full":
        return params
    w = params["weights"]
    d, r = w["a"].shape
    pad = jnp.zeros((1, r), w["a"].dtype)
    u = w.get("u", jnp.ones((), w["a"].dtype))
    first, second = (w["a"], w["b"]) if kind == "block" else (w["b"], w["a"])
    # For reduced, W^{KQ}_xx = Γᵀ = B Aᵀ; the mask acts on the A factor, so move it.
    mask = params["rank_mask"]
    w_pv = jnp.zeros((d + 1, d + 1), w["a"].dtype).at[d, d].set(u)
    a_full = jnp.concatenate([first * mask, pad], axis=0)
    b_full = jnp.concatenate([second * mask, pad], axis=0)
    return {"weights": {"w_pv": w_pv, "a": a_full, "b": b_full}, "rank_mask": mask}


def reduced_population_risk(gamma, cov, n_context, label_noise=0.0, input_noise=0.0):
    """Exact risk of the reduced predictor in JAX (the population-mode objective).

    R(Γ) = t − 2 tr(ΛΓΛ) + ((N+1)/N) tr(Γᵀ Λ Γ Λ²) + ((t+σ²)/N) tr(ΓᵀΛΓ(Λ + σ_x² I))
    (``docs/theory/linear.md``, "Population risk"; σ², σ_x² the context noise).
    Written independently of the numpy oracle, which the tests compare it against.
    """
    n = n_context
    t = jnp.trace(cov)
    p = gamma.T @ cov @ gamma
    lam2 = cov @ cov
    return (
        t
        - 2.0 * jnp.sum(cov * (gamma @ cov).T)
        + (n + 1.0) / n * jnp.sum(p * lam2.T)
        + (t + label_noise) / n * (jnp.sum(p * cov.T) + input_noise * jnp.trace(p))
    )


# --------------------------------------------------------------------------------------
# Stackable layers: tokens in, tokens out
# --------------------------------------------------------------------------------------


def prompt_tokens(prompts):
    """Token matrix Z of a batch of prompts, shape (B, N+1, d+1).

    Row i ≤ N is the context token z_i = (x_i, y_i); the last row is the query
    token (x_q, 0).  Z is the transpose of the embedding E of
    ``docs/theory/linear.md`` (tokens are rows here, columns there).
    """
    ctx = jnp.concatenate([prompts.x, prompts.y[..., None]], axis=-1)
    e_q = jnp.concatenate([prompts.x_query, jnp.zeros_like(prompts.x_query[..., :1])], axis=-1)
    return jnp.concatenate([ctx, e_q[..., None, :]], axis=-2)


def read_prediction(tokens):
    """ŷ = the query token's y-slot, ``tokens[..., N, d]`` (= f(E)[d, N]), shape (B,)."""
    return tokens[..., -1, -1]


def lsa_layer_full(w_pv, w_kq, tokens):
    """One full LSA layer on explicit (d+1)×(d+1) matrices, in residual form.

    With tokens as rows (Z = Eᵀ) the layer f(E) = E + W^{PV} E (Eᵀ W^{KQ} E)/N of
    ``docs/theory/linear.md`` reads, token by token,

        f(z)_j = z_j + (1/N) Σ_{i ≤ N+1} (z_iᵀ W^{KQ} z_j) W^{PV} z_i,

    i.e. ``Z + Z W^{KQ}ᵀ (Zᵀ Z) W^{PV}ᵀ / N``, computed in O(N d²).  Every token,
    the query included, is a key and a value (the query's y-slot is 0 in the
    first layer); N = ``tokens.shape[-2] − 1`` is the number of context tokens.
    """
    n = tokens.shape[-2] - 1
    gram = jnp.einsum("...ni,...nj->...ij", tokens, tokens)
    return tokens + tokens @ w_kq.T @ gram @ w_pv.T / n


def lsa_layer(params, tokens):
    """One LSA layer of any parametrisation: token matrix (B, N+1, d+1) → same shape.

    full: :func:`lsa_layer_full` with W^{PV} and W^{KQ} = (A ∘ mask) Bᵀ.
    block and reduced: the full layer at their embedding (:func:`to_full`), which
    only moves the y-slots,

        f(z)_j = z_j + (0, x_jᵀ Γ h),  h = (1/N) Σ_{i ≤ N+1} y_i x_i,

    with Γ = :func:`effective_gamma`.  For any parametrisation,
    ``read_prediction(lsa_layer(params, prompt_tokens(p)))`` equals
    ``apply(params, p)`` (``docs/theory/linear.md``, "Model").
    """
    tokens = jnp.asarray(tokens)
    kind = parametrization_of(params)
    if kind == "full":
        return lsa_layer_full(params["weights"]["w_pv"], _low_rank(params), tokens)
    n = tokens.shape[-2] - 1
    x, y = tokens[..., :-1], tokens[..., -1]
    h = jnp.einsum("...n,...nd->...d", y, x) / n
    update = jnp.einsum("...nd,de,...e->...n", x, effective_gamma(params), h)
    return tokens.at[..., -1].add(update)


def apply_stack(layers, prompts):
    """ŷ (B,) of the layers applied in order to the prompt tokens.

    ``layers`` is a sequence of parameter dicts (any mix of parametrisations of
    one d); one layer gives :func:`apply`.
    """
    tokens = prompt_tokens(prompts)
    for params in layers:
        tokens = lsa_layer(params, tokens)
    return read_prediction(tokens)
