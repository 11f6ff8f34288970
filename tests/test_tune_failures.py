"""Tune retries a trial only after an infrastructure failure, never after a deterministic error."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import ray
from ray import tune
from ray.exceptions import (
    ActorDiedError,
    NodeDiedError,
    OwnerDiedError,
    RayActorError,
    RayTaskError,
)

from marl_bft_rllib import tune as bft_tune

# Ray workers cannot import this test module: ship its classes by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _task_error(cause: BaseException) -> RayTaskError:
    """``cause`` as ``ray.get`` raises it from a failed task."""
    return RayTaskError("f", "Traceback ...", cause).as_instanceof_cause()


def _init_error(last_line: str) -> ActorDiedError:
    """An actor whose constructor raised, as RLlib sees a remote env runner built badly."""
    ctor = RayTaskError("SingleAgentEnvRunner.__init__", f"Traceback ...\n{last_line}", None)
    return ActorDiedError(ctor)


@pytest.mark.parametrize(
    "error, infrastructure",
    [
        (ValueError("lr must be > 0"), False),
        (TypeError("bad type"), False),
        (_task_error(ValueError("bad env config")), False),
        (_init_error("ValueError: horizon must be >= 1"), False),
        # A constructor that failed because an actor it built failed in its constructor.
        (_init_error("ray.exceptions.ActorDiedError: ... creation task\nValueError: bad"), False),
        (RayActorError(), True),
        (ActorDiedError(), True),
        (NodeDiedError("node lost"), True),
        (OwnerDiedError("ff" * 28, "", ""), True),
        (_task_error(RayActorError()), True),
        (_init_error("ray.exceptions.OwnerDiedError: owner died"), True),
    ],
)
def test_is_infrastructure_error(error: BaseException, infrastructure: bool) -> None:
    assert bft_tune.is_infrastructure_error(error) is infrastructure
    assert bft_tune.error_kind(error) == ("infrastructure" if infrastructure else "deterministic")


def test_error_raised_from_an_infrastructure_failure_is_infrastructure() -> None:
    error = RuntimeError("sampling failed")
    error.__cause__ = NodeDiedError("node lost")  # raise ... from NodeDiedError
    assert bft_tune.is_infrastructure_error(error)


def test_describe_error_names_the_user_exception() -> None:
    assert bft_tune.describe_error(_task_error(ValueError("bad"))) == "ValueError: bad"
    assert bft_tune.describe_error(_init_error("ValueError: bad env")) == "ValueError: bad env"
    assert bft_tune.describe_error(NodeDiedError("node lost")) == "NodeDiedError: node lost"
    assert bft_tune.describe_error(None) is None


class _Scripted(tune.Trainable):
    """Fails as ``config["fail"]`` says; each attempt (actor start) leaves a file in ``dir``."""

    def setup(self, config: dict[str, Any]) -> None:
        self.dir = Path(config["dir"])
        attempt = len(list(self.dir.glob("attempt_*")))
        (self.dir / f"attempt_{attempt}").touch()
        self.attempt = attempt

    def step(self) -> dict[str, Any]:
        fail = self.config["fail"]
        if fail == "value_in_step":
            raise ValueError("bad config: lr must be > 0")
        if fail == "actor_once" and self.attempt == 0:
            raise RayActorError(error_msg="env runner actor died")
        if fail == "exit_once" and self.attempt == 0:
            os._exit(1)  # the trial's own process dies, as on a lost node
        return {"eval_f1": 0.5, "eval_f1_last": 0.5}

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        Path(checkpoint_dir, "state").write_text(str(self.iteration))

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        pass


class _Trainable(bft_tune.NoRetryOnDeterministicErrors, _Scripted):
    """The scripted trainable behind the project's retry rule."""


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _run_config(tmp_path: Path, name: str, max_failures: int) -> tune.RunConfig:
    """The project's RunConfig (retry rule included) for a 1-iteration run, quiet."""
    run = bft_tune.run_config(
        name,
        str(tmp_path / "storage"),
        stop=bft_tune.build_stopper(
            stop_iters=1, stop_timesteps=10**9, time_budget_s=600.0, target_f1=1.0
        ),
        keep_checkpoints=1,
        max_failures=max_failures,
        space={},
    )
    run.verbose = 0
    return run


def _tune_failures(result: tune.Result) -> int:
    """How many failures Tune recorded for the trial (one entry each in its error.txt)."""
    error_file = Path(result.path, "error.txt")
    return error_file.read_text().count("Failure # ") if error_file.exists() else 0


# A deterministic error in setup: the real PPO trainable below (its env fails to build).
SCRIPTS = ("value_in_step", "actor_once", "exit_once")


@pytest.fixture(scope="module")
def scripted(ray_session, tmp_path_factory) -> dict[str, tuple[tune.Result, int, int]]:
    """One experiment, a trial per script (max_failures=2): its result, attempts (actor
    starts, counted by the trainable) and the failures Tune recorded."""
    tmp_path = tmp_path_factory.mktemp("scripted")
    for fail in SCRIPTS:
        (tmp_path / fail).mkdir()
    param_space = {
        "fail": tune.grid_search(list(SCRIPTS)),
        "dir": tune.sample_from(lambda spec: str(tmp_path / spec.config["fail"])),
    }
    run = _run_config(tmp_path, "scripted", max_failures=2)
    grid = tune.Tuner(_Trainable, param_space=param_space, run_config=run).fit()
    out = {}
    for result in grid:  # result.config is None for a trial that never reported
        (fail,) = [f for f in SCRIPTS if f"fail={f}" in Path(result.path).name]
        attempts = len(list((tmp_path / fail).glob("attempt_*")))
        out[fail] = (result, attempts, _tune_failures(result))
    return out


def test_deterministic_error_is_tried_once_and_reported(scripted) -> None:
    result, attempts, failures = scripted["value_in_step"]
    assert attempts == 1 and failures == 1, (attempts, failures)  # max_failures=2: no retry
    assert result.error is not None  # the trial ended in ERROR
    line = bft_tune.describe_error(result.error)
    assert line == "ValueError: bad config: lr must be > 0", line
    (report,) = bft_tune.failure_report([result])
    assert "deterministic, not retried" in report and line in report


@pytest.mark.parametrize("fail", ["actor_once", "exit_once"])
def test_infrastructure_failure_is_retried(scripted, fail) -> None:
    result, attempts, failures = scripted[fail]
    assert attempts == 2 and failures == 1, (attempts, failures)
    assert result.error is None and result.metrics["training_iteration"] == 1


@pytest.mark.parametrize("num_env_runners", [0, 1])
def test_bad_env_config_in_a_ppo_trial_is_not_retried(
    ray_session, tmp_path, num_env_runners: int
) -> None:
    """The real trainable rejects the sampled env config with the env's own error, also
    when the env runners are remote actors (RLlib alone would then raise an IndexError)."""
    import marl_bft_rllib

    marl_bft_rllib.register()
    config = bft_tune.build_config(
        {"horizon": 50},
        training={"train_batch_size_per_learner": 64, "minibatch_size": 32, "num_epochs": 1},
        eval_interval=1,
        eval_episodes=1,
        num_env_runners=num_env_runners,
        model={"fcnet_hiddens": [8]},
    )
    param_space = config.to_dict()
    param_space["env_config"]["horizon"] = 0  # as a search space could sample it
    run = _run_config(tmp_path, f"bad_env_{num_env_runners}", max_failures=2)
    (result,) = list(tune.Tuner(bft_tune.PPO, param_space=param_space, run_config=run).fit())
    assert _tune_failures(result) == 1
    assert (
        bft_tune.describe_error(result.error)
        == "ValueError: horizon: expected an integer >= 1, got 0"
    )
