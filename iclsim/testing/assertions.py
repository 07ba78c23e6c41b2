"""Assertions that check trained weights against iclsim's closed-form optima.

Theory: ``docs/theory/linear.md`` (setting 1, Theorem A) and ``docs/theory/parity.md``
(setting 2, Theorem C); guide: ``docs/testing.md``.

Everything here is float64 numpy built on the oracles :mod:`iclsim.linear.oracle` and
:mod:`iclsim.parity.oracle`; it never trains or samples.  A failed check raises
``AssertionError`` whose message says which eigen-direction (setting 1) or which head
(setting 2) is off, by how much and against what tolerance.  Wrong arguments (shapes,
ranges) raise ``ValueError``.

Numbering.  Setting 1: *direction i* is the eigenvector u_i of the i-th largest eigenvalue
λ_i of Λ, 1-based as on the theory page (column i−1 of ``U`` from
:func:`iclsim.linear.oracle.eigh_descending`).  Setting 2: heads and blocks are 0-based
array indices, as everywhere in :mod:`iclsim.parity` (block j is feature j+1 of the
theory page).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from iclsim._validation import check_covariance
from iclsim.linear import oracle as lin
from iclsim.parity import oracle as par

__all__ = [
    "lsa_gamma",
    "excess_risk",
    "assert_lsa_optimal",
    "assert_parity_optimal",
    "assert_risk_close",
]

#: How many failing directions or heads a message lists before summarising the rest.
_MAX_LINES = 8


def _fmt(x) -> str:
    return f"{float(x):.6g}"


def _signed(x) -> str:
    return f"{float(x):+.4g}"


def _percent(err, ref, name) -> str:
    return f"{100.0 * err / ref:+.3g} % of {name}" if ref != 0 else f"{name} is 0"


def _fail(header: str, lines: list[str], notes: list[str]):
    shown = lines[:_MAX_LINES]
    if len(lines) > _MAX_LINES:
        shown.append(f"… and {len(lines) - _MAX_LINES} more")
    text = header + "\n" + "\n".join(f"  - {line}" for line in shown)
    if notes:
        text += "\n" + "\n".join(f"  note: {note}" for note in notes)
    raise AssertionError(text)


# --------------------------------------------------------------------------------------
# Setting 1
# --------------------------------------------------------------------------------------


def _np(x) -> np.ndarray:
    return np.asarray(x, dtype=float)


def _lsa_parts(params):
    """(kind, Γ float64, rank_mask or None, extra-term sizes or None) of an iclsim LSA pytree.

    Mirrors :func:`iclsim.linear.model.effective_gamma` in float64 numpy (the weights of a
    float32 model are converted first, so that no precision is lost on top of theirs).
    """
    w = params["weights"]
    mask = _np(params["rank_mask"]) if "rank_mask" in params else None
    a = _np(w["a"])
    low = (a * mask if mask is not None else a) @ _np(w["b"]).T
    if "w_pv" in w:
        w_pv = _np(w["w_pv"])
        d = w_pv.shape[0] - 1
        v = w_pv[d]
        v_x, v_y = v[:d], v[d]
        k_xx, k_yx = low[:d, :d], low[d, :d]
        gamma = v_y * k_xx.T + np.outer(k_yx, v_x)
        extra = (np.linalg.norm(v_x) * np.linalg.norm(k_xx), abs(v_y) * np.linalg.norm(k_yx),
                 abs(v_y))
        return "full", gamma, mask, extra
    if "u" in w:
        return "block", float(_np(w["u"])) * low.T, mask, None
    return "reduced", low, mask, None


def lsa_gamma(gamma_or_params) -> np.ndarray:
    """The effective Γ of ``ŷ = x_qᵀ Γ h`` as a float64 (d, d) numpy array.

    Accepts a (d, d) array (numpy, JAX, anything ``np.asarray`` reads) or one of
    iclsim's LSA parameter pytrees ``{"weights": {...}, "rank_mask": ...}``
    (:mod:`iclsim.linear.model`): reduced Γ = (A∘m) Bᵀ, block Γ = u W₁₁ᵀ, full
    Γ = v_y K_xxᵀ + k_yxᵀ v_xᵀ (the label-odd part, ``docs/theory/linear.md``, Model),
    computed in float64 like :func:`iclsim.linear.model.effective_gamma`.
    """
    if isinstance(gamma_or_params, Mapping):
        if "weights" not in gamma_or_params:
            raise ValueError(
                "expected a (d, d) Γ or an iclsim LSA parameter pytree with a 'weights' entry, "
                f"got a mapping with keys {sorted(gamma_or_params)}"
            )
        return _lsa_parts(gamma_or_params)[1]
    gamma = _np(gamma_or_params)
    if gamma.ndim != 2 or gamma.shape[0] != gamma.shape[1]:
        raise ValueError(f"Γ must be a square (d, d) matrix, got shape {gamma.shape}")
    return gamma


def _cov(cov) -> np.ndarray:
    """Λ as float64, symmetrised when it is symmetric to float32 rounding (a float32 model's Λ)."""
    arr = np.asarray(cov, dtype=float)
    if arr.ndim == 2 and arr.shape[0] == arr.shape[1] and np.all(np.isfinite(arr)):
        if np.max(np.abs(arr - arr.T), initial=0.0) <= 1e-6 * np.max(np.abs(arr), initial=0.0):
            arr = 0.5 * (arr + arr.T)
    return check_covariance(arr)


def _check_gamma_shape(gamma, cov):
    d = cov.shape[0]
    if gamma.shape != (d, d):
        raise ValueError(f"Γ has shape {gamma.shape} but cov is ({d}, {d})")


def excess_risk(gamma_or_params, cov, n_context, rank, *, label_noise=0.0, input_noise=0.0,
                pretrain_label_noise=0.0) -> float:
    """``R(Γ) − R_r``: risk of Γ above that of the rank-r optimum, exact (float64, no sampling).

    .. math::
        R(Γ) = t − 2\\,\\mathrm{tr}(ΛΓΛ) + \\tfrac{N+1}{N}\\mathrm{tr}(ΛPΛ)
               + \\tfrac{t+σ^2}{N}\\mathrm{tr}(P(Λ + σ_x^2 I)),\\qquad P = ΓᵀΛΓ,

    ((R_noisy) of ``docs/theory/linear.md``) at evaluation noise σ² = ``label_noise``,
    σ_x² = ``input_noise``, and R_r is the same risk of the optimum Γ_r pretrained with
    context label noise σ₀² = ``pretrain_label_noise`` ((B) of Theorem B; L_r of Theorem A
    when all three are 0):

    .. math:: R_r = t + \\sum_{i \\le r}\\big[γ_i^2 λ_i (\\tfrac{N+1}{N} λ_i^2
              + \\tfrac{t+σ^2}{N}(λ_i + σ_x^2)) − 2 γ_i λ_i^2\\big],\\quad
              γ_i = \\frac{N}{(N+1)λ_i + t + σ_0^2}.

    When σ² = σ₀² and σ_x² = 0, Γ_r minimises the evaluated risk over rank ≤ r
    (Theorem A, B(d)), so the excess is >= 0 for every Γ of rank <= r, and 0 exactly at
    Γ_r; otherwise it can be negative.  ``gamma_or_params`` is what :func:`lsa_gamma`
    accepts (for the full parametrisation this is the risk of Γ_eff, a lower bound on the
    layer's risk).
    """
    gamma = lsa_gamma(gamma_or_params)
    cov = _cov(cov)
    _check_gamma_shape(gamma, cov)
    risk = lin.population_risk(gamma, cov, n_context, label_noise=label_noise,
                               input_noise=input_noise)
    best = lin.optimal_risk(cov, n_context, rank, label_noise=label_noise,
                            input_noise=input_noise, pretrain_label_noise=pretrain_label_noise)
    return float(risk - best)


def _tie_group(lam, rank):
    """0-based indices of the eigenvalues tied with λ_r across the rank boundary, or None."""
    d = lam.shape[0]
    if not 0 < rank < d or lam[rank - 1] - lam[rank] > lin.TIE_RTOL * lam[rank - 1]:
        return None
    ref = lam[rank - 1]
    return np.flatnonzero(np.abs(lam - ref) <= lin.TIE_RTOL * ref)


def assert_lsa_optimal(gamma_or_params, cov, n_context, rank, *, rtol=1e-4, atol=1e-8,
                       label_noise=0.0, input_noise=0.0, pretrain_label_noise=0.0):
    """Assert that Γ is the rank-r optimum Γ_r of Theorem A and has its risk.

    Theorem A (``docs/theory/linear.md#theorem-a``), with pretraining label noise σ₀²
    (Theorem B(d)):

    .. math:: Γ_r = U\\,\\mathrm{diag}(γ_1, …, γ_r, 0, …, 0)\\,Uᵀ,\\qquad
              γ_i = \\frac{N}{(N+1)λ_i + t + σ_0^2}.

    Checks, in the eigenbasis of Λ (``G = Uᵀ Γ U``):

    * every entry of ``G − diag(γ)`` is within ``atol + rtol·‖Γ_r‖₂`` (``‖Γ_r‖₂`` is the
      largest γ_i, i <= r): kept directions i <= r must carry γ_i, dropped directions
      must be 0 and no two directions may be coupled;
    * the risk R(Γ) at evaluation noise (``label_noise`` σ², ``input_noise`` σ_x²) is
      within ``atol + rtol·R_r`` of the optimum's R_r (see :func:`excess_risk`);
    * for iclsim parameter pytrees: the rank mask has ``rank`` active columns, and for the
      full parametrisation the terms outside the reduced form vanish,
      ``‖v_x‖·‖K_xx‖`` and ``|v_y|·‖k_yx‖`` within the Γ tolerance (otherwise the layer's
      risk is R(Γ_eff) plus their contribution, Theorem A's "the full LSA layer cannot
      do better").

    When λ_r == λ_{r+1} (to the oracle's ``TIE_RTOL``) the optimum is not unique: on the
    tied eigenspace E (of dimension m, s of its directions among the top r) any Γ equal to
    γ on an s-dimensional subspace of E and 0 on the rest is optimal.  The check then
    accepts every optimum (the block of G on E must be symmetric with eigenvalues s × γ
    and (m − s) × 0) and says so in its message.

    Parameters
    ----------
    gamma_or_params : (d, d) array or iclsim LSA parameter pytree
        See :func:`lsa_gamma`.
    cov : (d, d) array
        Symmetric positive-definite Λ.
    n_context : int >= 1
        N.
    rank : int in [0, d]
        r.
    rtol, atol : float
        Tolerances (a model trained on fresh prompts needs rtol of a few percent).
    label_noise, input_noise : float >= 0
        σ², σ_x² of the evaluation context, for the risk check.
    pretrain_label_noise : float >= 0
        σ₀² the model was trained with; sets γ_i.

    Raises
    ------
    AssertionError
        Naming each direction that is off: its eigenvalue, the value found, the value
        expected, the error and the tolerance.
    """
    parts = None
    if isinstance(gamma_or_params, Mapping) and "weights" in gamma_or_params:
        parts = _lsa_parts(gamma_or_params)
    gamma = parts[1] if parts else lsa_gamma(gamma_or_params)
    cov = _cov(cov)
    lam, u = lin.eigh_descending(cov)
    d = lam.shape[0]
    _check_gamma_shape(gamma, cov)
    n = int(n_context)
    r = int(rank)
    if r != rank or not 0 <= r <= d:
        raise ValueError(f"rank must be an integer in [0, {d}], got {rank!r}")
    if n != n_context or n < 1:
        raise ValueError(f"n_context must be an integer >= 1, got {n_context!r}")
    s02 = float(pretrain_label_noise)
    header = (
        f"Γ is not the rank-{r} optimum Γ_{r} of Theorem A (docs/theory/linear.md) "
        f"for N={n}, d={d}, σ₀²={s02:g}"
    )
    if not np.all(np.isfinite(gamma)):
        bad = np.argwhere(~np.isfinite(gamma))
        _fail(header, [f"Γ has {len(bad)} non-finite entries, first at {tuple(bad[0])} "
                       "(did training diverge?)"], [])

    gam = lin.optimal_gamma_diagonal(lam, n, r, pretrain_label_noise=s02)
    t = float(lam.sum())
    scale = float(gam[:r].max()) if r > 0 else 0.0
    tol = float(atol) + float(rtol) * scale
    g = u.T @ gamma @ u
    err = g - np.diag(gam)
    lines: list[str] = []
    notes: list[str] = []

    # The rank-r model's own structure (pytrees).
    if parts is not None:
        kind, _, mask, extra = parts
        if mask is not None and int(round(float(mask.sum()))) != r:
            lines.append(
                f"the {kind} parameters carry a rank mask with {int(round(float(mask.sum())))} "
                f"active columns, but rank={r} was asked"
            )
        if extra is not None:
            off_x, off_y, v_y = extra
            if off_x > tol or off_y > tol:
                lines.append(
                    "the full layer has terms outside the reduced form ŷ = x_qᵀ Γ h: "
                    f"‖v_x‖·‖K_xx‖ = {_fmt(off_x)}, |v_y|·‖k_yx‖ = {_fmt(off_y)} "
                    f"(tolerance {_fmt(tol)}); they add to the risk beyond R(Γ_eff)"
                )
            if v_y <= tol and r > 1:
                notes.append(
                    f"v_y = {_fmt(v_y)} ≈ 0: the spurious configuration with risk >= L₁ "
                    "(docs/theory/linear.md, Training facts)"
                )

    # Direction by direction, leaving out a tied group at the rank boundary.
    group = _tie_group(lam, r)
    in_group = np.zeros(d, dtype=bool)
    if group is not None:
        in_group[group] = True
        m_tied, s_kept = len(group), int(np.sum(group < r))
        gam_tie = float(gam[group[0]])
        block = g[np.ix_(group, group)]
        asym = float(np.max(np.abs(block - block.T)))
        eig = np.sort(np.linalg.eigvalsh(0.5 * (block + block.T)))[::-1]
        want = np.array([gam_tie] * s_kept + [0.0] * (m_tied - s_kept))
        dirs = f"{group[0] + 1}..{group[-1] + 1}"
        tie_text = (
            f"λ_{r} = λ_{r + 1} = {_fmt(lam[r - 1])}: the rank-{r} optimum is not unique "
            f"(Theorem A); on the tied directions {dirs} any Γ equal to γ = {_fmt(gam_tie)} "
            f"on a {s_kept}-dimensional subspace and 0 on the rest is optimal, and the "
            "check accepts every such Γ"
        )
        notes.append(tie_text)
        if asym > tol or np.max(np.abs(eig - want)) > tol:
            lines.append(
                f"on the tied directions {dirs} the eigenvalues of Γ are "
                f"[{', '.join(_fmt(x) for x in eig)}], expected {s_kept} × {_fmt(gam_tie)} "
                f"and {m_tied - s_kept} × 0 (asymmetry {_fmt(asym)}, tolerance {_fmt(tol)})"
            )

    diag_lines = []
    for i in range(d):
        if in_group[i] or abs(err[i, i]) <= tol:
            continue
        lam_i = f"λ_{i + 1} = {_fmt(lam[i])}"
        if i < r:
            diag_lines.append((abs(err[i, i]), (
                f"direction {i + 1} ({lam_i}): u_{i + 1}ᵀ Γ u_{i + 1} = {_fmt(g[i, i])}, "
                f"expected γ_{i + 1} = N/((N+1)λ_{i + 1} + t + σ₀²) = {_fmt(gam[i])}: "
                f"error {_signed(err[i, i])} ({_percent(err[i, i], gam[i], f'γ_{i + 1}')}; "
                f"tolerance {_fmt(tol)})"
            )))
        else:
            diag_lines.append((abs(err[i, i]), (
                f"direction {i + 1} ({lam_i}) is outside the top {r} and must be 0, "
                f"but u_{i + 1}ᵀ Γ u_{i + 1} = {_fmt(g[i, i])}: error {_signed(err[i, i])} "
                f"(tolerance {_fmt(tol)})"
            )))
    off_lines = []
    for i in range(d):
        for j in range(d):
            if i == j or (in_group[i] and in_group[j]) or abs(err[i, j]) <= tol:
                continue
            off_lines.append((abs(err[i, j]), (
                f"directions {i + 1} and {j + 1} are coupled: u_{i + 1}ᵀ Γ u_{j + 1} = "
                f"{_fmt(g[i, j])}, must be 0: error {_signed(err[i, j])} (tolerance {_fmt(tol)})"
            )))
    lines += [text for _, text in sorted(diag_lines, key=lambda x: -x[0])]
    lines += [text for _, text in sorted(off_lines, key=lambda x: -x[0])]

    # The risk.
    risk = lin.population_risk(gamma, cov, n, label_noise=label_noise, input_noise=input_noise)
    best = lin.optimal_risk(cov, n, r, label_noise=label_noise, input_noise=input_noise,
                            pretrain_label_noise=s02)
    risk_tol = float(atol) + float(rtol) * abs(best)
    if abs(risk - best) > risk_tol:
        lines.append(
            f"risk R(Γ) = {_fmt(risk)} but the optimum has R_{r} = {_fmt(best)} "
            f"(σ² = {float(label_noise):g}, σ_x² = {float(input_noise):g}): excess "
            f"{_signed(risk - best)} ({_percent(risk - best, best, f'R_{r}')}; tolerance {_fmt(risk_tol)})"
        )

    if not lines:
        return
    notes += _lsa_hints(g, lam, u, gamma, n, r, t, s02, tol, err, in_group)
    _fail(header, lines, notes)


def _lsa_hints(g, lam, u, gamma, n, r, t, s02, tol, err, in_group):
    """Likely causes: Γ has a higher rank, fits another rank's optimum or another σ₀²."""
    notes = []
    d = lam.shape[0]
    sing = np.linalg.svd(gamma, compute_uv=False)
    numerical_rank = int(np.sum(sing > tol))
    if numerical_rank > r:
        notes.append(
            f"Γ has {numerical_rank} singular values above the tolerance "
            f"([{', '.join(_fmt(x) for x in sing[:numerical_rank])}]), more than rank={r}"
        )
    for other in range(d + 1):
        if other == r:
            continue
        want = lin.optimal_gamma_diagonal(lam, n, other, pretrain_label_noise=s02)
        if np.max(np.abs(g - np.diag(want))) <= tol:
            notes.append(f"Γ matches the rank-{other} optimum Γ_{other}: was rank={other} meant?")
            break
    kept = [i for i in range(r) if not in_group[i] and g[i, i] > 0]
    if kept and any(abs(err[i, i]) > tol for i in kept):
        implied = np.array([n / g[i, i] - (n + 1.0) * lam[i] - t for i in kept])
        spread = float(implied.max() - implied.min())
        centre = float(np.median(implied))
        if abs(centre) <= 1e-8 * (t + (n + 1.0) * lam[0]):
            centre = 0.0  # rounding noise of N/γ − (N+1)λ − t
        if spread <= 0.05 * max(1.0, abs(centre)) and abs(centre - s02) > 0.05 * max(1.0, s02):
            notes.append(
                f"the kept directions fit γ_i = N/((N+1)λ_i + t + σ₀²) with σ₀² ≈ {_fmt(centre)}, "
                f"not the pretrain_label_noise={s02:g} passed"
            )
    return notes


# --------------------------------------------------------------------------------------
# Setting 2
# --------------------------------------------------------------------------------------


def _softmax(logits):
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _parity_model(model):
    """(attention (m, D) float64, readout (m,), rows as array indices, pytree?)."""
    if isinstance(model, Mapping):
        if "weights" not in model:
            raise ValueError("expected (attention, readout) or an iclsim parity parameter pytree "
                             f"with a 'weights' entry, got keys {sorted(model)}")
        w = model["weights"]
        alpha = _softmax(_np(w["logits"]))
        c = _np(w["readout"])
        mask = _np(model["head_mask"]) if "head_mask" in model else np.ones(c.shape)
        active = np.flatnonzero(mask > 0.5)
        return alpha[active], c[active] * mask[active], active, True
    try:
        alpha, c = model
    except (TypeError, ValueError):
        raise ValueError("model must be an iclsim parity pytree or a pair (attention (m, D), "
                         "readout (m,))") from None
    alpha, c = _np(alpha), _np(c)
    if alpha.ndim != 2 or c.shape != (alpha.shape[0],):
        raise ValueError(f"attention must be (m, D) and readout (m,), got {alpha.shape} and "
                         f"{c.shape}")
    return alpha, c, np.arange(alpha.shape[0]), False


def assert_parity_optimal(model, pi, n_context, heads, *, k, distractor_bits=0, mass=0.99,
                          rtol=0.02, atol=1e-8, label_flip=0.0, bit_flip=0.0):
    """Assert that an m-head parity model is the optimum of Theorem C and has its risk.

    Theorem C (``docs/theory/parity.md#theorem-c``): the m heads sit one each on the
    blocks of the m most important features (0-based blocks 0..m−1, π sorted
    decreasing), attention uniform on the block, and head h on block j has readout

    .. math:: c_h = γ_j = \\frac{N π_j}{(N − 1) π_j + 1},

    with risk (3) ``R_m(μ) = 1 + Σ_{j<m} [γ_j²((1 − 1/N) π_j μ² + 1/N) − 2 π_j γ_j μ]``
    at the context signal μ = (1 − 2p)(1 − 2q)^k.  Checks, head by head:

    * head h is *on* block j when each of the k bits of B_j gets attention >= mass/k
      (so the block carries >= ``mass``, spread evenly; a softmax reaches the uniform
      block only in the limit);
    * the heads are on distinct blocks, and these are the top m (with a tie
      π_m == π_{m+1} any choice among the tied blocks is accepted, and the message says so);
    * readouts within ``atol + rtol·γ_j``;
    * the exact loss (5) of the model (:func:`iclsim.parity.oracle.population_loss`, at
      evaluation flips p = ``label_flip``, q = ``bit_flip``) within ``atol + rtol·R_m(μ)``
      of R_m(μ) (:func:`iclsim.parity.oracle.optimal_risk`).

    Parameters
    ----------
    model : parameter pytree or (attention, readout)
        An iclsim parity parameter pytree with ``weights`` (``logits``, ``readout``) and
        ``head_mask`` (:mod:`iclsim.parity.model`; the active heads are those of the
        mask), or a pair ``(attention, readout)`` of shapes (m, D) and (m,), attention
        rows on the simplex.
    pi : (K,) array
        Importances, sorted decreasing, summing to 1.
    n_context : int >= 1
        N.
    heads : int in [0, K]
        m, the number of heads the model should have.
    k : int >= 1
        Parity degree (block size).
    distractor_bits : int >= 0
        D₀; the attention has D = K·k + D₀ columns.
    mass, rtol, atol : float
        Tolerances (above).
    label_flip, bit_flip : float in [0, 0.5]
        p, q of the evaluation context, for the risk check.

    Raises
    ------
    AssertionError
        Naming each head that is off (its block, attention mass, readout, the expected
        values and the error) and each top block left uncovered.
    """
    pi = par.check_pi(pi)
    n_feat = pi.shape[0]
    n = int(n_context)
    if n != n_context or n < 1:
        raise ValueError(f"n_context must be an integer >= 1, got {n_context!r}")
    m = int(heads)
    if m != heads or not 0 <= m <= n_feat:
        raise ValueError(f"heads must be an integer in [0, {n_feat}], got {heads!r}")
    k = int(k)
    d0 = int(distractor_bits)
    alpha, c, rows, is_tree = _parity_model(model)
    n_bits = n_feat * k + d0
    if alpha.shape[1] != n_bits:
        raise ValueError(f"attention has {alpha.shape[1]} columns, but D = K·k + D₀ = "
                         f"{n_feat}·{k} + {d0} = {n_bits}")
    header = (f"the model is not the {m}-head optimum of Theorem C (docs/theory/parity.md) "
              f"for K={n_feat}, k={k}, N={n}")
    lines: list[str] = []
    notes: list[str] = []
    if not (np.all(np.isfinite(alpha)) and np.all(np.isfinite(c))):
        _fail(header, ["the model has non-finite attention or readouts (did training "
                       "diverge?)"], [])
    gam = par.optimal_readout(pi, n)
    what = "active heads (head mask)" if is_tree else "heads (attention rows)"
    if alpha.shape[0] != m:
        lines.append(f"the model has {alpha.shape[0]} {what}, but heads={m} was asked")

    # Which blocks are acceptable: all with π_j > π_m, plus any of those tied with π_m.
    if m > 0:
        boundary = pi[m - 1]
        tie = m < n_feat and pi[m] >= boundary - 1e-12 * max(boundary, 1e-300)
        must = set(np.flatnonzero(pi > boundary + 1e-12 * boundary).tolist()) if tie else \
            set(range(m))
        may = set(np.flatnonzero(pi >= boundary - 1e-12 * boundary).tolist()) if tie else \
            set(range(m))
        if tie:
            tied = sorted(may - must)
            notes.append(
                f"π_{m - 1} = π_{m} = {_fmt(boundary)} (0-based): the top-{m} blocks are not "
                f"unique (Theorem C); any {m - len(must)} of the tied blocks {tied} complete "
                "an optimum, and the check accepts every such choice"
            )
    else:
        must, may = set(), set()

    kk = n_feat * k
    bmass = alpha[:, :kk].reshape(alpha.shape[0], n_feat, k)
    on_block: dict[int, list[int]] = {}  # block -> positions of the heads on it
    for pos, h in enumerate(rows):
        masses = bmass[pos].sum(axis=-1)
        j = int(np.argmax(masses))
        least = float(bmass[pos, j].min())
        if least * k < mass:
            lines.append(
                f"head {h} is not on one block: its largest block mass is {_fmt(masses[j])} on "
                f"block {j}, whose least attended bit gets {_fmt(least)} (needs >= mass/k = "
                f"{_fmt(mass / k)} on every bit)"
            )
            continue
        on_block.setdefault(j, []).append(pos)
    for j, positions in sorted(on_block.items()):
        names = [str(rows[pos]) for pos in positions]
        if len(positions) > 1:
            total = float(c[positions].sum())
            lines.append(
                f"heads {', '.join(names[:-1])} and {names[-1]} share block {j} "
                f"(collapsed; their readouts sum to {_fmt(total)}): a block needs one head"
            )
        if j not in may:
            top = f"{{{', '.join(map(str, sorted(may)))}}}"
            lines.append(
                f"head {names[0]} is on block {j} (π_{j} = {_fmt(pi[j])}, mass "
                f"{_fmt(bmass[positions[0], j].sum())}), outside the top-{m} blocks {top}"
            )
            continue
        if len(positions) > 1:
            continue
        pos, h = positions[0], rows[positions[0]]
        err = c[pos] - gam[j]
        if abs(err) > atol + rtol * gam[j]:
            lines.append(
                f"head {h} is on block {j} but its readout c_{h} = {_fmt(c[pos])}, expected "
                f"γ_{j} = Nπ_{j}/((N−1)π_{j} + 1) = {_fmt(gam[j])}: error {_signed(err)} "
                f"({_percent(err, gam[j], f'γ_{j}')}; tolerance {_fmt(atol + rtol * gam[j])})"
            )
    covered = set(on_block)
    for j in sorted(must - covered):
        lines.append(f"block {j} (π_{j} = {_fmt(pi[j])}, a top-{m} block) has no head on it")
    optional = sorted(may - must)
    need = m - len(must)
    if optional and len(covered & set(optional)) < need:
        lines.append(
            f"only {len(covered & set(optional))} of the tied blocks {optional} have a head, "
            f"{need} are needed"
        )

    mu = par.signal(label_flip, bit_flip, k)
    loss = par.population_loss(alpha, c, pi, n, k, label_flip=label_flip, bit_flip=bit_flip,
                               distractor_bits=d0)
    best = par.optimal_risk(pi, n, m, label_flip=label_flip, bit_flip=bit_flip, k=k)
    risk_tol = float(atol) + float(rtol) * abs(best)
    if abs(loss - best) > risk_tol:
        lines.append(
            f"loss (5) = {_fmt(loss)} but the optimum has R_{m} = {_fmt(best)} (μ = {_fmt(mu)}): "
            f"excess {_signed(loss - best)} ({_percent(loss - best, best, f'R_{m}')}; tolerance "
            f"{_fmt(risk_tol)})"
        )
    if lines:
        _fail(header, lines, notes)


# --------------------------------------------------------------------------------------
# Risks
# --------------------------------------------------------------------------------------


def assert_risk_close(actual, desired, *, rtol=1e-7, atol=0.0, err_msg=""):
    """Assert ``|actual − desired| <= atol + rtol·|desired|`` elementwise (numpy.testing style).

    For risks (scalars or arrays that broadcast), e.g. a measured risk against
    :func:`iclsim.linear.oracle.optimal_risk` (L_r of Theorem A,
    ``docs/theory/linear.md#theorem-a``) or :func:`iclsim.parity.oracle.optimal_risk`
    (R_m of Theorem C, ``docs/theory/parity.md#theorem-c``).  NaN or inf anywhere fails
    (a risk is finite).  The message gives the worst entry: both values, the difference,
    its size relative to ``desired`` and the tolerance, then ``err_msg``.
    """
    a = np.asarray(actual, dtype=float)
    b = np.asarray(desired, dtype=float)
    try:
        a, b = np.broadcast_arrays(a, b)
    except ValueError:
        raise ValueError(f"actual {a.shape} and desired {b.shape} do not broadcast") from None
    tail = f"\n  {err_msg}" if err_msg else ""
    finite = np.isfinite(a) & np.isfinite(b)
    if not np.all(finite):
        idx = tuple(np.argwhere(~finite)[0])
        where = f" at index {idx}" if a.ndim else ""
        raise AssertionError(f"risks not close: non-finite value{where}: actual "
                             f"{a[idx]!r}, desired {b[idx]!r}{tail}")
    diff = a - b
    tol = atol + rtol * np.abs(b)
    bad = np.abs(diff) > tol
    if not np.any(bad):
        return
    excess = np.where(bad, np.abs(diff) - tol, -np.inf)
    idx = np.unravel_index(int(np.argmax(excess)), a.shape) if a.ndim else ()
    where = f" at index {tuple(int(i) for i in idx)}" if a.ndim else ""
    count = f" ({int(bad.sum())} of {bad.size} entries)" if a.ndim else ""
    rel = f"{100.0 * diff[idx] / b[idx]:+.3g} %" if b[idx] != 0 else "desired is 0"
    raise AssertionError(
        f"risks not close{count}; worst{where}: actual {_fmt(a[idx])}, desired "
        f"{_fmt(b[idx])}, difference {_signed(diff[idx])} ({rel}), tolerance atol + "
        f"rtol·|desired| = {_fmt(tol[idx])}{tail}"
    )
