"""Figures of setting 1 drawn from small synthetic results: the training curves show a stall,
the open-marker legend appears only with open markers, footers fit the figure."""

import json

import numpy as np
import pytest
import xarray as xr

from iclsim.engine import figures as engine_figures
from iclsim.linear import figures
from iclsim.plotting import add_footer, pyplot, wrap_footer

LADDER = np.array([10.0, 6.0, 4.0, 3.5])  # L_0..L_3: gains 4, 2, 0.5


def _result(mode="monte_carlo", risk_below=False, seeds=2, steps=400, window=10):
    """A minimal stored result, ranks 1..3: rank 3 stalls on the rank-2 plateau (L_2)."""
    rng = np.random.default_rng(0)
    ranks = np.array([1, 2, 3])
    t = (np.arange(steps // window) + 1) * window
    curves = []
    for r in ranks:
        target = LADDER[2] if r == 3 else LADDER[r]
        clean = target + (LADDER[0] - target) * np.exp(-t / 30.0)
        noise = 0.0 if mode == "population" else 0.05
        curves.append(clean + noise * rng.standard_normal((seeds, t.size)))
    loss = np.array(curves)[None, :, :, None, None, None, :]  # n, rank, seed, lr, init, σ₀², step
    run = ("n_context", "rank", "seed", "learning_rate", "init_scale", "train_label_noise")
    shape = (1, 3, seeds, 1, 1, 1)
    risk = np.broadcast_to(LADDER[ranks][None, :, None, None, None, None], shape).copy()
    risk *= (1 + 1e-9)
    risk[0, :2, 0] *= (1 - 2e-9) if risk_below else 1.0
    risk[0, 2] = LADDER[2]  # stuck: the risk of rank 2
    verdict = np.full(shape, "optimum_reached", dtype="<U15")
    verdict[0, 2] = "stuck_at_rank_k"
    d = 3
    ds = xr.Dataset(
        {
            "loss": (run + ("step",), loss),
            "diverged": (run, np.zeros(shape, bool)),
            "risk": (run, risk),
            "gamma_error": (run, np.full(shape, 1e-3)),
            "verdict": (run, verdict),
            "optimal_risk": (("n_context", "rank_all", "train_label_noise"),
                             LADDER[None, :, None]),
            "gamma_opt": (("n_context", "rank", "train_label_noise", "i", "j"),
                          np.ones((1, 3, 1, d, d))),
        },
        coords={"n_context": [20], "rank": ranks, "seed": np.arange(seeds),
                "learning_rate": [0.1], "init_scale": [0.1], "train_label_noise": [0.0],
                "step": t, "rank_all": np.arange(4), "i": np.arange(d), "j": np.arange(d)},
        attrs={"config": json.dumps({"name": "synthetic", "train": {"mode": mode, "steps": steps,
                                                                     "batch": 256},
                                     "model": {"parametrization": "block"},
                                     "eval": {"n_prompts": 4096}}),
               "config_hash": "0" * 12, "dtype": "float32"},
    )
    return ds


@pytest.fixture
def captured(monkeypatch):
    """The figures drawn, instead of files."""
    figs = []
    monkeypatch.setattr(engine_figures, "save_figure",
                        lambda fig, *a, **k: figs.append(fig) or [])
    return figs


def test_trailing_mean_and_se():
    steps = np.arange(1, 101) * 10.0
    loss = np.tile([1.0, 3.0], 50)
    mean, se = figures.trailing_mean(loss, steps, trail=0.2)
    # At t = 1000 the windows ending in (800, 1000] are the last 20: ten 1s and ten 3s.
    assert mean[-1] == pytest.approx(2.0)
    assert se[-1] == pytest.approx(np.std([1.0, 3.0] * 10, ddof=1) / np.sqrt(20))
    assert mean[0] == 1.0 and np.isnan(se[0])  # one window: no SE
    batched, _ = figures.trailing_mean(np.stack([loss, 2 * loss]), steps)
    np.testing.assert_allclose(batched[1], 2 * mean)


@pytest.mark.parametrize("mode", ["monte_carlo", "population"])
def test_training_curves_show_the_stall_in_units_of_the_gain(captured, mode):
    """Rank 3 ends on L_2: its curve ends at (L_2 − L_3)/(L_2 − L_3) = 1; ranks 1, 2 near 0."""
    figures.training_curves(_result(mode), None, ("png",))
    ax = captured[0].axes[0]
    ends = {line.get_label(): line.get_ydata()[-1] for line in ax.get_lines()
            if line.get_label().startswith("r = ")}
    assert ends["r = 3"] == pytest.approx(1.0, abs=0.05)
    assert abs(ends["r = 1"]) < 0.05 and abs(ends["r = 2"]) < 0.05
    assert ax.get_yscale() == ("symlog" if mode == "monte_carlo" else "log")
    if mode == "monte_carlo":  # the ± 2 SE bands: one per rank
        assert len(ax.collections) == 3


@pytest.mark.parametrize("below", [False, True])
def test_gamma_error_legend_matches_the_markers(captured, below):
    figures.gamma_error(_result(risk_below=below), None, ("png",))
    ax_risk = captured[0].axes[1]
    open_markers = [line for line in ax_risk.get_lines()
                    if len(line.get_xdata()) and line.get_markerfacecolor() == "none"]
    legend = ax_risk.get_legend()
    texts = [t.get_text() for t in legend.get_texts()] if legend else []
    assert bool(open_markers) == below
    assert any("R(Γ) < L_r" in t for t in texts) == below
    assert "open" not in ax_risk.get_title()


def test_footer_is_wrapped_inside_the_figure():
    plt = pyplot()
    fig = plt.figure(figsize=(4.0, 3.0), layout="constrained")
    fig.add_subplot()
    text = "; ".join(f"item number {k} = {k * 1.5:g}" for k in range(30))
    lines = wrap_footer(fig, text)
    assert len(lines) > 3
    assert " ".join(lines) == text  # broken only between items, nothing lost
    add_footer(fig, text)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    footer = fig.texts[-1]
    box = footer.get_window_extent(renderer=renderer)
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width + 0.5
    axes_box = fig.axes[0].get_tightbbox(renderer)
    assert axes_box.y0 >= box.y1 - 1  # the layout keeps the footer's strip free
    plt.close(fig)
