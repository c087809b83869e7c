"""
One rank of the data-parallel tests, launched (twice) by ``tests/test_distributed.py`` through ``torchrun``
(``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` and the elastic agent's variables set). Writes what
it saw to ``OUT/rank{RANK}.*``.

Usage: ``python tests/distributed_worker.py OUT``
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from gymnasium import Env
from sb3_contrib.common.envs import InvalidActionEnvMultiDiscrete
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from sb3_trpo_plugin import TRPO
from sb3_trpo_plugin.parallel import Collectives, is_distributed, world_size
from sb3_trpo_plugin.parallel.agreement import check_in_sync, merge_running_mean_std, running_mean_std_state
from tests.process_group_teardown import TEARDOWN_MAY_BLOCK, end_worker, print_stacks_if_stuck

#: Shared by the ranks and the single-process reference in the tests.
EQUIVALENCE_KWARGS = dict(
    n_steps=32,
    n_critic_updates=3,
    cg_max_steps=10,
    policy_kwargs=dict(net_arch=dict(pi=[16], vf=[16])),
    seed=0,
    device="cpu",
)
N_STEPS, N_ENVS = 32, 2
BUFFER_FIELDS = ("observations", "actions", "rewards", "returns", "episode_starts", "values", "log_probs", "advantages")


def multidiscrete_env() -> Env:
    """MultiDiscrete observations (integers in the rollout buffer, one-hot encoded by the policy) and actions."""
    return InvalidActionEnvMultiDiscrete(dims=[3, 4], n_invalid_actions=3)


#: The environments of the equivalence test (the env id or factory ``make_vec_env`` takes), by name.
EQUIVALENCE_ENVS = {"cartpole": "CartPole-v1", "multidiscrete": multidiscrete_env}


def state(model: TRPO) -> dict[str, np.ndarray]:
    return {name: tensor.detach().cpu().numpy().copy() for name, tensor in model.policy.state_dict().items()}


def equivalence_env(name: str, n_envs: int) -> VecEnv:
    """The equivalence test's environment ``name`` (a key of :data:`EQUIVALENCE_ENVS`), ``n_envs`` copies."""
    return make_vec_env(EQUIVALENCE_ENVS[name], n_envs=n_envs)


def equivalence(out: Path, rank: int, env_name: str, split_update: bool) -> dict:
    """
    One rollout per rank, one ``train()`` (split over ranks or averaged) in environment ``env_name``: the buffers and
    the weights before and after, in ``OUT/rank{RANK}_{env_name}_{split|averaged}.npz``.
    """
    env = equivalence_env(env_name, N_ENVS)
    model = TRPO("MlpPolicy", env, batch_size=N_STEPS * N_ENVS, **EQUIVALENCE_KWARGS)  # full-batch critic
    model.split_update = split_update
    before = state(model)
    _, callback = model._setup_learn(model.n_steps * model.n_envs, callback=None)
    callback.on_training_start(locals(), globals())
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=model.n_steps)
    buffer = {field: getattr(model.rollout_buffer, field) for field in BUFFER_FIELDS}
    model.train()
    arrays = {f"buffer/{k}": v for k, v in buffer.items()} | {f"before/{k}": v for k, v in before.items()}
    np.savez(
        out / f"rank{rank}_{env_name}_{'split' if split_update else 'averaged'}.npz",
        **arrays,
        **{f"after/{k}": v for k, v in state(model).items()},
    )
    return {"num_timesteps_after_one_rollout": model.num_timesteps, "policy_step_logged": dict(model.logger.name_to_value)}


def learning(out: Path, rank: int) -> dict:
    """A few updates with VecNormalize and TensorBoard: weights and statistics must agree on all ranks."""
    env = VecNormalize(make_vec_env("CartPole-v1", n_envs=N_ENVS))
    model = TRPO(
        "MlpPolicy",
        env,
        batch_size=32,
        stats_window_size=100_000,
        tensorboard_log=str(out / "tb"),
        verbose=1,
        **EQUIVALENCE_KWARGS,
    )
    model.sync_check_interval = 1
    all_reduces: list[str] = []
    assert model.collectives is not None
    model.collectives.observer = lambda operation, n_bytes, seconds: all_reduces.append(operation)
    model.learn(total_timesteps=4 * N_STEPS * N_ENVS * world_size())
    local_episodes = sum(len(rewards) for rewards in model.env.env_method("get_episode_rewards"))
    np.savez(
        out / f"rank{rank}_learning.npz",
        **{f"after/{k}": v for k, v in state(model).items()},
        obs_mean=env.obs_rms.mean,
        obs_var=env.obs_rms.var,
        ret_var=env.ret_rms.var,
    )
    return {
        "num_timesteps": model.num_timesteps,
        "n_updates": model._n_updates,
        "local_episodes": local_episodes,
        "buffered_episodes": len(model.ep_info_buffer),
        "obs_count": env.obs_rms.count,
        "verbose": model.verbose,
        "all_reduce_calls": len(all_reduces),
    }


class StopAfter(BaseCallback):
    """Counts its calls; asks to stop at the given call."""

    def __init__(self, calls: int):
        super().__init__()
        self.stop_at, self.calls = calls, 0

    def _on_step(self) -> bool:
        self.calls += 1
        return self.calls < self.stop_at


def callbacks(rank: int) -> dict:
    """Callbacks run on rank 0 only; its request to stop stops every rank."""
    model = TRPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=N_ENVS), batch_size=32, **EQUIVALENCE_KWARGS)
    callback = StopAfter(N_STEPS + 5)  # during the second rollout
    model.learn(total_timesteps=10 * N_STEPS * N_ENVS * world_size(), callback=callback)
    return {"callback_calls": callback.calls, "stopped_after_updates": model._n_updates}


def running_statistics(rank: int) -> dict:
    """Merge of RunningMeanStd: common start plus each rank's data equals the statistics of the union."""
    world, collectives = world_size(), Collectives()
    data = [np.random.default_rng(r).normal(r, 1.0 + r, size=(50 + 10 * r, 3)) for r in range(world + 1)]
    rms = RunningMeanStd(shape=(3,))
    rms.update(data[-1])  # the common start
    start = running_mean_std_state(rms)
    rms.update(data[rank])
    merge_running_mean_std(collectives, rms, start)
    union = RunningMeanStd(shape=(3,))
    union.update(data[-1])
    union.update(np.concatenate(data[:world]))
    # Advantage moments over ranks of different sizes, far from zero (cancellation-prone); and gathered rows.
    values = [
        torch.tensor(np.random.default_rng(10 + r).normal(1000.0 + r, 1e-2, size=40 + 7 * r), dtype=torch.float32)
        for r in range(world)
    ]
    mean, std = collectives.mean_std(values[rank])
    union64 = torch.cat(values).double()
    gathered = collectives.gather_rows(torch.full((2, 3), float(rank)))
    # Blocks of several dtypes gathered in one collective, each exactly (integers first, as a rollout's observations).
    blocks = [mixed_dtype_blocks(r) for r in range(world)]
    gathered_blocks = collectives.gather_row_blocks(blocks[rank])
    expected_blocks = [torch.cat(per_rank) for per_rank in zip(*blocks, strict=True)]
    return {
        "global_mean_error": abs(mean.item() - union64.mean().item()),
        "global_std_relative_error": abs(std.item() - union64.std().item()) / union64.std().item(),
        "gathered_rows": gathered.tolist(),
        "gathered_blocks_exact": [
            g.dtype == e.dtype and torch.equal(g, e) for g, e in zip(gathered_blocks, expected_blocks, strict=True)
        ],
        "merged_mean_error": float(np.max(np.abs(rms.mean - union.mean))),
        "merged_var_error": float(np.max(np.abs(rms.var - union.var))),
        "merged_count_error": float(abs(rms.count - union.count)),
    }


def mixed_dtype_blocks(rank: int) -> list[torch.Tensor]:
    """Rank ``rank``'s rows of a few dtypes: int64 and float32 of several shapes, float64 and bool."""
    generator = torch.Generator().manual_seed(rank)
    return [
        torch.randint(-(2**40), 2**40, (3, 2), generator=generator),
        torch.randn(3, generator=generator) / 3,
        torch.randn(3, 2, 2, generator=generator),
        torch.randn(3, 1, generator=generator, dtype=torch.float64) / 7,
        torch.rand(3, 3, generator=generator) > 0.5,
    ]


def drift(rank: int) -> dict:
    """A weight changed on one rank only is reported on every rank."""
    module, collectives = torch.nn.Linear(3, 2), Collectives()
    collectives.broadcast_parameters(module)
    check_in_sync(collectives, module)  # in sync: no error
    if rank == 1:
        with torch.no_grad():
            module.weight[0, 0] += 1e-6
    try:
        check_in_sync(collectives, module, "in the drift test")
    except RuntimeError as error:
        return {"drift_error": str(error)}
    return {"drift_error": None}


def main() -> None:
    print_stacks_if_stuck(180.0)  # the fixture waits 420 s
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    print(f"worker rank {rank}", flush=True)
    results = {"rank": rank}
    results["equivalence"] = {
        env_name: {path: equivalence(out, rank, env_name, split_update=path == "split") for path in ("averaged", "split")}
        for env_name in EQUIVALENCE_ENVS
    }
    assert is_distributed() and world_size() == int(os.environ["WORLD_SIZE"])
    results |= learning(out, rank)
    results |= callbacks(rank)
    results |= running_statistics(rank)
    results |= drift(rank)
    results["destroyed"] = not TEARDOWN_MAY_BLOCK
    if TEARDOWN_MAY_BLOCK:  # the group is left undestroyed (see TEARDOWN_MAY_BLOCK)
        results["threads_after_destroy"] = None
    else:
        torch.distributed.destroy_process_group()
        results["threads_after_destroy"] = threads()
    (out / f"rank{rank}.json").write_text(json.dumps(results))
    end_worker()


def threads() -> list[str] | None:
    """Names of this process's threads (Linux), e.g. gloo's ``pt_gloo_runloop``; ``None`` elsewhere."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return None
    return sorted((task / "comm").read_text().strip() for task in tasks.iterdir())


if __name__ == "__main__":
    main()
