"""The setting contract: a third setting plugs in with its maths and model only; the engine's
grouping, named runs, scatter, verdicts, loss windows and best_scale, against independent
computations."""

import textwrap
import tomllib
from dataclasses import dataclass
from typing import NamedTuple

import jax
import numpy as np
import optax
import pytest
import xarray as xr

from iclsim.engine import setting as engine_setting
from iclsim.engine.config import (
    CommonAxes, CommonEval, CommonSweep, CommonTrain, apply_overrides, parse, spec,
)
from iclsim.engine.setting import Setting, best_scale, build_groups, tuning_word, window_loss
from iclsim.engine.sweep import run_sweep
from iclsim.engine.trainer import build_trainer
from iclsim.linear.sweep import LINEAR
from iclsim.parity.sweep import PARITY


# ------------------------------------------------------------------ a toy third setting
# In-context mean estimation: context y_i = w + ε_i, w ~ N(0, τ²), ε_i ~ N(0, σ²); the model
# ŷ = a · ȳ with a "scale" s that shrinks a to a·[s ≥ 1].  Risk of a: τ²(1 − a)² + a²σ²/N,
# minimised by a* = Nτ²/(Nτ² + σ²).  This is the whole setting: schema, model, assessment
# and oracle (what a new setting writes to plug into the engine).

@dataclass(frozen=True)
class MeanAxes(CommonAxes):
    width: tuple[int, ...] = spec((1,), "model scale (0: ŷ = 0)", lo=0, min_len=1)


@dataclass(frozen=True)
class MeanEval(CommonEval):
    noise: tuple[float, ...] = spec((1.0,), "evaluation context noise σ²", lo=0.0, min_len=1)


@dataclass(frozen=True)
class MeanConfig(CommonSweep):
    setting: str = spec("mean", "which setting", choices=("mean",))
    train: CommonTrain = CommonTrain()
    axes: MeanAxes = MeanAxes()
    eval: MeanEval = MeanEval()


class MeanStatic(NamedTuple):
    n_context: int
    steps: int


def _risk(a, n, noise):
    return (1.0 - a) ** 2 + a**2 * noise / n


class MeanSetting(Setting):
    name, kind, config_class, scale = "mean", "trained", MeanConfig, "width"
    run_axes = ("n_context", "width", "seed", "learning_rate", "init_scale")
    static_axes = ("n_context",)
    verdicts = ("optimum_reached", "not_converged", "diverged")

    def static(self, cfg, n_context):
        return MeanStatic(int(n_context), cfg.train.steps)

    def hyper(self, cfg, runs):
        return {"learning_rate": runs["learning_rate"], "init_scale": runs["init_scale"],
                "width": runs["width"].astype(float)}

    def trainer(self, static):
        n, steps = static

        def init(key, hyper, data):
            return {"weights": {"a": hyper["init_scale"] * jax.random.normal(key, ())}}

        def loss(params, key, hyper, data):
            a = params["weights"]["a"] * (hyper["width"] >= 1)
            return _risk(a, n, 1.0)

        return build_trainer(init, loss, steps=steps,
                             optimizer=lambda h: optax.sgd(h["learning_rate"]))

    def assess(self, cfg, static, runs, params, loss, key):
        a = np.asarray(params["weights"]["a"]) * (runs["width"] >= 1)
        n = static[0]
        target = np.where(runs["width"] >= 1, n / (n + 1.0), 0.0)
        ok = np.isfinite(a)
        verdict = np.where(~ok, "diverged", np.where(np.abs(a - target) < 1e-3,
                                                     "optimum_reached", "not_converged"))
        risk = np.stack([_risk(a, n, s) for s in cfg.eval.noise], axis=-1)
        return {"a": a, "verdict": verdict, "diverged": ~ok, "eval_risk": risk}

    def run_vars(self, cfg):
        return {"a": ((), {}), "eval_risk": (("noise",), {})}

    def oracle(self, cfg, coords):
        n = coords["n_context"][:, None, None]
        noise = np.asarray(cfg.eval.noise)[None, None, :]
        a = np.where(coords["width"][None, :, None] >= 1, n / (n + 1.0), 0.0)
        return ({"oracle_risk": (("n_context", "width", "noise"), _risk(a, n, noise)),
                 "trivial_risk": ((), 1.0)}, {"noise": np.asarray(cfg.eval.noise)}, {})

    def summary(self, ds):
        return str(best_scale(ds).values)


MEAN_TOML = textwrap.dedent(
    """
    name = "mean"
    setting = "mean"
    [train]
    steps = 200
    chunk_steps = 50
    loss_every = 10
    schedule = "constant"
    [axes]
    width = [0, 1]
    seeds = 2
    learning_rate = [0.3, 1e300]
    init_scale = [0.5]
    n_context = [3, 9]
    [eval]
    noise = [0.0, 1.0, 30.0]
    """
)


def test_settings_implement_the_protocol():
    for s in (LINEAR, PARITY, MeanSetting()):
        assert isinstance(s, Setting)
        engine_setting.check_setting(s)
    assert engine_setting.get_setting("linear") is LINEAR
    assert set(engine_setting.setting_names()) >= {"linear", "parity"}
    assert [engine_setting.get_setting(n).kind for n in ("linear", "parity", "llm")] == [
        "trained", "trained", "evaluated"]


def test_a_setting_missing_a_member_is_refused_at_register_in_one_line(monkeypatch):
    monkeypatch.setattr(engine_setting, "_REGISTRY", dict(engine_setting._REGISTRY))

    class Measured(MeanSetting):
        kind = "evaluated"  # declares no evaluate

    class Unscaled(MeanSetting):
        scale = "depth"

    for setting, message in (
            (Measured(), "setting 'toy': missing member 'evaluate' (required for kind='evaluated')"),
            (Unscaled(), "setting 'toy': scale ['depth'] not among run_axes "),
            (object(), "setting 'toy': object does not subclass iclsim.engine.setting.Setting")):
        with pytest.raises(TypeError) as err:
            engine_setting.register("toy", setting)
        assert str(err.value).startswith(message) and "\n" not in str(err.value)
    assert "toy" not in engine_setting.setting_names()
    engine_setting.register("toy", MeanSetting())
    assert engine_setting.get_setting("toy").name == "mean"


@pytest.fixture(scope="module")
def mean_result(tmp_path_factory):
    root = tmp_path_factory.mktemp("mean")
    cfg = parse(MeanConfig, apply_overrides(tomllib.loads(MEAN_TOML), [f"output_dir='{root}'"]))
    with pytest.warns(Warning, match="diverged"):
        return cfg, run_sweep(cfg, MeanSetting(), quiet=True)


def test_a_third_setting_runs_end_to_end(mean_result):
    cfg, out = mean_result
    ds = out.dataset
    assert ds["a"].dims == ("n_context", "width", "seed", "learning_rate", "init_scale")
    good = ds.sel(learning_rate=0.3, width=1)
    # Trained a against the closed form a* = N/(N + 1) (τ² = σ² = 1 in training).
    a = good["a"].transpose("n_context", ...).values.reshape(ds.n_context.size, -1)
    want = ds.n_context.values / (ds.n_context.values + 1.0)
    np.testing.assert_allclose(a, np.broadcast_to(want[:, None], a.shape), atol=1e-6)
    assert (good["verdict"] == "optimum_reached").all()
    assert ds["diverged"].sel(learning_rate=1e300, width=1).all()
    assert (ds["verdict"].sel(learning_rate=1e300, width=1) == "diverged").all()
    assert ds["loss"].sizes["step"] == 200 // 10
    assert out.compiles == 2  # one program per context length N (the static axis)


def test_best_scale_against_a_hand_computed_argmin(mean_result):
    _, out = mean_result
    ds = out.dataset
    best = best_scale(ds, tuning="pooled")
    assert best.attrs["tuning"] == "pooled"
    for n in ds.n_context.values:
        for noise in ds.noise.values:
            # independent: numpy over the finite runs of each width, then argmin with 0 → 1.0
            means = []
            for w in ds.width.values:
                cell = ds["eval_risk"].sel(n_context=n, width=w, noise=noise).values
                dead = ds["diverged"].sel(n_context=n, width=w).values
                means.append(np.mean(cell[~dead]))
            table = [1.0] + means
            want = [0, *ds.width.values][int(np.argmin(table))]
            assert float(best.sel(n_context=n, noise=noise)) == want
    # Large context noise makes ŷ = ȳ worse than the trained shrinkage only if a is large:
    # at N = 3, σ² = 30 the width-1 model (a = 3/4) has risk 0.0625 + 0.5625·10 > 1: best is 0.
    assert float(best.sel(n_context=3, noise=30.0)) == 0


def test_best_tuned_and_pooled_best_scale_disagree_as_numpy_says():
    """Rank 2 has one great and one terrible learning rate; rank 1 is mediocre at both.
    Best-tuned: rank 2 wins (its good learning rate); pooled: rank 1 wins (rank 2's bad one
    spoils its mean).  Checked against numpy written here, diverged seed left out."""
    rng = np.random.default_rng(0)
    risk = np.empty((2, 3, 2, 2))  # rank, seed, learning_rate, noise
    risk[0] = 1.0 + 0.01 * rng.standard_normal((3, 2, 2))           # rank 1: ~1 at both lrs
    risk[1, :, 0] = 0.2 + 0.01 * rng.standard_normal((3, 2))        # rank 2, lr 0: great
    risk[1, :, 1] = 9.0 + 0.01 * rng.standard_normal((3, 2))        # rank 2, lr 1: terrible
    risk[1, :, :, 1] += 2.0  # at the second noise level rank 2 is ~2.2 at best: rank 1 wins
    diverged = np.zeros((2, 3, 2), bool)
    diverged[1, 2, 0] = True  # one seed of the good lr diverged: left out
    risk[1, 2, 0] = np.nan
    ds = xr.Dataset(
        {"eval_risk": (("rank", "seed", "learning_rate", "noise"), risk),
         "diverged": (("rank", "seed", "learning_rate"), diverged),
         "trivial_risk": ((), 5.0)},
        coords={"rank": [1, 2], "seed": [0, 1, 2], "learning_rate": [0.01, 0.1],
                "noise": [0.0, 1.0]}, attrs={"scale_axis": "rank"})
    ok = ~diverged[..., None] & np.ones(risk.shape, bool)
    seed_mean = np.array([[[risk[r, ok[r, :, l, v], l, v].mean() for v in range(2)]
                           for l in range(2)] for r in range(2)])    # rank, lr, noise
    tuned = seed_mean.min(axis=1)                                     # rank, noise
    pooled = np.array([[risk[r, ..., v][ok[r, ..., v]].mean() for v in range(2)]
                       for r in range(2)])
    for table, tuning in ((tuned, "best"), (pooled, "pooled")):
        want = np.array([0, 1, 2])[np.argmin(np.vstack([[5.0, 5.0], table]), axis=0)]
        got = best_scale(ds, tuning=tuning)
        np.testing.assert_array_equal(got.transpose("noise").values, want)
        assert got.attrs["tuning"] == tuning
    assert list(best_scale(ds).values) == [2, 1]  # the default is best-tuned
    assert list(best_scale(ds, tuning="pooled").values) == [1, 1]
    assert "best-tuned" in tuning_word(best_scale(ds)) and "pooled" in tuning_word("pooled")
    with pytest.raises(ValueError, match="tuning"):
        best_scale(ds, tuning="mean")


def test_best_scale_is_nan_where_every_run_diverged():
    ds = xr.Dataset(
        {"eval_risk": (("rank", "seed"), np.array([[np.nan, 2.0], [np.nan, np.nan]])),
         "diverged": (("rank", "seed"), np.array([[True, False], [True, True]])),
         "trivial_risk": ((), 3.0)},
        coords={"rank": [1, 2], "seed": [0, 1]}, attrs={"scale_axis": "rank"})
    assert float(best_scale(ds)) == 1
    ds["diverged"][:] = True
    assert np.isnan(float(best_scale(ds)))


def test_groups_carry_named_runs_in_grid_order():
    raw = {"name": "g", "axes": {"rank": [1, 3], "seeds": 2, "learning_rate": [0.1, 0.2],
                                 "n_context": [4, 8]}, "spectrum": {"values": [2.0, 1.0, 0.5]}}
    cfg = parse(LINEAR.config_class, raw)
    groups = build_groups(cfg, LINEAR)
    assert len(groups) == 2
    shape = (2, 2, 2, 2, 1, 1)  # n_context, rank, seed, learning_rate, init_scale, σ₀²
    for gi, group in enumerate(groups):
        assert group.static.n_context == (4, 8)[gi]
        for row, rid in enumerate(group.run_id):
            n_i, r_i, s_i, lr_i, _, _ = np.unravel_index(rid, shape)
            assert n_i == gi
            assert group.runs["rank"][row] == (1, 3)[r_i] == group.hyper["rank"][row]
            assert group.runs["seed"][row] == s_i
            assert group.hyper["learning_rate"][row] == (0.1, 0.2)[lr_i]


def test_window_loss_against_a_loop():
    loss = np.arange(2 * 23, dtype=float).reshape(2, 23)
    got = window_loss(loss, 5)
    want = np.array([[loss[r, 5 * w:5 * w + 5].mean() for w in range(4)] for r in range(2)])
    np.testing.assert_array_equal(got, want)
