"""iclsim.llm.figures on a hand-made result: titles state what is plotted (no claim as a
fact), the footer names the intervals, an all-correct cell has a non-zero bar, and the
sensitivity plot joins only models of the same kind."""

import numpy as np
import pytest
import xarray as xr

from iclsim.engine import figures as engine_figures
from iclsim.llm import figures
from iclsim.llm.aggregate import add_aggregates

DIMS = ("model", "task", "k", "label_words", "input_noise", "label_flip", "seed", "query")
MODELS = {"s": (10**8, "instruct"), "m": (3 * 10**8, "base"), "l": (10**9, "instruct")}


@pytest.fixture
def drawn(monkeypatch, tmp_path):
    rng = np.random.default_rng(0)
    shape = (3, 2, 1, 1, 1, 2, 3, 16)
    correct = rng.random(shape) < 0.7
    correct[2, 0, 0, 0, 0, 0] = True  # model l, task t0, p = 0: all correct
    run = shape[:-1]
    n_params = np.ones(run, np.int64) * np.array([v[0] for v in MODELS.values()])[
        (slice(None),) + (None,) * 6]
    ds = xr.Dataset({
        "correct": (DIMS, correct.astype(float)),
        "margin": (DIMS, np.where(correct, 1.0, -1.0)),
        "present": (DIMS[:-1], np.ones(run, bool)),
        "diverged": (DIMS[:-1], np.zeros(run, bool)),
        "n_params": (DIMS[:-1], n_params),
    }, coords={"model": list(MODELS), "task": ["t0", "t1"], "k": [8],
               "label_words": ["sentiment"], "input_noise": [0.0], "label_flip": [0.0, 0.5],
               "seed": np.arange(3), "query": np.arange(16)})
    ds = add_aggregates(ds.assign_coords(kind=("model", [v[1] for v in MODELS.values()])))
    figs = {}
    monkeypatch.setattr(engine_figures, "save_figure",
                        lambda fig, out, stem, fmts: figs.setdefault(stem, fig) and [])
    figures.draw_all(ds, tmp_path, ["png"])
    return ds, figs


def _texts(fig):
    out = [t.get_text() for t in fig.texts]
    out += [fig._suptitle.get_text()] if fig._suptitle else []
    out += [ax.get_title() for ax in fig.axes]
    return " ".join(out)


def test_titles_and_footer(drawn):
    _, figs = drawn
    assert set(figs) == {"llm_accuracy_vs_flip", "llm_sensitivity"}
    for fig in figs.values():
        text = _texts(fig)
        assert "follow the flipped labels more" not in text and "the paper" not in text
        assert "bootstrap" not in text and "Student t intervals over seeds" in text
    assert "?" in _texts(figs["llm_accuracy_vs_flip"])


def test_all_correct_cell_has_a_bar(drawn):
    ds, figs = drawn
    ax = figs["llm_accuracy_vs_flip"].axes[0]  # task t0
    bars = [c for c in ax.containers if len(c.lines) > 2][2]  # third model: l
    seg = bars.lines[2][0].get_segments()[0]  # its bar at p = 0
    assert seg[1][1] == pytest.approx(1.0) and seg[1][1] - seg[0][1] > 0.05


def test_sensitivity_joins_only_one_kind(drawn):
    ds, figs = drawn
    ax = figs["llm_sensitivity"].axes[0]
    kind_of_x = {float(v[0]): v[1] for v in MODELS.values()}
    joined = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-" and len(ln.get_xdata()) > 1]
    assert joined  # the two instruct models
    for ln in joined:
        assert len({kind_of_x[float(x)] for x in ln.get_xdata()}) == 1
    labels = ax.get_legend_handles_labels()[1]
    assert "instruct models, pooled over tasks" in labels
    assert "base models, pooled over tasks" in labels
