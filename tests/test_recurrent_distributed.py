"""
RecurrentTRPO trains data-parallel as TRPO does: 2 gloo processes on loopback (``tests/recurrent_distributed_worker.py``)
take the update of one process whose rollout buffer is the union of theirs, with the critic's own LSTM (minibatch
gradients averaged over the ranks) or the actor's (rows gathered), and with sub-sampled sequences (ranks with different
numbers of steps, weighed by them); the ranks stay in sync over several updates; the split update is refused.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import Logger

from sb3_trpo_plugin import RecurrentTRPO
from sb3_trpo_plugin.recurrent.sequences import RecurrentPolicyBatch
from sb3_trpo_plugin.trpo.policy_objective import normalize_advantages

sys.path.insert(0, str(Path(__file__).parent))
from recurrent_distributed_worker import (
    BUFFER_FIELDS,
    CASES,
    ENV_AXIS,
    N_ENVS,
    N_STEPS,
    SHARED_KWARGS,
    environments,
)

REPO = Path(__file__).resolve().parents[1]
WORLD_SIZE = 2


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tests/recurrent_distributed_worker.py`` on 2 gloo ranks on loopback; its output folder."""
    out = tmp_path_factory.mktemp("recurrent_distributed")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID")}
    base |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(WORLD_SIZE), "OMP_NUM_THREADS": "1"}
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    worker = Path(__file__).parent / "recurrent_distributed_worker.py"
    processes = [
        subprocess.Popen(
            [sys.executable, str(worker), str(out)],
            env=base | {"RANK": str(rank), "LOCAL_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(WORLD_SIZE)
    ]
    try:
        outputs = [process.communicate(timeout=600)[0] for process in processes]
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
        printed = [process.communicate()[0] for process in processes]
        pytest.fail("the two ranks did not finish in 600 s; they printed:\n" + "\n---\n".join(printed))
    finally:
        for process in processes:
            process.kill()
    for rank, (process, output) in enumerate(zip(processes, outputs, strict=True)):
        assert process.returncode == 0, f"rank {rank} failed:\n{output}"
    return out


def weights(archive: np.lib.npyio.NpzFile, prefix: str) -> dict[str, np.ndarray]:
    return {key[len(prefix) + 1 :]: archive[key] for key in archive.files if key.startswith(prefix + "/")}


def archives_of(out: Path, case: str) -> list[np.lib.npyio.NpzFile]:
    archives = [np.load(out / f"rank{rank}_{case}.npz") for rank in range(WORLD_SIZE)]
    after = [weights(archive, "after") for archive in archives]
    for name, value in after[0].items():  # every rank took the same step
        np.testing.assert_array_equal(value, after[1][name], err_msg=name)
    assert float(archives[0]["accepted"]) == 1.0
    return archives


def model_with_buffer(case: str, archives: list[np.lib.npyio.NpzFile], n_envs: int) -> RecurrentTRPO:
    """A RecurrentTRPO of ``n_envs`` environments at the ranks' first weights, its buffer the archives' side by side."""
    env = make_vec_env(lambda: environments(0).envs[0], n_envs=n_envs)  # type: ignore[attr-defined]
    kwargs = SHARED_KWARGS | CASES[case] | dict(batch_size=N_STEPS * n_envs)
    model = RecurrentTRPO("MlpLstmPolicy", env, **kwargs)
    model.set_logger(Logger(folder=None, output_formats=[]))
    model.policy.load_state_dict({k: torch.as_tensor(v) for k, v in weights(archives[0], "before").items()})
    buffer = model.rollout_buffer
    for field in BUFFER_FIELDS:
        setattr(buffer, field, np.concatenate([archive[f"buffer/{field}"] for archive in archives], axis=ENV_AXIS[field]))
    buffer.full, buffer.generator_ready = True, False
    return model


def assert_close_weights(after: dict[str, np.ndarray], model: RecurrentTRPO, names: list[str] | None = None) -> None:
    before = model.policy.state_dict()
    moved = False
    for name, tensor in model.policy.state_dict().items():
        if names is None or name in names:
            np.testing.assert_allclose(after[name], tensor.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
            moved |= not np.array_equal(after[name], before[name].numpy())
    assert moved or names is None


@pytest.mark.parametrize("case", ["critic_lstm", "shared_lstm"])
def test_update_equals_one_process_on_the_union_of_buffers(two_ranks: Path, case: str) -> None:
    archives = archives_of(two_ranks, case)
    reference = model_with_buffer(case, archives, WORLD_SIZE * N_ENVS)
    start = {name: tensor.clone() for name, tensor in reference.policy.state_dict().items()}
    with mock.patch.object(np.random, "randint", lambda high: 0):
        reference.train()
    assert reference.logger.name_to_value["train/is_line_search_success"] == 1.0
    after = weights(archives[0], "after")
    moved = set()
    for name, tensor in reference.policy.state_dict().items():
        np.testing.assert_allclose(after[name], tensor.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
        if not torch.equal(tensor, start[name]):
            moved.add(name.split(".")[0])
    # The actor's LSTM and the critic moved: the comparison is not vacuous.
    assert "lstm_actor" in moved and "value_net" in moved


def sub_sampled_batch(case: str, archive: np.lib.npyio.NpzFile) -> RecurrentPolicyBatch:
    """One rank's sub-sampled policy batch (every k-th sequence of its buffer, in order), advantages not normalised."""
    model = model_with_buffer(case, [archive], N_ENVS)
    with mock.patch.object(np.random, "randint", lambda high: 0):
        rollout = next(model.rollout_buffer.get(batch_size=None))
    batch = model._whole_policy_batch(rollout)
    assert isinstance(batch, RecurrentPolicyBatch)
    return batch.every(CASES[case]["sub_sampling_factor"])


def padded(batch: RecurrentPolicyBatch, length: int) -> RecurrentPolicyBatch:
    """The batch's sequences padded to ``length`` steps."""
    n = batch.n_sequences

    def pad(rows: torch.Tensor) -> torch.Tensor:
        by_sequence = rows.reshape(n, -1, *rows.shape[1:])
        padding = torch.zeros(n, length - by_sequence.shape[1], *rows.shape[1:], dtype=rows.dtype)
        return torch.cat([by_sequence, padding], dim=1).reshape(n * length, *rows.shape[1:])

    assert isinstance(batch.observations, torch.Tensor)
    return RecurrentPolicyBatch(
        pad(batch.observations),
        batch.actions,
        batch.old_log_prob,
        batch.advantages,
        batch.initial_states,
        pad(batch.episode_starts),
        pad(batch.mask),
    )


def test_sub_sampled_update_equals_one_process_on_the_union_of_the_sub_samples(two_ranks: Path) -> None:
    """
    Each rank's every k-th sequence, of different numbers of steps: the step is one process's on the union of the
    ranks' sub-samples (the means over all their valid steps together, the Fisher matrix's over every k-th of them).
    """
    case = "sub_sampled"
    archives = archives_of(two_ranks, case)
    parts = [sub_sampled_batch(case, archive) for archive in archives]
    sizes = [int(part.advantages.shape[0]) for part in parts]
    assert sizes[0] != sizes[1]  # the ranks' statistics are weighed by their steps: the weights matter
    assert parts[0].n_sequences % CASES[case]["fisher_sub_sampling_factor"] == 0  # the Fisher rule selects alike
    length = max(part.mask.numel() // part.n_sequences for part in parts)
    parts = [padded(part, length) for part in parts]
    union = RecurrentPolicyBatch(
        torch.cat([part.observations for part in parts]),  # type: ignore[misc]
        torch.cat([part.actions for part in parts]),
        torch.cat([part.old_log_prob for part in parts]),
        normalize_advantages(torch.cat([part.advantages for part in parts])),
        tuple(torch.cat([part.initial_states[i] for part in parts], dim=1) for i in range(2)),
        torch.cat([part.episode_starts for part in parts]),
        torch.cat([part.mask for part in parts]),
    )
    reference = model_with_buffer(case, archives[:1], N_ENVS)
    step = reference.make_policy_step().take(union)
    assert step.accepted
    after = weights(archives[0], "after")
    actor = {id(p) for p in reference._actor_params}
    actor_names = [name for name, p in reference.policy.named_parameters() if id(p) in actor]
    assert any(name.startswith("lstm_actor") for name in actor_names)
    assert_close_weights(after, reference, actor_names)


def test_ranks_stay_in_sync_and_count_every_step(two_ranks: Path) -> None:
    archives = [np.load(two_ranks / f"rank{rank}_learning.npz") for rank in range(WORLD_SIZE)]
    for name in archives[0].files:
        np.testing.assert_array_equal(archives[0][name], archives[1][name], err_msg=name)
    results = [json.loads((two_ranks / f"rank{rank}.json").read_text()) for rank in range(WORLD_SIZE)]
    for result in results:
        assert result["n_updates"] == 3
        assert result["num_timesteps"] == 3 * N_STEPS * N_ENVS * WORLD_SIZE


def test_the_split_update_is_refused_with_the_reason(two_ranks: Path) -> None:
    for rank in range(WORLD_SIZE):
        refusal = json.loads((two_ranks / f"rank{rank}.json").read_text())["split_refusal"]
        assert refusal is not None and "cannot split its update" in refusal and "split_update = False" in refusal


def test_the_example_trains_on_two_processes_and_resumes(tmp_path: Path) -> None:
    """``examples/distributed_recurrent_cartpole.py`` under ``torchrun`` (2 processes), run twice: the second resumes."""
    example = REPO / "examples" / "distributed_recurrent_cartpole.py"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(example)]
    arguments = ["--output", str(tmp_path), "--n-envs", "2", "--checkpoint-every", "512", "--eval-episodes", "2"]
    environment = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    environment |= {
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    outputs = []
    for timesteps in (512, 1024):  # one update each (2 processes × 2 envs × 128 steps)
        run = subprocess.run(
            [*command, *arguments, "--timesteps", str(timesteps)],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stdout
        outputs.append(run.stdout)
    assert "process 1 of 2" in outputs[0] and "512 steps over 2 process(es)" in outputs[0]
    assert "process 1: resuming from 512 steps" in outputs[1] and "1024 steps over 2 process(es)" in outputs[1]
    model = RecurrentTRPO.load(tmp_path / "recurrent_trpo_cartpole_distributed.zip")
    assert model.num_timesteps == 1024 and model._n_updates == 2


def test_split_update_is_off_and_setting_it_is_refused_in_one_process_too():
    """Data-parallel training reduces every step of the update; it is not split (refused where it would be)."""
    model = RecurrentTRPO(
        "MlpLstmPolicy",
        "CartPole-v1",
        n_steps=8,
        batch_size=8,
        policy_kwargs=dict(lstm_hidden_size=3, net_arch=dict(pi=[4], vf=[4])),
    )
    assert model.split_update is False and not model.splits_update(critic_depends_on_actor=False)
    model.collectives = object()  # type: ignore[assignment]  (as if data-parallel)
    assert not model.splits_update(critic_depends_on_actor=False)
    model.split_update = True
    with pytest.raises(NotImplementedError, match=r"cannot split its update.*split_update = False"):
        model.splits_update(critic_depends_on_actor=False)
