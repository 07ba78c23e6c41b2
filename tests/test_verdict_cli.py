"""The new user's sweep through ``iclsim.cli.main``: exact verdicts, the σ² = 10
level UNRESOLVED, ``--check`` exit codes of ``run`` and ``show``, one trained rank judged over
the trained ranks.

Spectrum [3, 1.5, 0.8, 0.4, 0.2], N = 20, σ² = 0/10/20/40/80, the quickstart's training
protocol (tokens sampler, leave-one-out queries, Adam β1 = 0.99, Polyak tail) at reduced
size.  Each sweep is ~40-60 s on 2 busy CPU cores (mostly compilation): slow.
"""

import re
import textwrap

import numpy as np
import pytest

from iclsim import cli
from iclsim.engine import store, verdict as V
from iclsim.linear import oracle

pytestmark = pytest.mark.slow

SWEEP = textwrap.dedent(
    """
    name = "newuser"
    setting = "linear"
    seed = 0
    [spectrum]
    family = "explicit"
    values = [3.0, 1.5, 0.8, 0.4, 0.2]
    rotation = "random"
    [model]
    parametrization = "reduced"
    [train]
    mode = "monte_carlo"
    steps = 300
    batch = 32
    chunk_steps = 300
    sampler = "tokens"
    loo = true
    adam_b1 = 0.99
    average_tail = 0.25
    [axes]
    rank = [1, 2, 3, 4, 5]
    seeds = 2
    learning_rate = [0.1]
    init_scale = [0.1]
    n_context = [20]
    [eval]
    label_noise = [0.0, 10.0, 20.0, 40.0, 80.0]
    n_prompts = 1024
    batch = 1024
    [figures]
    formats = []
    """
)
@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("newuser") / "newuser.toml"
    path.write_text(SWEEP)
    return path


def result_folder(root):
    """The one result folder below ``root`` (ignoring hidden folders such as a trained store)."""
    (found,) = {p.parent for p in root.glob("*/*/result*.nc")}
    return found


def _run(sweep_file, out, *extra, capsys):
    code = cli.main(["run", str(sweep_file), "--out", str(out), "--quiet", "--check", *extra])
    return code, capsys.readouterr().out


def test_new_user_sweep_exact_verdict_and_check(sweep_file, tmp_path, capsys):
    tmp_path = tmp_path / "out"
    code, text = _run(sweep_file, tmp_path, capsys=capsys)
    ds = store.load_result(result_folder(tmp_path))
    # eval_risk is the exact risk of each stored Γ (independent float64 recomputation here)
    cov = np.asarray(ds["covariance"].values)
    g = ds["gamma"].isel(n_context=0, learning_rate=0, init_scale=0, train_label_noise=0)
    for r in (1, 5):
        for s2 in (10.0, 80.0):
            want = oracle.population_risk(g.sel(rank=r, seed=1).values, cov, 20, label_noise=s2)
            got = float(ds["eval_risk"].sel(rank=r, seed=1, label_noise=s2).squeeze())
            assert got == pytest.approx(want, rel=1e-12)
    parts = V.from_dataset(ds)
    best = {p.detail["label_noise"]: p for p in parts if p.detail.get("kind") == "best_scale"}
    # σ² = 10: the theory's two best ranks (5, 4) differ by 0.00078, far below what 300 Monte
    # Carlo steps reach: UNRESOLVED, never agreement.
    assert best[10.0].decision == V.UNRESOLVED
    assert (best[10.0].detail["theory_best"], best[10.0].detail["runner_up"]) == (5, 4)
    assert best[10.0].detail["gap"] == pytest.approx(0.000784, abs=1e-6)
    assert re.search(r"UNRESOLVED best rank = 5 at N=20, σ²=10.*gap 0\.000784", text)
    fold = V.fold(parts)
    assert fold.line in text
    assert code == fold.exit_code == (1 if fold.word == "DIFFERS" else 0)
    assert f"check: {fold.word} (exit {code})" in text
    assert "Monte Carlo cross-check of the exact evaluation (not part of the verdict)" in text
    # show --check reads the stored parts back and exits the same way
    assert cli.main(["show", str(tmp_path), "--check"]) == code
    assert fold.line in capsys.readouterr().out


def test_check_exits_1_on_differs_and_0_otherwise(sweep_file, tmp_path, capsys):
    # 3 steps from a 0.1-scale init: no seed of any rank is near its optimum → DIFFERS
    code, text = _run(sweep_file, tmp_path / "a", "--set", "train.steps=3",
                      "--set", "train.chunk_steps=3", capsys=capsys)
    assert "DIFFERS from the theory" in text and code == 1
    assert cli.main(["show", str(tmp_path / "a")]) == 0  # without --check: 0
    assert cli.main(["show", str(tmp_path / "a"), "--check"]) == 1


def test_one_trained_rank_is_judged_over_the_trained_ranks(sweep_file, tmp_path, capsys):
    tmp_path = tmp_path / "out"
    code, text = _run(sweep_file, tmp_path, "--set", "axes.rank=[3]", "--set",
                      "train.steps=600", "--set", "train.chunk_steps=600", "--set",
                      "train.batch=64", capsys=capsys)
    ds = store.load_result(result_folder(tmp_path))
    parts = V.from_dataset(ds)
    best = {p.detail["label_noise"]: p for p in parts if p.detail.get("kind") == "best_scale"}
    # at σ² = 0 the best over 0..5 is 5; over the trained {0, 3} it is 3, and that is judged
    assert best[0.0].detail["r_star_all"] == 5
    assert best[0.0].detail["theory_best"] == 3
    assert best[0.0].decision == V.SUPPORTED
    assert "DIFFERS" not in text and code == 0
