"""A GPT-2-style decoder as pure JAX functions on pytrees, padded and masked by size.

The model reads a prompt of setting 1 as N + 1 tokens: (x_i, y_i, 0) for the context
examples and (x_q, 0, 1) for the query (the last entry flags the query token), and reads
the prediction ŷ off the last position.  Architecture (pre-LayerNorm, as GPT-2):

    h⁰ = tokens · W_emb + b_emb
    hˡ = hˡ⁻¹ + g_l · Attn_l(LN(hˡ⁻¹)),   hˡ ← hˡ + g_l · MLP_l(LN(hˡ))        (l = 1..L)
    ŷ = LN(h^L)[last] · w_out + b_out

with causal softmax multi-head attention (h heads of fixed dimension ``head_dim``, so
heads add capacity: the attention width is h · head_dim) and a GELU MLP of hidden width
``mlp_ratio`` · d_model.  There are no position embeddings: the context is an unordered
set and the query is marked by its flag.

**Sizes share one compiled program.**  Parameters have the largest shape of a sweep
(:class:`Shape`); a run's size (heads h, width d_model, layers L) enters as traced masks
(:func:`masks`):

* width: a column mask on the residual stream (padded columns stay exactly 0), and
  LayerNorm statistics over the active columns only (:func:`layer_norm`);
* MLP: a mask on the hidden units beyond ``mlp_ratio`` · d_model;
* heads: a mask on the head outputs before the output projection;
* layers: a 0/1 gate g_l on both residual branches of each layer.

Every padded parameter then has no effect on ŷ and gets an exactly zero gradient, so the
padded model is the unpadded one of that size, forward and backward (checked by
``tests/test_transformer_model.py``; :func:`crop` cuts the padded pytree down).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "Shape", "LN_EPS", "init_weights", "masks", "layer_norm", "apply", "predict",
    "prompt_tokens", "crop", "param_count",
]

#: The ε of every layer norm (GPT-2's value).
LN_EPS = 1e-5


class Shape(NamedTuple):
    """The padded (largest) shape of a program: one compile per value."""

    d: int
    """input dimension d of setting 1 (tokens have d + 2 entries)."""
    heads: int
    width: int
    layers: int
    head_dim: int = 4
    mlp_ratio: int = 4

    @property
    def token_dim(self) -> int:
        return self.d + 2

    @property
    def hidden(self) -> int:
        return self.mlp_ratio * self.width


def param_count(d, heads, width, layers, head_dim=4, mlp_ratio=4) -> int:
    """Trainable parameters of the unpadded model of one size (biases and LayerNorms included)."""
    p, a, f = d + 2, heads * head_dim, mlp_ratio * width
    per_layer = (2 * width                      # LN1
                 + 3 * (width * a + a)          # q, k, v with biases
                 + a * width + width            # output projection
                 + 2 * width                    # LN2
                 + width * f + f + f * width + width)  # MLP
    return int(p * width + width + layers * per_layer + 2 * width + width + 1)


def init_weights(key, shape: Shape, heads, width, layers, init_scale=1.0, dtype=None):
    """Padded weights for a model of size (heads, width, layers) (may be traced).

    Every matrix is N(0, (init_scale)² / fan_in) with the fan-in of the *active* size;
    the two residual-branch output projections are further scaled by 1/√(2L) (GPT-2);
    biases start at 0, LayerNorm gains at 1.  Entries outside the active size are drawn
    too but never matter (they are masked).
    """
    dtype = dtype or jnp.result_type(float)
    s = shape
    a_act = heads * s.head_dim
    f_act = s.mlp_ratio * width
    ks = jax.random.split(key, 8)
    scale = jnp.asarray(init_scale, dtype)
    width = jnp.asarray(width, dtype)
    depth = jnp.sqrt(2.0 * jnp.maximum(jnp.asarray(layers, dtype), 1.0))

    def normal(k, shp, fan_in, extra=1.0):
        return (jax.random.normal(k, shp, dtype) * scale * extra
                / jnp.sqrt(jnp.asarray(fan_in, dtype)))

    L, D, H, E, F = s.layers, s.width, s.heads, s.head_dim, s.hidden
    zeros = lambda *shp: jnp.zeros(shp, dtype)  # noqa: E731
    return {
        "embed": {"w": normal(ks[0], (s.token_dim, D), s.token_dim), "b": zeros(D)},
        "layers": {
            "ln1_g": jnp.ones((L, D), dtype), "ln1_b": zeros(L, D),
            "wq": normal(ks[1], (L, D, H, E), width), "bq": zeros(L, H, E),
            "wk": normal(ks[2], (L, D, H, E), width), "bk": zeros(L, H, E),
            "wv": normal(ks[3], (L, D, H, E), width), "bv": zeros(L, H, E),
            "wo": normal(ks[4], (L, H, E, D), a_act, 1.0 / depth), "bo": zeros(L, D),
            "ln2_g": jnp.ones((L, D), dtype), "ln2_b": zeros(L, D),
            "w1": normal(ks[5], (L, D, F), width), "b1": zeros(L, F),
            "w2": normal(ks[6], (L, F, D), f_act, 1.0 / depth), "b2": zeros(L, D),
        },
        "final": {"ln_g": jnp.ones((D,), dtype), "ln_b": zeros(D),
                  "w": normal(ks[7], (D,), width), "b": zeros()},
    }


def masks(shape: Shape, heads, width, layers, dtype=None) -> dict:
    """0/1 masks of one size (traced values allowed): columns, MLP hidden units, heads, layers."""
    dtype = dtype or jnp.result_type(float)
    s = shape
    return {
        "col": (jnp.arange(s.width) < width).astype(dtype),
        "hid": (jnp.arange(s.hidden) < s.mlp_ratio * width).astype(dtype),
        "head": (jnp.arange(s.heads) < heads).astype(dtype),
        "layer": (jnp.arange(s.layers) < layers).astype(dtype),
    }


def layer_norm(h, gain, bias, col):
    """LayerNorm over the active columns ``col`` only; inactive columns come out 0."""
    k = jnp.sum(col)
    mean = jnp.sum(h * col, axis=-1, keepdims=True) / k
    centred = (h - mean) * col
    var = jnp.sum(centred * centred, axis=-1, keepdims=True) / k
    return (centred * jax.lax.rsqrt(var + LN_EPS) * gain + bias) * col


def _attention(h, p, m, head_dim):
    """Causal softmax multi-head attention of one layer on (T, D) → (T, D)."""
    q = jnp.einsum("td,dhe->the", h, p["wq"]) + p["bq"]
    k = jnp.einsum("td,dhe->the", h, p["wk"]) + p["bk"]
    v = jnp.einsum("td,dhe->the", h, p["wv"]) + p["bv"]
    logits = jnp.einsum("the,she->hts", q, k) / math.sqrt(head_dim)
    t = h.shape[0]
    causal = jnp.tril(jnp.ones((t, t), bool))
    logits = jnp.where(causal, logits, -jnp.inf)
    att = jax.nn.softmax(logits, axis=-1)
    o = jnp.einsum("hts,she->the", att, v) * m["head"][:, None]
    return (jnp.einsum("the,hed->td", o, p["wo"]) + p["bo"]) * m["col"]


def _mlp(h, p, m):
    a = jax.nn.gelu(h @ p["w1"] + p["b1"]) * m["hid"]
    return (a @ p["w2"] + p["b2"]) * m["col"]


def apply(weights, m, tokens, head_dim: int):
    """ŷ for one prompt: ``tokens`` (T, d + 2) → scalar read off the last position."""
    col = m["col"]
    h = (tokens @ weights["embed"]["w"] + weights["embed"]["b"]) * col
    layers = weights["layers"]
    for l in range(layers["wq"].shape[0]):
        p = jax.tree_util.tree_map(lambda a: a[l], layers)
        gate = m["layer"][l]
        h = h + gate * _attention(layer_norm(h, p["ln1_g"], p["ln1_b"], col), p, m, head_dim)
        h = h + gate * _mlp(layer_norm(h, p["ln2_g"], p["ln2_b"], col), p, m)
    f = weights["final"]
    last = layer_norm(h[-1], f["ln_g"], f["ln_b"], col)
    return last @ f["w"] + f["b"]


def prompt_tokens(x, y, x_query):
    """Tokens of a batch of prompts: x (B, N, d), y (B, N), x_query (B, d) → (B, N + 1, d + 2)."""
    b, n, d = x.shape
    ctx = jnp.concatenate([x, y[..., None], jnp.zeros((b, n, 1), x.dtype)], axis=-1)
    q = jnp.concatenate([x_query, jnp.zeros((b, 1), x.dtype), jnp.ones((b, 1), x.dtype)], axis=-1)
    return jnp.concatenate([ctx, q[:, None]], axis=1)


def predict(weights, m, x, y, x_query, head_dim: int):
    """ŷ for a batch of prompts (B,)."""
    tokens = prompt_tokens(x, y, x_query)
    return jax.vmap(lambda t: apply(weights, m, t, head_dim))(tokens)


def crop(weights, heads: int, width: int, layers: int, mlp_ratio: int = 4):
    """The unpadded weights of size (heads, width, layers) cut out of a padded pytree."""
    f = mlp_ratio * width
    L, D, H, F = layers, width, heads, f
    lw = weights["layers"]
    return {
        "embed": {"w": weights["embed"]["w"][:, :D], "b": weights["embed"]["b"][:D]},
        "layers": {
            "ln1_g": lw["ln1_g"][:L, :D], "ln1_b": lw["ln1_b"][:L, :D],
            "wq": lw["wq"][:L, :D, :H], "bq": lw["bq"][:L, :H],
            "wk": lw["wk"][:L, :D, :H], "bk": lw["bk"][:L, :H],
            "wv": lw["wv"][:L, :D, :H], "bv": lw["bv"][:L, :H],
            "wo": lw["wo"][:L, :H, :, :D], "bo": lw["bo"][:L, :D],
            "ln2_g": lw["ln2_g"][:L, :D], "ln2_b": lw["ln2_b"][:L, :D],
            "w1": lw["w1"][:L, :D, :F], "b1": lw["b1"][:L, :F],
            "w2": lw["w2"][:L, :F, :D], "b2": lw["b2"][:L, :D],
        },
        "final": {"ln_g": weights["final"]["ln_g"][:D], "ln_b": weights["final"]["ln_b"][:D],
                  "w": weights["final"]["w"][:D], "b": weights["final"]["b"]},
    }
