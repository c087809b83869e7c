"""
MaskableTRPO: TRPO on sb3-contrib's masking API (``sb3_trpo_plugin.masked``).

The maths on masked distributions against explicit Hessians and KLs, the all-valid mask against TRPO's own step,
no invalid action ever (hypothesis), the sb3-contrib API a MaskablePPO script uses, and learning on sb3-contrib's
invalid-action environments.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sb3_contrib import MaskablePPO
from sb3_contrib.common.envs import InvalidActionEnvDiscrete, InvalidActionEnvMultiBinary, InvalidActionEnvMultiDiscrete
from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback
from sb3_contrib.common.maskable.distributions import (
    MaskableBernoulliDistribution,
    MaskableCategoricalDistribution,
    MaskableMultiCategoricalDistribution,
)
from sb3_contrib.common.maskable.evaluation import evaluate_policy
from sb3_contrib.common.maskable.utils import get_action_masks
from sb3_contrib.common.wrappers import ActionMasker
from stable_baselines3.common.envs import IdentityEnv, IdentityEnvBox
from stable_baselines3.common.policies import ActorCriticPolicy

from sb3_trpo_plugin import MaskableTRPO
from sb3_trpo_plugin.common.distributions import distribution_parameters, fisher_metric, kl_per_state, with_parameters
from sb3_trpo_plugin.masked import MaskedPolicyBatch
from sb3_trpo_plugin.masked.distributions import as_trust_region_distribution
from sb3_trpo_plugin.trpo.policy_step import PolicyStep
from sb3_trpo_plugin.trust_region import Linearization, gauss_newton_vector_product

REPO = Path(__file__).resolve().parents[1]
N_STATES = 5
#: The components of each kind of action: Discrete(4), MultiDiscrete([3, 4]), MultiBinary(3) as two-way choices.
COMPONENTS = {"categorical": [4], "multicategorical": [3, 4], "bernoulli": [2, 2, 2]}


def random_masks(sizes: list[int], generator: torch.Generator) -> torch.Tensor:
    """Different masks in different states: each component keeps at least one valid choice, and some lose several."""
    blocks = []
    for size in sizes:
        block = torch.rand(N_STATES, size, generator=generator) < 0.5
        keep = torch.randint(size, (N_STATES,), generator=generator)
        block[torch.arange(N_STATES), keep] = True
        blocks.append(block)
    masks = torch.cat(blocks, dim=1)
    assert not masks.all(), "the masks must remove some actions"
    return masks


def sb3_contrib_distribution(kind: str, logits: torch.Tensor, masks: torch.Tensor | None):
    """sb3-contrib's masked distribution of ``kind`` on raw ``logits``, as the trust-region step sees it."""
    sizes = COMPONENTS[kind]
    if kind == "categorical":
        distribution = MaskableCategoricalDistribution(sizes[0])
    elif kind == "bernoulli":
        distribution = MaskableBernoulliDistribution(len(sizes))
    else:
        distribution = MaskableMultiCategoricalDistribution(sizes)
    distribution.proba_distribution(logits)
    if masks is not None:
        distribution.apply_masking(masks)
    return as_trust_region_distribution(distribution)


def explicit_kl(kind: str, old_logits: torch.Tensor, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """
    ``Σ_a p_a (log p_a − log q_a)`` over the valid actions only, per state, written out independently of torch's
    and sb3-contrib's distributions (log-softmax over the valid logits; no -1e8 anywhere); per dimension for MultiBinary.
    """
    total = torch.zeros(N_STATES, dtype=logits.dtype)
    for old, new, valid in zip(
        torch.split(old_logits, COMPONENTS[kind], dim=1),
        torch.split(logits, COMPONENTS[kind], dim=1),
        torch.split(masks, COMPONENTS[kind], dim=1),
        strict=True,
    ):
        minus_inf = torch.tensor(-torch.inf, dtype=logits.dtype)
        log_p = torch.where(valid, old - torch.logsumexp(torch.where(valid, old, minus_inf), dim=1, keepdim=True), 0.0)
        log_q = torch.where(valid, new - torch.logsumexp(torch.where(valid, new, minus_inf), dim=1, keepdim=True), 0.0)
        total = total + (torch.where(valid, log_p.exp(), 0.0) * (log_p - log_q)).sum(dim=1)
    return total / len(COMPONENTS[kind]) if kind == "bernoulli" else total


@pytest.fixture(params=sorted(COMPONENTS))
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


def test_masked_kl_equals_the_explicit_kl(kind: str) -> None:
    generator = torch.Generator().manual_seed(0)
    width = sum(COMPONENTS[kind])
    old_logits = torch.randn(N_STATES, width, generator=generator, dtype=torch.float64)
    new_logits = old_logits + 0.5 * torch.randn(N_STATES, width, generator=generator, dtype=torch.float64)
    masks = random_masks(COMPONENTS[kind], generator)
    old = sb3_contrib_distribution(kind, old_logits, masks)
    old = with_parameters(old, [p.detach() for p in distribution_parameters(old) or []])
    kl = kl_per_state(old, sb3_contrib_distribution(kind, new_logits, masks))
    assert torch.isfinite(kl).all()
    torch.testing.assert_close(kl, explicit_kl(kind, old_logits, new_logits, masks), rtol=1e-12, atol=1e-12)
    # What the invalid actions' logits are does not matter.
    shifted = new_logits + torch.where(
        masks, 0.0, 100.0 * torch.randn(N_STATES, width, generator=generator, dtype=torch.float64)
    )
    torch.testing.assert_close(kl_per_state(old, sb3_contrib_distribution(kind, shifted, masks)), kl, rtol=1e-12, atol=1e-12)


def test_masked_fisher_product_equals_the_explicit_kl_hessian(kind: str) -> None:
    """``Jᵀ M J`` (``J``: masked parameters in the raw logits) against the Hessian of the explicit KL: no NaN, equal."""
    generator = torch.Generator().manual_seed(1)
    width = sum(COMPONENTS[kind])
    raw = torch.randn(N_STATES, width, generator=generator, dtype=torch.float64)
    masks = random_masks(COMPONENTS[kind], generator)

    def mean_kl_at(flat: torch.Tensor) -> torch.Tensor:
        return explicit_kl(kind, raw, flat.reshape(N_STATES, width), masks).mean()

    hessian = torch.autograd.functional.hessian(mean_kl_at, raw.flatten())
    leaf = raw.clone().requires_grad_(True)
    distribution = sb3_contrib_distribution(kind, leaf, masks)
    parameters = distribution_parameters(distribution)
    metric = fisher_metric(distribution, 1.0 / N_STATES)
    assert parameters is not None and metric is not None
    product = gauss_newton_vector_product(Linearization(parameters, [leaf]), metric, damping=0.0)
    closed_form = torch.stack([product(e) for e in torch.eye(N_STATES * width, dtype=torch.float64)], dim=1)
    assert torch.isfinite(closed_form).all()
    torch.testing.assert_close(closed_form, hessian, rtol=1e-10, atol=1e-12)
    # The invalid actions' rows and columns vanish. (Up to rounding: sb3-contrib normalises the raw logits before
    # masking, so an invalid raw logit shifts the valid ones alike, which the second normalisation cancels.)
    invalid = ~masks.flatten()
    assert closed_form[invalid].abs().max() < 1e-15 and closed_form[:, invalid].abs().max() < 1e-15


# --- the step -----------------------------------------------------------------------------------------------------


ENVS = {
    "discrete": lambda: InvalidActionEnvDiscrete(dim=6, n_invalid_actions=3),
    "multidiscrete": lambda: InvalidActionEnvMultiDiscrete(dims=[3, 4], n_invalid_actions=3),
    "multibinary": lambda: InvalidActionEnvMultiBinary(dims=4, n_invalid_actions=3),
}


def filled_maskable_model(env: gym.Env, **kwargs) -> MaskableTRPO:
    """A MaskableTRPO model whose rollout buffer holds one rollout (with masks) of its current policy, no update yet."""
    model = MaskableTRPO("MlpPolicy", env, n_steps=64, batch_size=32, seed=0, **kwargs)
    _, callback = model._setup_learn(model.n_steps, callback=None)
    callback.on_training_start(locals(), globals())
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=model.n_steps)
    return model


def step_result(model: MaskableTRPO, step: PolicyStep, batch) -> tuple[list[torch.Tensor], tuple[float, ...]]:
    """The weights after ``step`` on ``batch`` from the model's current ones (put back after), and its statistics."""
    before = [p.detach().clone() for p in model.policy.parameters()]
    stats = step.take(batch)
    after = [p.detach().clone() for p in model.policy.parameters()]
    with torch.no_grad():
        for parameter, value in zip(model.policy.parameters(), before, strict=True):
            parameter.copy_(value)
    return after, tuple(stats.to_floats())


@pytest.mark.parametrize("space", sorted(ENVS))
def test_all_valid_masks_give_trpos_update_bit_for_bit(space: str) -> None:
    model = filled_maskable_model(ENVS[space]())
    rollout = next(model.rollout_buffer.get(batch_size=None))
    batch = model._policy_batch(rollout)
    all_valid = MaskedPolicyBatch(
        batch.observations, batch.actions, batch.old_log_prob, batch.advantages, torch.ones_like(batch.action_masks)
    )
    unmasked = MaskedPolicyBatch(batch.observations, batch.actions, batch.old_log_prob, batch.advantages, None)
    masked_weights, masked_stats = step_result(model, model.make_policy_step(), all_valid)
    plain_weights, plain_stats = step_result(model, model.make_policy_step(), unmasked)
    assert masked_stats[2] == 1.0, "the step must be accepted for the comparison to mean something"
    np.testing.assert_array_equal(masked_stats, plain_stats)  # nan (action_std of a categorical) equals nan
    assert all(torch.equal(a, b) for a, b in zip(masked_weights, plain_weights, strict=True))
    if space == "discrete":  # TRPO's own PolicyStep, unchanged, on the same policy and batch: the same bits
        trpo_step = PolicyStep(model.policy, model._actor_params, model.make_policy_step().settings)
        trpo_weights, trpo_stats = step_result(model, trpo_step, unmasked)
        np.testing.assert_array_equal(trpo_stats, masked_stats)
        assert all(torch.equal(a, b) for a, b in zip(masked_weights, trpo_weights, strict=True))


@pytest.mark.parametrize("space", sorted(ENVS))
def test_the_step_is_that_of_the_masked_policy(space: str) -> None:
    """With real masks the step differs from the unmasked one, bounds the masked KL, and keeps invalid actions at zero."""
    model = filled_maskable_model(ENVS[space]())
    rollout = next(model.rollout_buffer.get(batch_size=None))
    assert not rollout.action_masks.bool().all()
    batch = model._policy_batch(rollout)
    step = model.make_policy_step()
    old = step.batch_distribution(batch)
    old = with_parameters(old, [p.detach() for p in distribution_parameters(old) or []])
    masked_weights, stats = step_result(model, step, batch)
    assert stats[2] == 1.0  # accepted
    unmasked = MaskedPolicyBatch(batch.observations, batch.actions, batch.old_log_prob, batch.advantages, None)
    unmasked_weights, _ = step_result(model, step, unmasked)
    assert not all(torch.equal(a, b) for a, b in zip(masked_weights, unmasked_weights, strict=True))
    with torch.no_grad():
        for parameter, value in zip(model.policy.parameters(), masked_weights, strict=True):
            parameter.copy_(value)
        new = step.batch_distribution(batch)
        kl = kl_per_state(old, new).mean()
    assert 0 < float(kl) <= model.target_kl
    assert float(kl) == pytest.approx(stats[1], rel=1e-5)
    invalid = ~batch.action_masks.bool()
    probabilities = (
        torch.cat([component.probs for component in new.distribution], dim=1)
        if space != "discrete"
        else new.distribution.probs
    )
    assert torch.equal(probabilities[invalid], torch.zeros_like(probabilities[invalid]))


def test_sub_sampling_keeps_each_state_with_its_mask() -> None:
    model = filled_maskable_model(ENVS["multidiscrete"](), sub_sampling_factor=3)
    rollout = next(model.rollout_buffer.get(batch_size=None))
    batch = model._policy_batch(rollout)
    assert torch.equal(batch.observations, rollout.observations[::3]) and torch.equal(
        batch.action_masks, rollout.action_masks[::3]
    )
    every_other = batch.every(2)
    assert torch.equal(every_other.action_masks, rollout.action_masks[::6])
    assert torch.equal(every_other.actions, rollout.actions[::6])
    model.train()  # and the update runs on it


# --- no invalid action, ever --------------------------------------------------------------------------------------


class MaskCyclingEnv(gym.Env):
    """
    Announces the given masks in turn (the observation says which); counts every action the mask forbade.

    :param action_space: Discrete, MultiDiscrete or MultiBinary
    :param masks: one flat boolean mask per step of the cycle
    """

    def __init__(self, action_space: spaces.Space, masks: np.ndarray):
        self.action_space = action_space
        self.masks = masks
        self.observation_space = spaces.Box(0.0, 1.0, shape=(len(masks),), dtype=np.float32)
        self.index = 0
        self.steps = 0
        self.invalid_actions = 0

    def _observation(self) -> np.ndarray:
        return np.eye(len(self.masks), dtype=np.float32)[self.index]

    def action_masks(self) -> np.ndarray:
        return self.masks[self.index]

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.index, self.steps = 0, 0
        return self._observation(), {}

    def step(self, action):
        if not is_valid(self.action_space, np.asarray(action), self.masks[self.index]):
            self.invalid_actions += 1
        reward = float(np.sum(action))  # something to learn, pulling towards the largest actions
        self.index = (self.index + 1) % len(self.masks)
        self.steps += 1
        return self._observation(), reward, False, self.steps >= 16, {}


def is_valid(space: spaces.Space, action: np.ndarray, mask: np.ndarray) -> bool:
    """Whether ``action`` is allowed by the flat ``mask`` of ``space``."""
    if isinstance(space, spaces.Discrete):
        return bool(mask[int(action)])
    sizes = list(space.nvec) if isinstance(space, spaces.MultiDiscrete) else [2] * int(space.n)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return all(mask[offset + int(choice)] for offset, choice in zip(offsets, action.reshape(-1), strict=True))


@st.composite
def spaces_and_masks(draw: st.DrawFn) -> tuple[spaces.Space, np.ndarray]:
    kind = draw(st.sampled_from(["discrete", "multidiscrete", "multibinary"]))
    if kind == "discrete":
        sizes = [draw(st.integers(2, 6))]
        space: spaces.Space = spaces.Discrete(sizes[0])
    elif kind == "multidiscrete":
        sizes = draw(st.lists(st.integers(2, 4), min_size=1, max_size=3))
        space = spaces.MultiDiscrete(sizes)
    else:
        sizes = [2] * draw(st.integers(1, 4))
        space = spaces.MultiBinary(len(sizes))
    n_masks = draw(st.integers(1, 4))
    masks = []
    for _ in range(n_masks):
        row = []
        for size in sizes:
            block = draw(st.lists(st.booleans(), min_size=size, max_size=size).filter(any))  # one valid choice at least
            row += block
        masks.append(row)
    return space, np.array(masks, dtype=bool)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spaces_and_masks(), st.integers(0, 2**16))
def test_no_invalid_action_in_training_or_predict(space_and_masks: tuple[spaces.Space, np.ndarray], seed: int) -> None:
    space, masks = space_and_masks
    env = MaskCyclingEnv(space, masks)
    # A large trust region: the policy moves fast towards the (often invalid) largest actions.
    model = MaskableTRPO("MlpPolicy", env, n_steps=32, batch_size=32, target_kl=0.5, n_critic_updates=1, seed=seed)
    model.learn(96)
    assert model._n_updates == 3 and env.invalid_actions == 0
    assert all(torch.isfinite(p).all() for p in model.policy.parameters())
    observations = np.eye(len(masks), dtype=np.float32)
    for deterministic in (True, False):
        actions, _ = model.predict(observations, deterministic=deterministic, action_masks=masks)
        assert all(is_valid(space, np.asarray(a), m) for a, m in zip(actions, masks, strict=True))
        for observation, mask in zip(observations, masks, strict=True):  # one observation at a time, too
            action, _ = model.predict(observation, deterministic=deterministic, action_masks=mask)
            assert is_valid(space, np.asarray(action), mask)


# --- sb3-contrib's API --------------------------------------------------------------------------------------------


def test_import_is_lazy_and_names_the_extra() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    lazy = (
        "import sys, sb3_trpo_plugin; assert 'sb3_contrib' not in sys.modules\n"
        "from sb3_trpo_plugin import MaskableTRPO; print(MaskableTRPO.__name__)"
    )
    result = subprocess.run([sys.executable, "-c", lazy], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "MaskableTRPO"
    missing = (
        "import sys; sys.modules['sb3_contrib'] = None\n"  # as if sb3-contrib were not installed
        "import sb3_trpo_plugin; sb3_trpo_plugin.TRPO\n"
        "try:\n    from sb3_trpo_plugin import MaskableTRPO\nexcept ImportError as error:\n    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", missing], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "pip install 'sb3-trpo-plugin[contrib]'" in result.stdout


def test_maskable_ppos_constructor_checks() -> None:
    with pytest.raises(ValueError, match="MultiBinary actions, not Box"):
        MaskableTRPO("MlpPolicy", IdentityEnvBox())
    with pytest.raises(AssertionError, match="MultiBinary actions, not Box"):  # what sb3-contrib's MaskablePPO raises
        MaskableTRPO("MlpPolicy", IdentityEnvBox())
    with pytest.raises(AssertionError):
        MaskablePPO("MlpPolicy", IdentityEnvBox())
    with pytest.raises(ValueError, match="MaskableActorCriticPolicy"):
        MaskableTRPO(ActorCriticPolicy, InvalidActionEnvDiscrete(dim=4, n_invalid_actions=1))
    with pytest.raises(ValueError, match="target_kl"):
        MaskableTRPO("MlpPolicy", InvalidActionEnvDiscrete(dim=4, n_invalid_actions=1), target_kl=0.0)


def test_masking_can_be_turned_off_and_is_required_otherwise() -> None:
    model = MaskableTRPO("MlpPolicy", IdentityEnv(dim=3), n_steps=32, batch_size=32, seed=0)
    with pytest.raises(ValueError, match="ActionMasker"):
        model.learn(32)
    model.learn(64, use_masking=False)
    assert model._n_updates == 2
    assert model.rollout_buffer.action_masks.all()  # stored as all valid


def test_action_masker_eval_callback_evaluate_policy_and_save_load(tmp_path: Path) -> None:
    """A MaskablePPO workflow: ActionMasker, MaskableEvalCallback, maskable evaluate_policy, save and load, predict."""

    def only_the_right_answer(env: gym.Env) -> np.ndarray:
        return np.arange(env.action_space.n) == env.unwrapped.state  # IdentityEnv: the right action is the state

    env = ActionMasker(IdentityEnv(dim=5, ep_length=20), only_the_right_answer)
    eval_env = ActionMasker(IdentityEnv(dim=5, ep_length=20), only_the_right_answer)
    callback = MaskableEvalCallback(eval_env, eval_freq=64, n_eval_episodes=2, log_path=str(tmp_path), warn=False)
    model = MaskableTRPO("MlpPolicy", env, n_steps=64, batch_size=64, seed=0)
    model.learn(128, callback=callback)
    assert callback.n_calls == 128 and callback.best_mean_reward == 20.0  # one valid action: every step earns 1
    evaluations = np.load(tmp_path / "evaluations.npz")
    assert evaluations["results"].shape == (2, 2)
    mean_reward, _ = evaluate_policy(model, env, n_eval_episodes=3, warn=False)
    assert mean_reward == 20.0
    unmasked_reward, _ = evaluate_policy(model, env, n_eval_episodes=3, warn=False, use_masking=False)
    assert unmasked_reward < 20.0

    model.save(tmp_path / "maskable_trpo")
    loaded = MaskableTRPO.load(tmp_path / "maskable_trpo", env=env)
    assert type(loaded.policy).__name__ == "MaskableActorCriticPolicy"
    observation, _ = env.reset(seed=1)
    mask = get_action_masks(env)
    for deterministic in (True, False):
        action, _ = loaded.predict(observation, deterministic=deterministic, action_masks=mask)
        assert mask[int(action)]
    for original, restored in zip(model.policy.parameters(), loaded.policy.parameters(), strict=True):
        assert torch.equal(original, restored)
    loaded.learn(64, reset_num_timesteps=False)  # training goes on after loading
    assert loaded.num_timesteps == 192


class ToDictWrapper(gym.ObservationWrapper):
    """The observation under a key, for MultiInputPolicy."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.observation_space = spaces.Dict({"obs": env.observation_space})

    def observation(self, observation):
        return {"obs": observation}

    def action_masks(self):
        return self.env.unwrapped.action_masks()


@pytest.mark.parametrize("space", sorted(ENVS))
def test_dict_observations_and_several_envs(space: str) -> None:
    from stable_baselines3.common.env_util import make_vec_env

    env = make_vec_env(lambda: ToDictWrapper(ENVS[space]()), n_envs=2, seed=0)
    model = MaskableTRPO("MultiInputPolicy", env, n_steps=32, batch_size=32, seed=0)
    model.learn(128)
    assert type(model.rollout_buffer).__name__ == "MaskableDictRolloutBuffer" and model._n_updates == 2
    masks = get_action_masks(env)
    actions, _ = model.predict(env.reset(), deterministic=True, action_masks=masks)
    for action, mask in zip(actions, masks, strict=True):
        assert is_valid(model.action_space, np.asarray(action), mask)


def test_cnn_policy() -> None:
    from stable_baselines3.common.envs import FakeImageEnv

    env = ActionMasker(
        FakeImageEnv(screen_height=36, screen_width=36, n_channels=1, discrete=True),
        lambda env: np.arange(env.action_space.n) % 2 == 0,
    )
    model = MaskableTRPO(
        "CnnPolicy", env, n_steps=32, batch_size=32, seed=0, policy_kwargs={"features_extractor_kwargs": {"features_dim": 16}}
    )
    model.learn(64)
    assert type(model.policy).__name__ == "MaskableActorCriticCnnPolicy" and model._n_updates == 2
    assert (model.rollout_buffer.actions.astype(int) % 2 == 0).all()  # only the even actions are valid


# --- data-parallel ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tests/masked_distributed_worker.py`` on 2 gloo ranks on loopback; its output folder."""
    import socket

    out = tmp_path_factory.mktemp("masked_distributed")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID")}
    base |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    worker = Path(__file__).parent / "masked_distributed_worker.py"
    processes = [
        subprocess.Popen(
            [sys.executable, str(worker), str(out)],
            env=base | {"RANK": str(rank), "LOCAL_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(2)
    ]
    try:
        outputs = [process.communicate(timeout=300)[0] for process in processes]
    finally:
        for process in processes:
            process.kill()
    for rank, (process, output) in enumerate(zip(processes, outputs, strict=True)):
        assert process.returncode == 0, f"rank {rank} failed:\n{output}"
    return out


@pytest.mark.parametrize("update_path", ["split", "averaged"])
def test_data_parallel_update_equals_one_process_on_the_union(two_ranks: Path, update_path: str) -> None:
    """
    Split over the ranks on the gathered union (masks gathered with their rows), or every step reduced over the ranks,
    each with its own masks: one process's masked update on the union.
    """
    sys.path.insert(0, str(Path(__file__).parent))
    from masked_distributed_worker import BUFFER_FIELDS, KWARGS, N_ENVS, make_env
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.logger import Logger

    archives = [np.load(two_ranks / f"rank{rank}_{update_path}.npz") for rank in range(2)]

    def weights(archive, prefix: str) -> dict[str, np.ndarray]:
        return {key[len(prefix) + 1 :]: archive[key] for key in archive.files if key.startswith(prefix + "/")}

    after = [weights(archive, "after") for archive in archives]
    for name, value in after[0].items():
        np.testing.assert_array_equal(value, after[1][name], err_msg=name)
    assert not np.array_equal(archives[0]["buffer/action_masks"], archives[1]["buffer/action_masks"])

    n_envs = 2 * N_ENVS
    reference = MaskableTRPO("MlpPolicy", make_vec_env(make_env, n_envs=n_envs), batch_size=32 * n_envs, **KWARGS)
    reference.set_logger(Logger(folder=None, output_formats=[]))
    reference.policy.load_state_dict({k: torch.as_tensor(v) for k, v in weights(archives[0], "before").items()})
    buffer = reference.rollout_buffer
    for field in BUFFER_FIELDS:
        setattr(buffer, field, np.concatenate([archive[f"buffer/{field}"] for archive in archives], axis=1))
    buffer.full, buffer.generator_ready = True, False
    reference.train()
    assert reference.logger.name_to_value["train/is_line_search_success"] == 1.0 and float(archives[0]["accepted"]) == 1.0
    for name, tensor in reference.policy.state_dict().items():
        np.testing.assert_allclose(after[0][name], tensor.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
    # Without the other rank's masks the update would differ: the comparison can fail.
    buffer.action_masks[:] = 1.0
    reference.policy.load_state_dict({k: torch.as_tensor(v) for k, v in weights(archives[0], "before").items()})
    reference.train()
    assert any(
        not np.allclose(after[0][name], tensor.numpy(), rtol=1e-5, atol=1e-6)
        for name, tensor in reference.policy.state_dict().items()
    )


# --- learning -----------------------------------------------------------------------------------------------------

#: sb3-contrib's invalid-action environments, the settings and budget, as in sb3-contrib's own MaskablePPO test
#: (``test_identity``: 70 cells, 55 invalid, gamma 0.4, threshold 90 over 20 episodes of 100 steps) for Discrete
#: actions; the same threshold on the MultiDiscrete and MultiBinary ones.
LEARNING = {
    "discrete": (lambda: InvalidActionEnvDiscrete(dim=70, n_invalid_actions=55), {}, 8192),
    "multidiscrete": (
        lambda: InvalidActionEnvMultiDiscrete(dims=[10, 10], n_invalid_actions=15),
        dict(n_steps=256, n_critic_updates=5),
        3000,
    ),
    "multibinary": (
        lambda: InvalidActionEnvMultiBinary(dims=8, n_invalid_actions=6),
        dict(n_steps=256, n_critic_updates=5),
        3000,
    ),
}
THRESHOLD = 90


@pytest.mark.slow
@pytest.mark.parametrize("space", sorted(LEARNING))
def test_learns_invalid_action_envs_and_masks_matter(space: str) -> None:
    make_env, kwargs, budget = LEARNING[space]
    returns = {}
    for use_masking in (True, False):
        env = make_env()
        model = MaskableTRPO("MlpPolicy", env, gamma=0.4, seed=32, **kwargs)
        model.learn(budget, use_masking=use_masking)
        returns[use_masking], _ = evaluate_policy(model, env, n_eval_episodes=20, warn=False, use_masking=use_masking)
    assert returns[True] >= THRESHOLD, returns
    assert returns[False] < THRESHOLD and returns[False] < returns[True] - 5, returns  # without masks: worse
