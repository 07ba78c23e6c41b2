"""The shared training engine: pure, scanned, vmappable trainers.

A trainer is built once per static shape from two pure functions

* ``init_params(key, hyper, data) -> params`` — a dict pytree whose ``"weights"``
  entry is trained; every other entry (masks, …) is carried along frozen;
* ``loss(params, key, hyper, data) -> scalar`` — the training objective for one
  step (``key`` is that step's data key; population objectives ignore it);

and gives

* ``init(key, hyper, data) -> TrainState``
* ``run(state, hyper, data, n_steps) -> (state, losses)`` — ``n_steps`` Adam steps
  under ``lax.scan`` (``n_steps`` static), resumable: the per-step data key is
  ``fold_in(state.key, step)`` and the learning-rate schedule reads the
  optimizer's step count, so running 3 chunks equals running once, bitwise;
* ``train(key, hyper, data) -> (params, metrics)`` — init then all steps.

``hyper`` is a pytree of per-run traced values (learning rate, rank, init scale,
noise levels, …); ``data`` is shared by all runs.  Everything is pure, so
``jax.vmap(train, in_axes=(0, 0, None))`` trains a whole grid of runs in one
compiled program.  The learning rate is ``hyper["learning_rate"]`` (traced), fed
to optax's Adam through ``optax.inject_hyperparams``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from iclsim._validation import check_in_range, check_int

__all__ = ["TrainState", "Trainer", "ScheduleConfig", "build_trainer", "trace_count"]

_TRACES = {"count": 0}


def trace_count() -> int:
    """How many times a trainer body has been traced (== compiled) in this process."""
    return _TRACES["count"]


SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class ScheduleConfig:
    """Static learning-rate schedule: ``lr(s) = lr₀ · f(s / steps)``.

    ``"constant"``: f = 1.  ``"cosine"``: cosine decay from 1 to
    ``final_fraction`` over ``steps`` (optional linear ``warmup`` steps first).
    """

    kind: str = "cosine"
    steps: int = 1000
    final_fraction: float = 0.01
    warmup: int = 0

    def __post_init__(self):
        if self.kind not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.kind!r}")
        check_int("steps", self.steps, 1)
        check_in_range("final_fraction", self.final_fraction, 0.0, 1.0)
        check_int("warmup", self.warmup, 0, self.steps)

    def factor(self, count, phases=1):
        """Multiplier f at optimizer step ``count`` (traced int).

        With ``phases`` > 1 (may be traced) the cosine restarts at the start of
        each of ``phases`` equal phases of the run (staged protocols).
        """
        count = jnp.asarray(count, jnp.result_type(float))
        if self.kind == "constant":
            f = jnp.ones_like(count)
        else:
            decay_len = jnp.maximum((self.steps - self.warmup) // jnp.maximum(phases, 1), 1)
            since = count - self.warmup
            frac = jnp.mod(since, decay_len) / decay_len
            frac = jnp.where(since < 0, 0.0, jnp.where(since >= decay_len * phases, 1.0, frac))
            f = self.final_fraction + (1 - self.final_fraction) * 0.5 * (1 + jnp.cos(jnp.pi * frac))
        if self.warmup > 0:
            f = f * jnp.minimum(1.0, (count + 1.0) / self.warmup)
        return f


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    key: jax.Array
    step: jax.Array
    weight_sum: Any
    """Running sum of the weights over the averaging tail (zeros when off)."""


class Trainer(NamedTuple):
    init: Callable
    run: Callable
    train: Callable
    steps: int
    averaged_params: Callable


def _optimizer(hyper, schedule: ScheduleConfig, schedule_phases=None, b1=0.9):
    lr0 = hyper["learning_rate"]
    phases = 1 if schedule_phases is None else schedule_phases(hyper)
    return optax.inject_hyperparams(optax.adam, static_args=("b1",))(
        learning_rate=lambda count: lr0 * schedule.factor(count, phases), b1=b1
    )


def build_trainer(
    init_params: Callable,
    loss: Callable,
    *,
    steps: int,
    schedule: ScheduleConfig | None = None,
    average_tail: float = 0.0,
    before_step: Callable | None = None,
    grad_transform: Callable | None = None,
    schedule_phases: Callable | None = None,
    update_transform: Callable | None = None,
    adam_b1: float = 0.9,
) -> Trainer:
    """Build the pure trainer for one static shape (see the module docstring).

    ``steps`` is the total number of steps of ``train`` and the length the
    schedule is laid out over.  ``average_tail`` in [0, 1) turns on
    Polyak–Ruppert iterate averaging: the weights returned by ``train`` (and by
    ``Trainer.averaged_params``) are the uniform average of the iterates of the
    last ``ceil(average_tail·steps)`` steps, which removes most of the gradient
    noise of fresh-prompt training.  The optimizer always runs on the raw iterate.

    Optional pure hooks for staged protocols (e.g. adding attention heads one at
    a time): ``before_step(params, step, hyper, data) -> params`` runs before
    each step (``step`` traced; it may re-initialise weights or change frozen
    entries such as masks), and ``grad_transform(grads, params, step, hyper) ->
    grads`` edits the gradient before Adam (e.g. freezes rows);
    ``schedule_phases(hyper)`` (traced int) restarts the cosine schedule in each of
    that many equal phases.
    ``update_transform(updates, params, step, hyper) -> updates`` edits the
    optimizer's update (e.g. zeroes frozen rows, which Adam's momentum would
    otherwise keep moving after their gradient is zeroed).  ``adam_b1`` is
    Adam's first-moment decay (0.9 by default; closer to 1 averages more steps of
    gradient noise, which matters when the signal-to-noise ratio is low).
    """
    steps = check_int("steps", steps, 1)
    check_in_range("average_tail", average_tail, 0.0, 1.0)
    if average_tail >= 1.0:
        raise ValueError(f"average_tail must be in [0, 1), got {average_tail}")
    tail_start = steps - int(np.ceil(average_tail * steps))
    schedule = schedule or ScheduleConfig(steps=steps)
    if schedule.steps != steps:
        raise ValueError(f"schedule.steps ({schedule.steps}) must equal steps ({steps})")

    def init(key, hyper, data):
        k_init, k_data = jax.random.split(key)
        params = init_params(k_init, hyper, data)
        opt_state = _optimizer(hyper, schedule, schedule_phases, adam_b1).init(params["weights"])
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params["weights"])
        return TrainState(params, opt_state, k_data, jnp.zeros((), jnp.int32), zeros)

    def run(state: TrainState, hyper, data, n_steps: int):
        if isinstance(state.step, jax.core.Tracer):
            _TRACES["count"] += 1
        opt = _optimizer(hyper, schedule, schedule_phases, adam_b1)

        def one_step(carry, _):
            params, opt_state, step, weight_sum = carry
            if before_step is not None:
                params = before_step(params, step, hyper, data)
            key = jax.random.fold_in(state.key, step)

            def objective(weights):
                return loss({**params, "weights": weights}, key, hyper, data)

            value, grads = jax.value_and_grad(objective)(params["weights"])
            if grad_transform is not None:
                grads = grad_transform(grads, params, step, hyper)
            updates, opt_state = opt.update(grads, opt_state, params["weights"])
            if update_transform is not None:
                updates = update_transform(updates, params, step, hyper)
            params = {**params, "weights": optax.apply_updates(params["weights"], updates)}
            if tail_start < steps:
                in_tail = (step >= tail_start).astype(value.dtype)
                weight_sum = jax.tree_util.tree_map(
                    lambda acc, w: acc + in_tail * w, weight_sum, params["weights"]
                )
            return (params, opt_state, step + 1, weight_sum), value

        carry = (state.params, state.opt_state, state.step, state.weight_sum)
        (params, opt_state, step, weight_sum), losses = jax.lax.scan(
            one_step, carry, None, length=n_steps
        )
        return TrainState(params, opt_state, state.key, step, weight_sum), losses

    def averaged_params(state: TrainState):
        """The final parameters: tail-averaged weights if averaging is on, else the iterate."""
        if tail_start >= steps:
            return state.params
        count = steps - tail_start
        weights = jax.tree_util.tree_map(lambda acc: acc / count, state.weight_sum)
        return {**state.params, "weights": weights}

    def train(key, hyper, data):
        state = init(key, hyper, data)
        state, losses = run(state, hyper, data, steps)
        return averaged_params(state), {"loss": losses}

    return Trainer(init=init, run=run, train=train, steps=steps, averaged_params=averaged_params)
