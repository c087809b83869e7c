"""
Data-parallel training over torch.distributed: 2 gloo processes on loopback, launched once for the module as two
machines would launch them (two torchrun agents, `--nnodes=2`, a c10d rendezvous on 127.0.0.1).

The ranks run ``tests/distributed_worker.py``; these tests check what they wrote, and compare their update
with one process whose rollout buffer is the union of both ranks' buffers.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3.common.logger import Logger

from sb3_trpo_plugin import TRPO, parallel
from sb3_trpo_plugin.common.reductions import ONE_PROCESS
from sb3_trpo_plugin.parallel import Collectives
from sb3_trpo_plugin.trpo.policy_objective import normalize_advantages
from tests.process_group_teardown import TEARDOWN_MAY_BLOCK

sys.path.insert(0, str(Path(__file__).parent))
from distributed_worker import BUFFER_FIELDS, EQUIVALENCE_ENVS, EQUIVALENCE_KWARGS, N_ENVS, N_STEPS, equivalence_env

WORLD_SIZE = 2


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_environment() -> dict[str, str]:
    """This environment without a launcher's variables, with this repository importable and one torch thread."""
    root = str(Path(__file__).parent.parent)
    launcher = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")
    environment = {k: v for k, v in os.environ.items() if k not in launcher}
    return environment | {
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
    }


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """
    Run the worker on 2 ranks as two machines would: two ``torchrun`` agents (``--nnodes=2``, one process each)
    meeting at a c10d rendezvous on 127.0.0.1 (gloo). Returns the output folder and each rank's results.
    """
    out = tmp_path_factory.mktemp("distributed")
    worker = Path(__file__).parent / "distributed_worker.py"
    endpoint = f"127.0.0.1:{_free_port()}"
    agents = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                f"--nnodes={WORLD_SIZE}",
                "--nproc-per-node=1",
                "--rdzv-backend=c10d",
                f"--rdzv-endpoint={endpoint}",
                "--rdzv-id=test_distributed",
                str(worker),
                str(out),
            ],
            env=torchrun_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its workers in its group: a timeout ends them too
        )
        for _ in range(WORLD_SIZE)
    ]
    outputs = []
    for agent in agents:
        try:
            # ~35 s alone; a busy 2-core machine (two learning runs beside the suite) has taken over 180 s
            outputs.append(agent.communicate(timeout=420)[0])
        except subprocess.TimeoutExpired:
            for other in agents:
                os.killpg(other.pid, signal.SIGKILL)
            printed = [other.communicate()[0] for other in agents]
            pytest.fail("the two torchrun agents did not finish in 420 s; they printed:\n" + "\n---\n".join(printed))
    for node, (agent, output) in enumerate(zip(agents, outputs, strict=True)):
        assert agent.returncode == 0, f"node {node} failed:\n{output}"
    results = [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(WORLD_SIZE)]
    for output in outputs:  # each agent's output is its one rank's, which the worker names first
        rank = re.search(r"^worker rank (\d+)$", output, flags=re.MULTILINE)
        assert rank is not None, output
        (out / f"rank{rank.group(1)}.log").write_text(output)
    return out, results


def _weights(archive: np.lib.npyio.NpzFile, prefix: str) -> dict[str, np.ndarray]:
    return {key[len(prefix) + 1 :]: archive[key] for key in archive.files if key.startswith(prefix + "/")}


def test_single_process_reductions_are_identity():
    """On one process the update gets no collectives, and its reductions are the identity."""
    assert not parallel.is_distributed()
    assert parallel.world_size() == 1 and parallel.rank() == 0
    tensor = torch.randn(5)
    assert ONE_PROCESS.mean(tensor) is tensor
    assert ONE_PROCESS.mean_floats(torch.tensor(1.5), 2) == (1.5, 2.0)
    assert ONE_PROCESS.gather_rows(tensor) is tensor
    mean, std = ONE_PROCESS.mean_std(tensor)
    assert torch.equal(mean, tensor.mean()) and torch.equal(std, tensor.std())
    order, minibatch_size = ONE_PROCESS.minibatch_order(7, 3, torch.device("cpu"))
    assert sorted(order.tolist()) == list(range(7)) and minibatch_size == 3
    model = TRPO("MlpPolicy", "CartPole-v1", n_steps=16, batch_size=16)
    assert model.collectives is None and model.batch_reductions() is None and not model.splits_update(False)
    with pytest.raises(RuntimeError, match="several processes"):
        Collectives()  # nothing to communicate with


def test_weights_broadcast_and_rollouts_distinct(ranks):
    out, _ = ranks
    archives = [np.load(out / f"rank{rank}_cartpole_split.npz") for rank in range(WORLD_SIZE)]
    before = [_weights(archive, "before") for archive in archives]
    for name, value in before[0].items():
        np.testing.assert_array_equal(value, before[1][name], err_msg=name)
    # Seeds differ by rank: the two ranks collected different rollouts.
    assert not np.array_equal(archives[0]["buffer/observations"], archives[1]["buffer/observations"])


@pytest.mark.parametrize("path", ["split", "averaged"])
@pytest.mark.parametrize("env_name", list(EQUIVALENCE_ENVS))
def test_update_equals_single_process_on_union_of_buffers(ranks, env_name, path):
    """
    Both data-parallel updates (split over ranks, or every step averaged over ranks) equal one process's. With
    MultiDiscrete spaces the rollout buffer holds integer observations and actions beside float returns and
    advantages: the split update's gathered rollout must bring every field back exactly (it once cast them all to
    the observations' integers).
    """
    out, results = ranks
    archives = [np.load(out / f"rank{rank}_{env_name}_{path}.npz") for rank in range(WORLD_SIZE)]
    after = [_weights(archive, "after") for archive in archives]
    for name, value in after[0].items():  # every rank took the same step
        np.testing.assert_array_equal(value, after[1][name], err_msg=name)

    # One process, the same start, a buffer that is the union of both ranks' (envs side by side): one train().
    n_envs = N_ENVS * WORLD_SIZE
    reference = TRPO("MlpPolicy", equivalence_env(env_name, n_envs), batch_size=N_STEPS * n_envs, **EQUIVALENCE_KWARGS)
    reference.set_logger(Logger(folder=None, output_formats=[]))
    reference.policy.load_state_dict({k: torch.as_tensor(v) for k, v in _weights(archives[0], "before").items()})
    buffer = reference.rollout_buffer
    for field in BUFFER_FIELDS:
        setattr(buffer, field, np.concatenate([archive[f"buffer/{field}"] for archive in archives], axis=1))
    buffer.full, buffer.generator_ready = True, False
    moved = False
    reference.train()
    for name, tensor in reference.policy.state_dict().items():
        expected = tensor.numpy()
        np.testing.assert_allclose(after[0][name], expected, rtol=1e-5, atol=1e-6, err_msg=name)
        moved |= not np.allclose(expected, _weights(archives[0], "before")[name])
    assert moved, "the update changed nothing: the comparison would be vacuous"
    assert reference.logger.name_to_value["train/is_line_search_success"] == 1.0
    # Rank 0 logs the statistics of the step it did not compute itself on the split path.
    logged = results[0]["equivalence"][env_name][path]["policy_step_logged"]
    for key in ("train/kl_divergence_loss", "train/policy_objective", "train/value_loss", "train/cg_steps"):
        assert logged[key] == pytest.approx(reference.logger.name_to_value[key], rel=1e-4, abs=1e-7), key


def test_global_advantage_normalisation_matches_union(ranks):
    out, _ = ranks
    advantages = [np.load(out / f"rank{rank}_cartpole_averaged.npz")["buffer/advantages"] for rank in range(WORLD_SIZE)]
    union = torch.as_tensor(np.concatenate([a.reshape(-1) for a in advantages]))
    normalised = normalize_advantages(union)
    assert abs(float(normalised.mean())) < 1e-5 and abs(float(normalised.std()) - 1.0) < 1e-5


def test_several_updates_stay_in_sync(ranks):
    out, results = ranks
    archives = [np.load(out / f"rank{rank}_learning.npz") for rank in range(WORLD_SIZE)]
    weights = [_weights(archive, "after") for archive in archives]
    for name, value in weights[0].items():
        np.testing.assert_array_equal(value, weights[1][name], err_msg=name)
    for key in ("obs_mean", "obs_var", "ret_var"):  # VecNormalize statistics merged over ranks
        np.testing.assert_array_equal(archives[0][key], archives[1][key], err_msg=key)
    global_steps = 4 * N_STEPS * N_ENVS * WORLD_SIZE
    for result in results:
        assert result["n_updates"] == 4
        assert result["num_timesteps"] == global_steps  # total_timesteps and num_timesteps are global
        assert result["obs_count"] == pytest.approx(global_steps + WORLD_SIZE * N_ENVS + 1e-4)  # steps, resets, ε
        # Every rank holds every rank's episodes.
        assert result["buffered_episodes"] == sum(r["local_episodes"] for r in results)
    assert results[0]["equivalence"]["cartpole"]["split"]["num_timesteps_after_one_rollout"] == N_STEPS * N_ENVS * WORLD_SIZE
    assert results[0]["verbose"] == 1 and results[1]["verbose"] == 0
    # Per update, split over ranks: sync check (every update here), rollout end, 2 VecNormalize merges (observations,
    # returns), the gathered rollout and the exchange of the new weights: 6 all-reduces.
    assert results[0]["all_reduce_calls"] == 4 * 6


def test_only_rank_zero_logs(ranks):
    out, _ = ranks
    runs = sorted(path.name for path in (out / "tb").iterdir())
    assert runs == ["TRPO_1"]
    log = (out / "rank0.log").read_text()
    assert "total_timesteps" in log and "ep_len_mean" in log
    assert "total_timesteps" not in (out / "rank1.log").read_text()


def test_running_statistics_merge_equals_union(ranks):
    _, results = ranks
    for result in results:
        assert result["merged_count_error"] < 1e-9
        assert result["merged_mean_error"] < 1e-9
        assert result["merged_var_error"] < 1e-9


def test_drift_is_reported_on_every_rank(ranks):
    _, results = ranks
    for result in results:
        assert result["drift_error"] is not None
        assert "different weights in the drift test" in result["drift_error"]


def test_callbacks_run_on_rank_zero_and_stop_every_rank(ranks):
    _, results = ranks
    assert results[0]["callback_calls"] == N_STEPS + 5
    assert results[1]["callback_calls"] == 0
    assert results[0]["stopped_after_updates"] == results[1]["stopped_after_updates"] == 1


def test_destroy_process_group_stops_gloo_threads(ranks):
    """The group the model initialised is really freed by destroy_process_group(): no gloo thread outlives it
    into interpreter shutdown, where one releasing a finished collective aborts the process (seen in CI)."""
    _, results = ranks
    if TEARDOWN_MAY_BLOCK:
        assert not any(result["destroyed"] for result in results)
        pytest.skip("torch < 2.8: destroy_process_group() can block in gloo's teardown, so the workers leave without it")
    assert all(result["destroyed"] for result in results)
    for result in results:
        if result["threads_after_destroy"] is None:
            continue  # no /proc: the exit code checked by the fixture still covers the crash
        assert not [name for name in result["threads_after_destroy"] if "gloo" in name or "tcpstore" in name]


def test_global_moments_and_gathered_rows(ranks):
    """
    One collective gives the union's mean and std (far from zero, unequal sizes); rows gather in rank order, blocks of
    different dtypes bit for bit, each in its own dtype.
    """
    _, results = ranks
    for result in results:
        assert result["global_mean_error"] < 1e-3  # float32 result of a mean near 1000
        assert result["global_std_relative_error"] < 1e-5
        assert result["gathered_rows"] == [[float(r)] * 3 for r in range(WORLD_SIZE) for _ in range(2)]
        assert result["gathered_blocks_exact"] == [True] * 5
