"""The schema of a transformer sweep file (``setting = "transformer"``): ``[model]``,
``[train]``, ``[axes]``, ``[eval]`` on the engine's common fields
(:mod:`iclsim.engine.config`).  ``iclsim keys transformer`` lists every key."""

from __future__ import annotations

from dataclasses import dataclass

from iclsim.engine.config import CommonAxes, CommonEval, CommonSweep, CommonTrain, ConfigError, spec
from iclsim.linear.sweep import SpectrumConfig

__all__ = ["ModelConfig", "TrainConfig", "AxesConfig", "EvalConfig", "TransformerSweepConfig",
           "DEFAULT_NOISE"]

DEFAULT_NOISE = (0.0, 4.0, 8.0, 16.0, 25.0, 40.0, 60.0, 100.0)


@dataclass(frozen=True)
class ModelConfig:
    heads: tuple[int, ...] = spec((1, 2, 4, 8), "heads h of size 1, 2, … (zipped with width "
                                  "and layers)", lo=1, hi=256, min_len=1)
    width: tuple[int, ...] = spec((16, 16, 16, 16), "d_model of each size", lo=1, hi=4096,
                                  min_len=1)
    layers: tuple[int, ...] = spec((1, 1, 1, 1), "layers L of each size", lo=1, hi=64,
                                   min_len=1)
    head_dim: int = spec(1, "dimension of every head (attention width h · head_dim)", lo=1,
                         hi=512)
    mlp_ratio: int = spec(4, "MLP hidden width = mlp_ratio · d_model", lo=1, hi=16)

    def __post_init__(self):
        if not len(self.heads) == len(self.width) == len(self.layers):
            raise ConfigError(f"model: heads, width and layers must have equal lengths (one "
                              f"entry per size), got {len(self.heads)}, {len(self.width)}, "
                              f"{len(self.layers)}")

    def sizes(self):
        return list(zip(self.heads, self.width, self.layers))


@dataclass(frozen=True)
class TrainConfig(CommonTrain):
    steps: int = spec(2000, "optimizer steps per run", lo=1, hi=10_000_000)
    batch: int = spec(64, "fresh prompts per step", lo=1, hi=1_000_000)
    warmup_steps: int = spec(200, "linear learning-rate warm-up", lo=0)
    weight_decay: float = spec(0.0, "AdamW weight decay", lo=0.0, hi=1.0)
    clip_norm: float = spec(1.0, "global gradient-norm clip (0: off)", lo=0.0)
    adam_b1: float = spec(0.9, "Adam β1", lo=0.0, hi=0.9999)
    adam_b2: float = spec(0.999, "Adam β2", lo=0.0, hi=0.99999)
    average_tail: float = spec(0.0, "Polyak average over this final fraction of steps",
                               lo=0.0, hi=0.99)


@dataclass(frozen=True)
class AxesConfig(CommonAxes):
    size: tuple[int, ...] = spec((1, 2, 3, 4), "model sizes: 1-based indices into [model] "
                                 "heads/width/layers (0 is reserved for ŷ = 0)", lo=1,
                                 min_len=1)
    learning_rate: tuple[float, ...] = spec((1e-3,), "peak learning rates", lo=1e-12,
                                            min_len=1)
    init_scale: tuple[float, ...] = spec((1.0,), "init std multiplier (× 1/√fan-in)",
                                         lo=0.0, min_len=1)
    train_label_noise: tuple[float, ...] = spec((0.0,), "pretraining context label noise σ₀²",
                                                lo=0.0, hi=1e6, min_len=1)


@dataclass(frozen=True)
class EvalConfig(CommonEval):
    n_prompts: int = spec(8192, "held-out prompts per run and noise level", lo=2,
                          hi=1_000_000_000)
    batch: int = spec(512, "prompts per evaluation batch", lo=1, hi=1_000_000)
    label_noise: tuple[float, ...] = spec(DEFAULT_NOISE, "evaluation context label noise σ²",
                                          lo=0.0, hi=1e6, min_len=1)
    input_noise: tuple[float, ...] = spec((0.0,), "evaluation context input noise σ_x² (shown "
                                          "inputs x_i + ξ_i, ξ ~ N(0, σ_x² I); labels from the "
                                          "clean x_i)", lo=0.0, hi=1e6, min_len=1)
    ridge_lambda: tuple[float, ...] = spec((1.0, 10.0), "ridge λ of the reference predictors",
                                           lo=1e-12, hi=1e9, min_len=1)
    trivial_tolerance: float = spec(0.05, "verdict trivial: risk at the smallest σ² ≥ "
                                    "(1 − this) · tr Λ", lo=0.0, hi=1.0)
    converged_window: float = spec(0.2, "verdict converged: the final fraction of steps whose "
                                   "loss slope must be within 2 SE of 0", lo=0.01, hi=0.5)
    converged_tolerance: float = spec(0.03, "verdict converged: mean loss over the 10 % of "
                                      "steps before 80 % exceeds the final 10 %'s by at most "
                                      "this fraction (+ 2 SE)", lo=0.0, hi=1.0)
    level: float = spec(0.95, "confidence level of every interval and test", lo=0.5,
                        hi=0.999)
    n_boot: int = spec(2000, "bootstrap replicates (seeds resampled, Monte Carlo error "
                       "added)", lo=100, hi=100_000)


@dataclass(frozen=True)
class TransformerSweepConfig(CommonSweep):
    setting: str = spec("transformer", "which setting", choices=("transformer",))
    spectrum: SpectrumConfig = SpectrumConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    axes: AxesConfig = AxesConfig()
    eval: EvalConfig = EvalConfig()

    def __post_init__(self):
        k = len(self.model.heads)
        bad = [s for s in self.axes.size if s > k]
        if bad:
            raise ConfigError(f"axes.size: {bad[0]} is out of range; allowed 1..{k} (the "
                              "number of sizes in [model])")
        if self.train.warmup_steps >= self.train.steps:
            raise ConfigError(f"train.warmup_steps: {self.train.warmup_steps} must be below "
                              f"train.steps ({self.train.steps})")

    def axis_values(self) -> dict:
        from iclsim.engine.setting import axis_values, get_setting

        return axis_values(self, get_setting("transformer"))
