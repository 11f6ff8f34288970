"""experiments/: train_tune.py --smoke end to end, evaluate.py on its checkpoint, and errors."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from marl_bft_rllib.bft import ATTACKER_STRATEGIES, BEHAVIORS, VOTE_STRATEGIES
from marl_bft_rllib.rllib.health import EXPLODING
from marl_bft_rllib.tune import best_checkpoint, build_scheduler, build_stopper, search_spaces

REPO = Path(__file__).resolve().parent.parent
TRAIN = REPO / "experiments" / "train_tune.py"
EVALUATE = REPO / "experiments" / "evaluate.py"
MODULE_SUBDIR = Path("learner_group", "learner", "rl_module")


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args: str | Path, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
    )


@pytest.fixture(scope="module")
def train_mod() -> ModuleType:
    return _load(TRAIN)


@pytest.fixture(scope="module")
def eval_mod() -> ModuleType:
    return _load(EVALUATE)


# -- flags ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--stop-iters", "0"], "--stop-iters"),
        (["--num-samples", "many"], "--num-samples"),
        (["--target-f1", "1.5"], "--target-f1"),
        (["--gpus-per-learner", "-1"], "--gpus-per-learner"),
        (["--scheduler", "hyperband"], "--scheduler"),
        (["--search", "everything"], "--search"),
        (["--scenario", "nope"], "--scenario"),
        (["--scheduler", "pbt"], "--scheduler"),
        (["--num-learners", "0", "--gpus-per-learner", "2"], "--gpus-per-learner"),
        (["--name", "a/b"], "--name"),
        (["--scheduler", "asha", "--stop-iters", "2"], "--stop-iters"),
        (["--attacker-strategies", "silent"], "--attacker-strategies"),  # scripted
        (["--adversary", "learned", "--attacker-strategies", "silent,x"], "--attacker-strategies"),
        (["--adversary", "mixed", "--attacker-strategies", ""], "--attacker-strategies"),
        (["--env-config", "{p_drop: 0.1}"], "--env-config"),  # not JSON
        (["--env-config", "[0.1]"], "--env-config"),  # not an object
        (["--env-config", '{"p_dropp": 0.1}'], "--env-config"),  # no such field
        (["--env-config", '{"certificate": "most"}'], "--env-config"),
        (["--env-config", '{"adversary": "learned"}'], "--env-config"),  # has its own flag
        (["--env-config", '{"seed": 3}'], "--env-config"),
    ],
)
def test_bad_flags_name_the_flag(train_mod, tmp_path, capsys, argv, flag) -> None:
    with pytest.raises(SystemExit) as exc:
        train_mod.parse_args([*argv, "--storage-path", str(tmp_path)])
    assert exc.value.code == 2
    assert flag in capsys.readouterr().err


def test_resume_without_experiment_is_an_error(train_mod, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        train_mod.parse_args(["--resume", "--storage-path", str(tmp_path)])
    assert exc.value.code == 2
    assert "--resume" in capsys.readouterr().err


def test_smoke_and_search_flags_parse(train_mod, tmp_path) -> None:
    args = train_mod.parse_args(["--smoke", "--storage-path", str(tmp_path)])
    assert args.stop_iters == train_mod.SMOKE["stop_iters"]
    assert args.env_config["horizon"] == train_mod.SMOKE["env"]["horizon"]
    args = train_mod.parse_args(
        ["--smoke", "--stop-iters", "5", "--search", "full", "--scheduler", "pbt"]
        + ["--storage-path", str(tmp_path)]
    )
    assert args.stop_iters == 5  # an explicit flag wins over the smoke preset
    space = search_spaces()["full"]
    for key in ("lr", "entropy_coeff", "gamma", "lambda", "_train_batch_size_per_learner"):
        assert key in space
    assert "env_config/stl_weight" in space and "env_config/vote_weight" in space


def test_attacker_strategies_flag_reaches_the_env_config(train_mod, tmp_path) -> None:
    argv = ["--adversary", "learned", "--attacker-strategies", "vote_quarantine, silent"]
    args = train_mod.parse_args([*argv, "--storage-path", str(tmp_path)])
    assert args.env_config["attacker_strategies"] == ("vote_quarantine", "silent")
    args = train_mod.parse_args(["--adversary", "mixed", "--storage-path", str(tmp_path)])
    assert args.env_config["attacker_strategies"] == VOTE_STRATEGIES  # the measured default
    argv = ["--adversary", "learned", "--attacker-strategies", "all"]
    args = train_mod.parse_args([*argv, "--storage-path", str(tmp_path)])
    assert args.env_config["attacker_strategies"] == ATTACKER_STRATEGIES
    args = train_mod.parse_args(["--storage-path", str(tmp_path)])
    assert "attacker_strategies" not in args.env_config  # scripted: no learned attacker


def test_env_config_flag_overrides_the_scenario(train_mod, tmp_path) -> None:
    argv = ["--scenario", "no_byzantine", "--env-config", '{"certificate": "all_timely"}']
    args = train_mod.parse_args([*argv, "--storage-path", str(tmp_path)])
    assert args.env_config["certificate"] == "all_timely"
    assert args.env_config["n_byzantine"] == 0  # the preset's own fields stay
    argv = ["--smoke", "--env-config", '{"horizon": 90}']  # over the smoke preset too
    assert (
        train_mod.parse_args([*argv, "--storage-path", str(tmp_path)]).env_config["horizon"] == 90
    )


def test_resume_takes_the_flags_the_experiment_started_with(train_mod, tmp_path, capsys) -> None:
    argv = ["--smoke", "--scenario", "no_byzantine", "--stop-iters", "8"]
    argv += ["--env-config", '{"p_drop": 0.1}', "--storage-path", str(tmp_path), "--name", "exp"]
    started = train_mod.parse_args(argv)
    train_mod.write_record(started, tmp_path / "exp")
    (tmp_path / "exp" / "tuner.pkl").touch()  # what Tuner.can_restore looks for
    resumed = train_mod.parse_args(["--resume", "--storage-path", str(tmp_path)])
    assert (resumed.name, resumed.scenario, resumed.stop_iters) == ("exp", "no_byzantine", 8)
    assert resumed.smoke and resumed.env_config == started.env_config
    again = ["--resume", "--stop-iters", "8", "--smoke", "--storage-path", str(tmp_path)]
    assert train_mod.parse_args(again).stop_iters == 8  # the same values may be repeated
    changed = [("--stop-it", "50", "--stop-iters"), ("--scenario", "default", "--scenario")]
    for flag, value, named in [*changed, ("--env-config", "{}", "--env-config")]:
        with pytest.raises(SystemExit) as exc:  # Tune would not apply it: an error, not ignored
            train_mod.parse_args(["--resume", flag, value, "--storage-path", str(tmp_path)])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "the flags it started with" in err and named in err
    (tmp_path / "exp" / train_mod.RECORD).write_text("[1, 2]")  # not a record: one clear error
    with pytest.raises(SystemExit):
        train_mod.parse_args(["--resume", "--storage-path", str(tmp_path)])
    assert "--resume" in capsys.readouterr().err


@pytest.mark.parametrize("stop_iters", [4, 10, 100])
def test_asha_can_stop_a_trial_before_max_t(train_mod, tmp_path, stop_iters) -> None:
    args = train_mod.parse_args(
        ["--scheduler", "asha", "--stop-iters", str(stop_iters), "--storage-path", str(tmp_path)]
    )
    scheduler = build_scheduler(
        args.scheduler, {}, stop_iters=args.stop_iters, eval_interval=args.eval_interval
    )
    milestones = [rung[0] for rung in scheduler._brackets[0]._rungs]
    assert min(milestones) < stop_iters, milestones  # a rung before max_t can cut trials


def test_bad_flag_exits_2_before_ray_starts(tmp_path) -> None:
    proc = _run(TRAIN, "--eval-episodes", "0", "--storage-path", tmp_path, timeout=60)
    assert proc.returncode == 2
    assert "--eval-episodes" in proc.stderr
    assert "Started a local Ray instance" not in proc.stderr + proc.stdout


def test_gpu_request_without_gpus_fails_early(tmp_path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = _run(TRAIN, "--smoke", "--gpus-per-learner", "1", "--storage-path", tmp_path)
    assert proc.returncode == 2
    assert "--gpus-per-learner" in proc.stderr and "GPU" in proc.stderr.splitlines()[-1]


def test_stopper() -> None:
    budget = {"stop_iters": 10, "stop_timesteps": 1000, "time_budget_s": 60.0, "target_f1": 0.9}
    stop = build_stopper(**budget)
    base = {"training_iteration": 1, "num_env_steps_sampled_lifetime": 10, "time_total_s": 1.0}
    assert not stop("t", {**base, "eval_f1": float("nan")})
    assert not stop("t", {**base, "eval_f1": 0.89})
    assert stop("t", {**base, "eval_f1": 0.9})
    assert stop("t", {**base, "training_iteration": 10})
    assert stop("t", {**base, "num_env_steps_sampled_lifetime": 1000})
    assert stop("t", {**base, "time_total_s": 61.0})
    assert not stop("t", {"training_iteration": 1})  # a missing key never stops
    # The value-health stopper joins in only when asked for, after its grace iterations.
    exploding = {**base, "learners": {"shared": {"value_health": EXPLODING}}}
    health = build_stopper(**budget, value_health=True, health_grace_iters=2)
    assert not stop("t", {**exploding, "training_iteration": 3})
    assert health("t", {**exploding, "training_iteration": 3}) and not health("t", exploding)


def test_best_checkpoint_skips_iterations_without_evaluation(tmp_path) -> None:
    """Across trials whose last iteration had no evaluation (eval_f1 NaN), and the fallback."""
    import tempfile

    import ray
    from ray import tune

    nan = float("nan")
    series = {0: [nan, 0.5, nan, 0.7, nan], 1: [nan, 0.9, nan, 0.6, nan], 2: [nan, nan]}

    def trainable(config: dict) -> None:
        last = nan
        for f1 in series[config["k"]]:
            last = last if f1 != f1 else f1
            with tempfile.TemporaryDirectory() as d:
                checkpoint = tune.Checkpoint.from_directory(d)
                tune.report({"eval_f1": f1, "eval_f1_last": last}, checkpoint=checkpoint)

    def fit(ks: list[int], name: str):
        checkpoints = tune.CheckpointConfig(
            num_to_keep=2, checkpoint_score_attribute="eval_f1", checkpoint_score_order="max"
        )
        run = tune.RunConfig(
            name=name, storage_path=str(tmp_path), checkpoint_config=checkpoints, verbose=0
        )
        return tune.Tuner(trainable, param_space={"k": tune.grid_search(ks)}, run_config=run).fit()

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        results = fit([0, 1, 2], "scored")
        path, f1 = best_checkpoint(results)
        trial = next(r for r in results if r.config["k"] == 1)
        assert f1 == 0.9 and Path(path) == Path(trial.path, "checkpoint_000001"), path
        path, f1 = best_checkpoint(fit([2], "unscored"))  # nothing scored: the latest one
        assert path is not None and Path(path).name == "checkpoint_000001" and f1 != f1
    finally:
        if started:
            ray.shutdown()


# -- smoke run --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> dict:
    storage = tmp_path_factory.mktemp("tune")
    proc = _run(TRAIN, "--smoke", "--storage-path", storage, "--name", "smoke")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1].split()
    assert last[0] == "BEST_CHECKPOINT" and last[2] == "EVAL_F1", last
    return {
        "storage": storage,
        "exp_dir": storage / "smoke",
        "checkpoint": Path(last[1]),
        "eval_f1": float(last[3]),
        "stdout": proc.stdout,
    }


def test_smoke_leaves_a_checkpoint_and_results(smoke) -> None:
    ckpt = smoke["checkpoint"]
    assert ckpt.is_dir() and ckpt.is_relative_to(smoke["exp_dir"])
    assert (ckpt / MODULE_SUBDIR / "shared").is_dir()
    assert 0.0 <= smoke["eval_f1"] <= 1.0
    assert (ckpt.parent / "progress.csv").is_file()
    summary = json.loads((smoke["exp_dir"] / "summary.json").read_text())
    assert summary["best_checkpoint"] == str(ckpt)
    assert (smoke["exp_dir"] / "results.csv").is_file()
    # The compact progress table was printed with the value-health columns.
    assert "last eval F1" in smoke["stdout"] and "V health" in smoke["stdout"]


def test_experiment_dir_resolves_to_best_checkpoint(smoke, eval_mod) -> None:
    assert eval_mod.resolve_checkpoint(smoke["exp_dir"]) == smoke["checkpoint"]
    assert eval_mod.resolve_checkpoint(smoke["checkpoint"]) == smoke["checkpoint"]


def test_evaluate_writes_report_and_plots(smoke, tmp_path) -> None:
    out = tmp_path / "eval"
    proc = _run(
        EVALUATE,
        "--checkpoint",
        smoke["checkpoint"],
        "--episodes",
        "2",
        "--train-seeds",
        "2",
        "--robustness-episodes",
        "1",
        "--env-config",
        '{"certificate": "all_timely"}',
        "--out",
        out,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["env_config"]["certificate"] == "all_timely"  # --env-config, over:
    for key in ("tp", "tn", "fp", "fn", "precision", "recall", "f1", "views", "messages"):
        assert key in report["policy"], key
    assert any(k.startswith("stl_") and k.endswith("_satisfied") for k in report["policy"])
    assert set(report["baselines"]) == {"always_allow", "threshold", "single_replica", "supervised"}
    assert report["episodes"] == 2
    assert report["env_config"]["horizon"] == 150  # the training env_config from the trial
    m = report["confusion_matrix"]["policy"]
    total = sum(ep["length"] for ep in report["per_episode"])
    assert sum(map(sum, m)) == total
    assert (out / "confusion_matrix.png").stat().st_size > 0
    assert (out / "learning_curve.png").stat().st_size > 0
    assert "Confusion matrix" in proc.stdout and "always_allow" in proc.stdout


def test_learned_smoke_trains_both_sides_and_evaluate_reports_per_behaviour(tmp_path) -> None:
    storage = tmp_path / "tune"
    # a strategy subset: the attacker module's actions, which the "learned" case must keep
    subset = ["--attacker-strategies", "vote_allow,vote_quarantine,silent"]
    proc = _run(TRAIN, "--smoke", "--adversary", "learned", *subset, "--storage-path", storage)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ckpt = Path(proc.stdout.strip().splitlines()[-1].split()[1])
    assert {p.name for p in (ckpt / MODULE_SUBDIR).iterdir() if p.is_dir()} == {
        "shared",
        "attacker",
    }
    out = tmp_path / "eval"
    proc = _run(
        EVALUATE, "--checkpoint", ckpt, "--episodes", "1", "--train-seeds", "2",
        "--robustness-episodes", "1", "--out", out,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["env_config"]["adversary"] == "scripted"  # the main table: scripted replicas
    assert "attacker_strategies" not in report["env_config"]
    cases = report["robustness"]["cases"]
    assert set(cases) == {*BEHAVIORS, "none", "insider", "learned"}
    for scores in cases.values():
        assert set(scores) == {
            "bft_policy", "naive_majority", "random_replica", "honest_replica",
            "always_allow", "threshold",
        }  # fmt: skip
        assert 0.0 <= scores["bft_policy"]["f1"] <= 1.0
    assert set(report["robustness"]["worst"]) == set(next(iter(cases.values())))
    assert (out / "robustness.png").stat().st_size > 0
    assert "learned" in proc.stdout and "worst" in proc.stdout


def test_evaluate_errors_are_one_line(smoke, tmp_path) -> None:
    missing = _run(EVALUATE, "--checkpoint", tmp_path / "nope", timeout=60)
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [missing.stderr.strip()]
    assert "does not exist" in missing.stderr

    corrupt = tmp_path / "corrupt"
    shutil.copytree(smoke["checkpoint"], corrupt)
    for f in (corrupt / MODULE_SUBDIR / "shared").glob("module_state*"):
        if f.is_file():
            f.write_bytes(b"not a pickle")
    bad = _run(EVALUATE, "--checkpoint", corrupt, "--episodes", "1", timeout=60)
    assert bad.returncode == 1
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "checkpoint: cannot restore" in bad.stderr

    mismatch = _run(
        EVALUATE, "--checkpoint", smoke["checkpoint"], "--scenario", "large", timeout=60
    )
    assert mismatch.returncode == 1
    assert len(mismatch.stderr.strip().splitlines()) == 1, mismatch.stderr
    assert "--scenario" in mismatch.stderr and "observation shape" in mismatch.stderr

    field = _run(EVALUATE, "--checkpoint", smoke["checkpoint"], "--env-config", '{"p_dropp": 0}')
    assert field.returncode == 1
    assert len(field.stderr.strip().splitlines()) == 1, field.stderr
    assert "--env-config" in field.stderr and "p_dropp" in field.stderr
    for text in ("{p_drop: 0}", '{"seed": 1}'):  # not JSON; seeds have their own flag
        flag = _run(EVALUATE, "--checkpoint", smoke["checkpoint"], "--env-config", text)
        assert flag.returncode == 2 and "--env-config" in flag.stderr


# -- restored module == trained module -----------------------------------------------------------
def test_restored_greedy_actions_equal_trained(eval_mod, tmp_path) -> None:
    import ray
    import torch

    from marl_bft_rllib.env import BFTSecurityEnv
    from marl_bft_rllib.evaluation import greedy_policy
    from marl_bft_rllib.rllib import build_ppo_config
    from marl_bft_rllib.rllib.inference import logits_fn

    env_config = {"horizon": 32}
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=1, include_dashboard=False)
    try:
        config = build_ppo_config(env_config).training(
            train_batch_size_per_learner=64, minibatch_size=32, num_epochs=2
        )
        config.rl_module(model_config={**config.model_config, "fcnet_hiddens": [16]})
        algo = config.build_algo()
        algo.train()
        ckpt = Path(algo.save(str(tmp_path / "ckpt")).checkpoint.path)
        trained = algo.get_module("shared")
        fresh = config.build_algo().get_module("shared")
    finally:
        if started:
            ray.shutdown()

    env = BFTSecurityEnv(env_config)
    batch = []
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        while env.agents:
            batch.extend(obs.values())
            obs, *_ = env.step({a: int(o[0] > 0) * 2 for a, o in obs.items()})
    x = np.stack(batch)

    def logits(module) -> np.ndarray:
        with torch.no_grad():
            return module.forward_inference({"obs": torch.from_numpy(x)})[
                "action_dist_inputs"
            ].numpy()

    restored = eval_mod.load_modules(ckpt)
    assert list(restored) == ["shared"]
    got = logits_fn(restored["shared"])(x)
    want = logits(trained)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.array_equal(got.argmax(-1), want.argmax(-1))
    assert not np.allclose(logits(fresh), want)  # the comparison can tell modules apart
    # Through the evaluation policy: same greedy actions for every replica.
    obs = {f"replica_{i}": x[i] for i in range(4)}
    pol = greedy_policy({"shared": logits_fn(restored["shared"])}, lambda a: "shared")
    assert pol(obs) == {a: int(want[i].argmax()) for i, a in enumerate(obs)}
