"""EV ceiling: how much of the true return's variance a perfect critic could explain.

For each fixed policy, plays ``--episodes`` episodes of the default scenario with a long
horizon (``--horizon`` 1000, ``time_limit`` left at its default) and, for every honest
replica and every step t < ``--max-t``, records its observation, the env's global
``state()`` at that observation, and the TRUE discounted return
G_t = sum_k gamma^k r_{t+k} to the end of the episode (exact after a breach; the tail cut
by the horizon is below gamma^800 of a reward). Episodes are split 80 / 20 (fixed seed);
a small MLP (2 x 128 tanh, Adam, early stopping on 15% of the training episodes) and a
ridge least-squares probe are fitted from obs -> G and from [obs | state] -> G. Reported:
held-out R^2 = 1 - Var(G - pred) / Var(G), the EV ceiling of a critic with those inputs.
Inputs and the target are standardised inside this offline probe: it is a measurement,
not the learner (the learner never normalises its value targets).

Policies: ``random`` (an early policy), ``threshold`` (``ThresholdDetector`` fitted on
training seeds 0..19, a mid policy), ``checkpoint`` (greedy argmax of a trained RLModule,
``--checkpoint PATH``, module ``--module`` for every agent). Episodes use held-out seeds
from ``HELD_OUT_SEED_OFFSET + 100_000 * --seed``.

    python benchmarks/value_ceiling.py                      # random + threshold, 300 episodes
    python benchmarks/value_ceiling.py --policy checkpoint --checkpoint PATH
    python benchmarks/value_ceiling.py --episodes 30 --horizon 400 --out /tmp/ceiling.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from marl_bft_rllib.env import STATE_INFO_KEY, BFTSecurityEnv  # noqa: E402
from marl_bft_rllib.env_config import HELD_OUT_SEED_OFFSET  # noqa: E402
from marl_bft_rllib.evaluation import (  # noqa: E402
    Policy,
    ThresholdDetector,
    greedy_policy,
    held_out_seeds,
    random_policy,
)
from marl_bft_rllib.metrics import explained_variance  # noqa: E402
from marl_bft_rllib.rllib.returns import discounted_cumsum  # noqa: E402

POLICIES = ("random", "threshold", "checkpoint")
RESULTS = Path(__file__).resolve().parent / "results" / "value_ceiling.json"


def make_policy(name: str, args: argparse.Namespace, env_config: dict[str, Any]) -> Policy:
    """The fixed policy ``name`` (random, threshold or checkpoint)."""
    if name == "random":
        return random_policy(args.seed)
    if name == "threshold":
        return ThresholdDetector.fit(env_config, range(20))  # training seeds < held-out offset
    if name == "checkpoint":  # an algorithm checkpoint or its rl_module directory
        from ray.rllib.core.rl_module.multi_rl_module import MultiRLModule

        from marl_bft_rllib.rllib.inference import logits_fn

        path = args.checkpoint / "learner_group" / "learner" / "rl_module"
        multi = MultiRLModule.from_checkpoint(str(path if path.is_dir() else args.checkpoint))
        module = multi[args.module]
        module.eval()
        return greedy_policy({args.module: logits_fn(module)}, lambda agent: args.module)
    raise ValueError(f"policy: unknown {name!r}")


def rollout(
    policy: Policy, env_config: dict[str, Any], seeds: list[int], max_t: int, gamma: float
) -> dict[str, np.ndarray]:
    """Play one episode per seed; per (agent, t < max_t): obs, state, true return, episode."""
    env = BFTSecurityEnv(env_config)
    obs_l, state_l, g_l, ep_l, breaches = [], [], [], [], 0
    for i, seed in enumerate(seeds):
        obs, infos = env.reset(seed=seed)
        agents = list(env.agents)
        o_ep, s_ep, r_ep = ({a: [] for a in agents} for _ in range(3))
        while env.agents:
            if env.t < max_t:
                for a in agents:
                    o_ep[a].append(obs[a])
                    s_ep[a].append(infos[a][STATE_INFO_KEY])
            obs, rewards, _, _, infos = env.step(dict(policy(obs)))
            for a in agents:
                r_ep[a].append(rewards[a])
        # Not the terminated flag: with time_limit="episodic" the horizon is terminal too.
        breaches += bool(next(iter(infos.values()))["episode_metrics"]["breached"])
        for a in agents:
            n = len(o_ep[a])
            obs_l.append(np.stack(o_ep[a]))
            state_l.append(np.stack(s_ep[a]))
            rewards = np.asarray(r_ep[a], dtype=np.float64)  # to the episode's end
            g = discounted_cumsum(rewards, np.array([rewards.size]), np.zeros(1), gamma)
            g_l.append(g[:n])
            ep_l.append(np.full(n, i))
    env.close()
    return {
        "obs": np.concatenate(obs_l).astype(np.float32),
        "state": np.concatenate(state_l).astype(np.float32),
        "g": np.concatenate(g_l),
        "episode": np.concatenate(ep_l),
        "breach_fraction": np.asarray(breaches / len(seeds)),
    }


def ridge_r2(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray) -> float:
    """Held-out R^2 of ridge least squares (standardised x, small penalty, free bias)."""
    mu, sd = x[train].mean(0), x[train].std(0) + 1e-8
    z = np.hstack([(x - mu) / sd, np.ones((len(x), 1))]).astype(np.float64)
    penalty = 1e-3 * len(z[train]) * np.eye(z.shape[1])
    penalty[-1, -1] = 0.0
    w = np.linalg.solve(z[train].T @ z[train] + penalty, z[train].T @ y[train])
    return explained_variance(y[test], z[test] @ w)


def mlp_r2(
    x: np.ndarray, y: np.ndarray, fit: np.ndarray, val: np.ndarray, test: np.ndarray, seed: int
) -> tuple[float, int]:
    """Held-out R^2 of a 2 x 128 tanh MLP with early stopping on ``val``; and its epochs."""
    torch.manual_seed(seed)
    mu, sd = x[fit].mean(0), x[fit].std(0) + 1e-8
    y_mu, y_sd = y[fit].mean(), y[fit].std()
    xt = torch.as_tensor((x - mu) / sd, dtype=torch.float32)
    yt = torch.as_tensor((y - y_mu) / y_sd, dtype=torch.float32)
    net = nn.Sequential(
        nn.Linear(x.shape[1], 128), nn.Tanh(), nn.Linear(128, 128), nn.Tanh(), nn.Linear(128, 1)
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    fit_t, val_t = torch.as_tensor(fit), torch.as_tensor(val)
    best, best_state, best_epoch = np.inf, None, 0
    for epoch in range(1, 201):
        for idx in fit_t[torch.randperm(len(fit_t))].split(512):
            loss = ((net(xt[idx]).squeeze(-1) - yt[idx]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            val_loss = float(((net(xt[val_t]).squeeze(-1) - yt[val_t]) ** 2).mean())
        if val_loss < best:
            best, best_epoch = val_loss, epoch
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
        elif epoch - best_epoch >= 10:
            break
    net.load_state_dict(best_state)
    with torch.no_grad():
        pred = net(xt[torch.as_tensor(test)]).squeeze(-1).numpy() * y_sd + y_mu
    return explained_variance(y[test], pred), best_epoch


def measure(data: dict[str, np.ndarray], episodes: int, seed: int) -> dict[str, Any]:
    """Split by episode (68 / 12 / 20 fit / val / test) and fit every probe on both inputs."""
    order = np.random.default_rng(seed).permutation(episodes)
    n_test, n_val = max(1, round(0.2 * episodes)), max(1, round(0.12 * episodes))
    ep = data["episode"]
    test = np.flatnonzero(np.isin(ep, order[:n_test]))
    val = np.flatnonzero(np.isin(ep, order[n_test : n_test + n_val]))
    fit = np.flatnonzero(np.isin(ep, order[n_test + n_val :]))
    train = np.concatenate([fit, val])
    g = data["g"]
    out: dict[str, Any] = {
        "samples": len(g),
        "test_samples": len(test),
        "mean_g": float(g.mean()),
        "var_g": float(g[test].var()),
        "breach_fraction": float(data["breach_fraction"]),
    }
    inputs = {"obs": data["obs"], "obs_state": np.hstack([data["obs"], data["state"]])}
    for name, x in inputs.items():
        out[f"r2_mlp_{name}"], out[f"epochs_mlp_{name}"] = mlp_r2(x, g, fit, val, test, seed)
        out[f"r2_linear_{name}"] = ridge_r2(x, g, train, test)
    return out


def main() -> None:
    """Roll out each policy, fit the probes, print the table and write the results JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", nargs="+", default=["random", "threshold"], choices=POLICIES)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--module", default="shared", help="module id acting for every agent")
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--horizon", type=int, default=1000)
    parser.add_argument("--max-t", type=int, default=200, help="keep states t < max-t")
    parser.add_argument("--gamma", type=float, default=0.99)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if "checkpoint" in args.policy and args.checkpoint is None:
        parser.error("--policy checkpoint needs --checkpoint PATH")
    torch.set_num_threads(1)
    env_config = {"horizon": args.horizon}
    seeds = held_out_seeds(args.episodes, HELD_OUT_SEED_OFFSET + 100_000 * args.seed)
    policies = {name: make_policy(name, args, env_config) for name in args.policy}
    results: dict[str, dict[str, Any]] = {}
    for name, policy in policies.items():
        t0 = time.perf_counter()
        data = rollout(policy, env_config, seeds, args.max_t, args.gamma)
        t1 = time.perf_counter()
        results[name] = measure(data, args.episodes, args.seed)
        results[name].update(rollout_s=t1 - t0, fit_s=time.perf_counter() - t1)
        print(name, {k: round(v, 3) for k, v in results[name].items()}, flush=True)
    report = {
        "benchmark": "value_ceiling",
        "command": "python benchmarks/value_ceiling.py " + " ".join(sys.argv[1:]),
        "args": {k: str(v) for k, v in vars(args).items()},
        "env_config": env_config,
        "machine": platform.platform(),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(
        f"{'policy':<11} {'episodes':>8} {'samples':>8} {'Var(G)':>9} {'R2 obs':>7} "
        f"{'R2 obs+st':>9} {'lin obs':>7} {'lin obs+st':>10}"
    )
    for name, r in results.items():
        print(
            f"{name:<11} {args.episodes:>8} {r['samples']:>8} {r['var_g']:>9.1f} "
            f"{r['r2_mlp_obs']:>7.3f} {r['r2_mlp_obs_state']:>9.3f} "
            f"{r['r2_linear_obs']:>7.3f} {r['r2_linear_obs_state']:>10.3f}"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
