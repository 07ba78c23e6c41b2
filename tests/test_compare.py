"""``iclsim compare`` with all four results (linear, parity, LLM, transformer), the transformer
column's numbers against the result it is drawn from, and the one-line errors (exit 2).

Four tiny sweeps (≈ 2 min on 2 busy cores): the whole module is ``slow`` (``pytest -m slow
tests/test_compare.py``)."""

import textwrap
import tomllib

import numpy as np
import pytest

from iclsim import cli, compare
from iclsim.engine.config import apply_overrides, parse
from iclsim.engine.sweep import run_sweep
from iclsim.linear.sweep import LINEAR, LinearSweepConfig
from iclsim.parity.sweep import PARITY, ParitySweepConfig
from iclsim.transformer.sweep import TRANSFORMER, TransformerSweepConfig, usable

from conftest import result_folder

pytestmark = pytest.mark.slow

LINEAR_TINY = textwrap.dedent(
    """
    name = "cmp_linear"
    setting = "linear"
    [spectrum]
    values = [2.0, 1.0]
    [model]
    parametrization = "block"
    [train]
    mode = "population"
    sampler = "statistic"
    loo = false
    adam_b1 = 0.9
    average_tail = 0.0
    steps = 30
    [axes]
    learning_rate = [0.01]
    rank = [1, 2]
    seeds = 1
    n_context = [6]
    [eval]
    label_noise = [0.0, 4.0, 20.0]
    n_prompts = 256
    batch = 256
    [figures]
    formats = ["png"]
    """
)

PARITY_TINY = textwrap.dedent(
    """
    name = "cmp_parity"
    setting = "parity"
    seed = 1
    [data]
    family = "canonical"
    k = 2
    [train]
    mode = "population"
    protocol = "progressive"
    steps = 20
    chunk_steps = 20
    loss_every = 5
    [axes]
    heads = [1, 2]
    seeds = 1
    learning_rate = [0.1]
    n_context = [16]
    [eval]
    label_flip = [0.0, 0.4]
    bit_flip = [0.0]
    n_prompts = 256
    test_prompts = 256
    batch = 256
    [figures]
    formats = ["png"]
    """
)

TRANSFORMER_TINY = textwrap.dedent(
    """
    name = "cmp_transformer"
    setting = "transformer"
    [spectrum]
    values = [1.0, 0.25]
    [model]
    heads = [1, 2]
    width = [8, 8]
    layers = [1, 1]
    head_dim = 2
    mlp_ratio = 1
    [train]
    steps = 40
    chunk_steps = 40
    warmup_steps = 5
    batch = 32
    loss_every = 5
    [axes]
    size = [1, 2]
    seeds = 2
    learning_rate = [0.01]
    n_context = [8]
    [eval]
    label_noise = [0.0, 1.0, 4.0]
    n_prompts = 512
    batch = 256
    ridge_lambda = [1.0]
    trivial_tolerance = 0.0
    [figures]
    formats = []
    """
)


def _run(text, config_class, setting, root, *over):
    cfg = parse(config_class, apply_overrides(tomllib.loads(text),
                                              [f"output_dir='{root}'", *over]))
    return run_sweep(cfg, setting, quiet=True)


def _llm_result(root, monkeypatch):
    """A tiny LLM sweep (random tiny llama, fake sentiment data) through the CLI."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from iclsim.llm import sweep as llm_sweep
    from iclsim.llm.data import DATA_FILES

    cache = root / "cache"
    folder = cache / "data" / "vader-3.3.2"
    folder.mkdir(parents=True)
    pos = ["good", "fine", "great", "lovely"]
    neg = ["bad", "dull", "awful", "grim"]
    for t, (fname, _) in DATA_FILES.items():
        rows = []
        for i in range(24):
            rows.append((f"{2.0 + 0.01 * i:.2f}", f"{pos[i % 4]} film {i} {t}"))
            rows.append((f"{-1.0 - 0.02 * i:.2f}", f"{neg[i % 4]} movie {i} {t}"))
        text = "".join(f"{n + 1}\t{r}\t{x}\r\n" for n, (r, x) in enumerate(rows))
        (folder / fname).write_bytes(text.encode("utf-8"))
    (folder / "iclsim-unpinned-data").touch()  # hand-made data: not checked against the pins
    toml = root / "llm.toml"
    toml.write_text(textwrap.dedent(
        """
        name = "cmp_llm"
        setting = "llm"
        [axes]
        model = ["tiny-random-llama"]
        task = ["movies"]
        k = [4]
        label_words = ["sentiment"]
        input_noise = [0.0]
        label_flip = [0.0, 0.5]
        seeds = 1
        [eval]
        n_queries = 4
        batch = 4
        [figures]
        formats = []
        """))
    monkeypatch.setenv("ICLSIM_CACHE", str(cache))
    clear = getattr(llm_sweep._task, "cache_clear", lambda: None)  # memoised on the task name
    clear()
    try:
        assert cli.main(["run", str(toml), "--out", str(root / "llm"), "--quiet"]) == 0
    finally:
        clear()
    return result_folder(root / "llm")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    with pytest.MonkeyPatch.context() as mp:
        llm = _llm_result(root, mp)
    linear = _run(LINEAR_TINY, LinearSweepConfig, LINEAR, root / "lin")
    parity = _run(PARITY_TINY, ParitySweepConfig, PARITY, root / "par")
    transformer = _run(TRANSFORMER_TINY, TransformerSweepConfig, TRANSFORMER, root / "tf")
    single = root / "tf1" / "result.nc"  # the transformer result at one σ² level
    single.parent.mkdir()
    transformer.dataset.isel(label_noise=[0]).to_netcdf(single, engine="h5netcdf")
    return dict(root=root, linear=linear.path, parity=parity.path,
                transformer=transformer.path, tf_ds=transformer.dataset, llm=llm,
                single=single)


def test_compare_with_all_four_results(results, capsys):
    r = results
    out = r["root"] / "cmp4"
    rc = cli.main(["compare", str(r["linear"]), str(r["parity"]), str(r["llm"]),
                   "--transformer", str(r["transformer"]), "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert (out / "scale_vs_noise.png").exists() and (out / "scale_vs_noise.pdf").exists()
    # Without --out: the folder name carries the transformer hash before the LLM one.
    assert cli.main(["compare", str(r["linear"]), str(r["parity"]), "--transformer",
                     str(r["transformer"]), "--format", "png"]) == 0
    printed = capsys.readouterr().out
    tf_hash = r["tf_ds"].attrs["config_hash"]
    assert f"-{tf_hash}/scale_vs_noise.png" in printed


def test_compare_places_any_number_of_results_by_setting(results, capsys):
    from iclsim.engine import store

    r = results
    assert cli.main(["compare", str(r["transformer"]), str(r["parity"]), "--out",
                     str(r["root"] / "two"), "--format", "png"]) == 0
    assert (r["root"] / "two" / "scale_vs_noise.png").exists()
    assert cli.main(["compare", str(r["llm"]), "--out", str(r["root"] / "one"), "--format",
                     "png"]) == 0
    assert (r["root"] / "one" / "scale_vs_noise.png").exists()
    # Without --out: the config hashes in column order (linear, parity), whatever the order given.
    capsys.readouterr()
    assert cli.main(["compare", str(r["parity"]), str(r["linear"]), "--format", "png"]) == 0
    hashes = [store.load_result(r[k]).attrs["config_hash"] for k in ("linear", "parity")]
    assert f"compare-{hashes[0]}-{hashes[1]}/scale_vs_noise.png" in capsys.readouterr().out
    assert cli.main(["compare", str(r["linear"]), str(r["linear"])]) == 2
    err = capsys.readouterr().err.strip()
    assert "two linear results" in err and len(err.splitlines()) == 1, err


def test_transformer_column_values(results, tmp_path):
    """The column's points are the means over usable seeds of eval_risk, its ladder is the
    stored one, and its best size is the engine's argmin over {0} ∪ sizes (recomputed here
    from the raw result in numpy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds = results["tf_ds"]
    fig, (top, bottom) = plt.subplots(2, 1)
    best, r_star = compare._transformer_panels(top, bottom, plt, ds)
    risk = ds["eval_risk"].isel(n_context=0, learning_rate=0, init_scale=0, train_label_noise=0,
                                input_noise=0).transpose("size", "seed", "label_noise").values
    ok = ~usable(ds)["diverged"].isel(n_context=0, learning_rate=0, init_scale=0,
                                      train_label_noise=0).transpose("size", "seed").values
    means = np.array([risk[a][ok[a]].mean(axis=0) if ok[a].any() else
                      np.full(risk.shape[-1], np.inf) for a in range(risk.shape[0])])
    table = np.vstack([np.full(risk.shape[-1], float(ds["trivial_risk"])), means])
    want = np.concatenate([[0], ds["size"].values])[np.argmin(table, axis=0)]
    np.testing.assert_array_equal(best, want)
    np.testing.assert_array_equal(r_star, ds["best_rank"].squeeze().values)
    # The size curves drawn are the usable-seed means (errorbar lines carry the y data).
    drawn = [line.get_ydata() for line in top.get_lines() if line.get_marker() == "o"]
    for a in range(means.shape[0]):
        if ok[a].any():
            assert any(np.allclose(y, means[a]) for y in drawn)
    # The grey ladder: one line per rank, the stored L_r(σ²).
    ladder = ds["ladder_risk"].squeeze().transpose("label_noise", "rank_all").values
    grey = [line.get_ydata() for line in top.get_lines() if isinstance(line.get_color(), str) and line.get_color() == "0.78"]
    assert len(grey) == ladder.shape[1]
    for rk in range(ladder.shape[1]):
        np.testing.assert_allclose(grey[rk], ladder[:, rk])
    plt.close(fig)


@pytest.mark.parametrize("which, needle", [
    ("wrong", "--transformer is a linear result"),
    ("single", "needs at least 2 evaluation label_noise values"),
])
def test_transformer_errors_are_one_line_exit_2(results, capsys, which, needle):
    r = results
    bad = r["linear"] if which == "wrong" else r["single"]
    rc = cli.main(["compare", str(r["linear"]), str(r["parity"]), "--transformer", str(bad),
                   "--out", str(r["root"] / f"bad-{which}")])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert needle in err and len(err.splitlines()) == 1, err


def test_scale_vs_noise_rejects_a_wrong_transformer_result(results, tmp_path):
    from iclsim.engine import store

    linear = store.load_result(results["linear"])
    parity = store.load_result(results["parity"])
    with pytest.raises(ValueError, match="transformer result: expected a transformer"):
        compare.scale_vs_noise(linear, parity, tmp_path, ("png",), transformer_ds=parity)
