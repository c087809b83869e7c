"""MaskableRecurrentTRPO learns a task that needs memory and action masks together (slow)."""

from __future__ import annotations

import pytest
from stable_baselines3.common.env_util import make_vec_env

from sb3_trpo_plugin import MaskableRecurrentTRPO, MaskableTRPO
from sb3_trpo_plugin.envs import CueWithForbiddenActionsEnv
from sb3_trpo_plugin.masked_recurrent import evaluate_policy


@pytest.mark.slow
def test_the_cue_task_is_solved_with_memory_and_masks_and_not_with_masks_alone() -> None:
    """
    A cue at the first step names the action that pays at the fourth, two of four actions forbidden at every step:
    with memory and masks the return approaches 1; with masks alone the last step is a guess between two actions
    (0.5 at best).
    """
    settings = dict(n_steps=32, batch_size=64, target_kl=0.05, seed=0)
    both = MaskableRecurrentTRPO(
        "MlpLstmPolicy",
        make_vec_env(CueWithForbiddenActionsEnv, n_envs=8, seed=0),
        policy_kwargs=dict(lstm_hidden_size=16, net_arch=[16]),
        **settings,
    )
    masks_alone = MaskableTRPO(
        "MlpPolicy", make_vec_env(CueWithForbiddenActionsEnv, n_envs=8, seed=0), policy_kwargs=dict(net_arch=[16]), **settings
    )
    for model in (both, masks_alone):
        model.learn(10_000)
    evaluation_env = make_vec_env(CueWithForbiddenActionsEnv, n_envs=4, seed=100)
    both_return, _ = evaluate_policy(both, evaluation_env, n_eval_episodes=200)
    masks_alone_return, _ = evaluate_policy(masks_alone, evaluation_env, n_eval_episodes=200)
    assert both_return >= 0.9
    assert masks_alone_return <= 0.65  # chance is 0.5; 200 episodes: standard deviation 0.035


def test_benchmark_report_reads_the_runs(tmp_path) -> None:
    """``python -m benchmarks.maskable_recurrent report``: final returns, seeds, steps to the threshold, per algorithm."""
    import json

    from benchmarks import maskable_recurrent as benchmark

    curves = {"maskable_recurrent_trpo": [[-0.5, 0.5, 0.95], [-0.4, 0.92, 0.97]], "maskable_trpo": [[-0.5, 0.4, 0.5]]}
    for algo, returns_of_seeds in curves.items():
        (tmp_path / algo).mkdir()
        for seed, returns in enumerate(returns_of_seeds):
            record = {"algo": algo, "seed": seed, "steps": [0, 2048, 4096], "returns": returns, "train_cpu_seconds": 10.0}
            (tmp_path / algo / f"seed{seed}.json").write_text(json.dumps(record))
    table = benchmark.report(tmp_path).splitlines()
    assert len(table) == 4  # header, rule, two algorithms (no RecurrentTRPO runs)
    assert (
        table[2].startswith("| MaskableRecurrentTRPO") and "| 2 | 0.96 ± 0.01 | 0.95 / 0.97 | 3072 (2/2 seeds) |" in table[2]
    )
    assert table[3].startswith("| MaskableTRPO") and "| — |" in table[3]
