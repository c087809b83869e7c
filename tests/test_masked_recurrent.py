"""
MaskableRecurrentTRPO: the maths of the masked recurrent step against an explicit reference (float64, the LSTM unrolled
step by step, episode starts inside the batch, masks that differ per step, masked log-softmax written out without
sb3-contrib), the all-valid step against RecurrentTRPO's, and the buffer's masks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from torch import nn
from torch.func import functional_call

from sb3_trpo_plugin import MaskableRecurrentTRPO, RecurrentTRPO
from sb3_trpo_plugin.common.distributions import distribution_parameters, kl_per_state, with_parameters
from sb3_trpo_plugin.masked_recurrent import MaskedRecurrentPolicyBatch
from sb3_trpo_plugin.recurrent.policy_step import RecurrentPolicyStep
from sb3_trpo_plugin.recurrent.sequences import RecurrentPolicyBatch
from sb3_trpo_plugin.trust_region import flatten, unflatten_like
from tests.conftest import RandomEnv, use_float64

TINY_LSTM = dict(lstm_hidden_size=3, net_arch=dict(pi=[4], vf=[4]))
#: Small enough for an explicit Hessian over the actor's parameters.
TINIER_LSTM = dict(lstm_hidden_size=2, net_arch=dict(pi=[3], vf=[3]))
SPACES = {"discrete": spaces.Discrete(4), "multidiscrete": spaces.MultiDiscrete([3, 4]), "multibinary": spaces.MultiBinary(3)}
#: The choices of each categorical component (sb3-contrib writes a MultiBinary action as two-way choices).
COMPONENTS = {"discrete": [4], "multidiscrete": [3, 4], "multibinary": [2, 2, 2]}


class MaskedRandomEnv(RandomEnv):
    """
    :class:`~sb3_trpo_plugin.envs.RandomEnv` with random action masks drawn anew at every step (each component keeps at
    least one valid choice, often several are invalid); an invalid action raises.

    :param action_space: Discrete, MultiDiscrete or MultiBinary
    :param episode_length: steps before truncation
    """

    def __init__(self, action_space: spaces.Space, episode_length: int = 5, **kwargs: Any) -> None:
        super().__init__(action_space, episode_length=episode_length, **kwargs)
        self.sizes = components_of(action_space)
        self.masks = np.ones(sum(self.sizes), dtype=bool)

    def _draw_masks(self) -> None:
        blocks = []
        for size in self.sizes:
            block = self.np_random.random(size) < 0.5
            block[self.np_random.integers(size)] = True
            blocks.append(block)
        self.masks = np.concatenate(blocks)

    def action_masks(self) -> np.ndarray:
        return self.masks.copy()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        observation, info = super().reset(seed=seed, options=options)
        self._draw_masks()
        return observation, info

    def step(self, action: Any):
        choices = np.atleast_1d(np.asarray(action)).astype(int)
        offsets = np.cumsum([0, *self.sizes[:-1]])
        if not self.masks[offsets + choices].all():
            raise AssertionError(f"invalid action {action} under the masks {self.masks}")
        result = super().step(action)
        self._draw_masks()
        return result


def components_of(action_space: spaces.Space) -> list[int]:
    if isinstance(action_space, spaces.Discrete):
        return [int(action_space.n)]
    if isinstance(action_space, spaces.MultiDiscrete):
        return [int(n) for n in action_space.nvec]
    return [2] * int(action_space.n)  # type: ignore[arg-type]


class RecordMasks(BaseCallback):
    """The masks the rollout loop asked for at each step (its ``action_masks`` local)."""

    def __init__(self) -> None:
        super().__init__()
        self.masks: list[np.ndarray] = []

    def _on_step(self) -> bool:
        self.masks.append(np.array(self.locals["action_masks"]))
        return True


def masked_recurrent_model(
    space: str, n_envs: int = 2, n_steps: int = 12, episode_length: int = 5, callback: BaseCallback | None = None, **kwargs
) -> MaskableRecurrentTRPO:
    """A model on short random episodes with random masks, its buffer filled by two rollouts (states carried over)."""
    env = make_vec_env(lambda: MaskedRandomEnv(SPACES[space], episode_length=episode_length), n_envs=n_envs, seed=0)
    kwargs.setdefault("policy_kwargs", TINY_LSTM)
    model = MaskableRecurrentTRPO("MlpLstmPolicy", env, n_steps=n_steps, batch_size=n_steps, seed=0, **kwargs)
    _, callback = model._setup_learn(2 * n_steps * n_envs, callback=callback)
    callback.on_training_start(locals(), globals())
    for _ in range(2):
        assert model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=n_steps)
    return model


def raw_buffer(model: MaskableRecurrentTRPO) -> dict[str, np.ndarray]:
    """The buffer's arrays as the rollout wrote them, ``(n_steps, n_envs, ...)``, before ``get`` reorders them."""
    buffer = model.rollout_buffer
    assert not buffer.generator_ready
    names = ["observations", "actions", "episode_starts", "log_probs", "hidden_states_pi", "cell_states_pi", "action_masks"]
    return {name: np.array(getattr(buffer, name)) for name in names}


def env_after_env(array: np.ndarray) -> torch.Tensor:
    """``(n_steps, n_envs, ...)`` to rows env after env, in time order (the buffer's order of the valid steps)."""
    return torch.as_tensor(array).transpose(0, 1).reshape(-1, *array.shape[2:])


class UnrolledLogits(nn.Module):
    """
    The reference's network: each environment's steps in time order, one LSTM step at a time from the state the
    rollout held before its first step, reset to zero at each episode start; the raw logits of ``action_net``.
    """

    def __init__(self, policy, raw: dict[str, np.ndarray], dtype: torch.dtype):
        super().__init__()
        self.policy = policy
        self.observations = torch.as_tensor(raw["observations"], dtype=dtype)
        self.starts = raw["episode_starts"]
        self.hidden = torch.as_tensor(raw["hidden_states_pi"][0], dtype=dtype)
        self.cell = torch.as_tensor(raw["cell_states_pi"][0], dtype=dtype)

    def forward(self) -> torch.Tensor:
        policy = self.policy
        n_steps, n_envs = self.starts.shape
        latents = []
        for env in range(n_envs):
            state = (self.hidden[:, env : env + 1], self.cell[:, env : env + 1])
            for t in range(n_steps):
                if self.starts[t, env]:
                    state = (torch.zeros_like(state[0]), torch.zeros_like(state[1]))
                features = policy.extract_features(self.observations[t, env : env + 1], policy.pi_features_extractor)
                output, state = policy.lstm_actor(features.unsqueeze(0), state)
                latents.append(output[0])
        return policy.action_net(policy.mlp_extractor.forward_actor(torch.cat(latents)))


def masked_log_softmax(logits: torch.Tensor, masks: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """Each component's log-probabilities over its valid choices (log-softmax of the valid logits), -inf elsewhere."""
    result = []
    for part, valid in zip(torch.split(logits, sizes, dim=1), torch.split(masks, sizes, dim=1), strict=True):
        valid_logits = torch.where(valid, part, torch.tensor(-torch.inf, dtype=part.dtype))
        result.append(valid_logits - torch.logsumexp(valid_logits, dim=1, keepdim=True))
    return result


def explicit_log_prob(log_probs: list[torch.Tensor], actions: torch.Tensor) -> torch.Tensor:
    columns = actions.long().reshape(actions.shape[0], -1)
    return sum(part.gather(1, columns[:, i : i + 1])[:, 0] for i, part in enumerate(log_probs))  # type: ignore[return-value]


def explicit_kl(old: list[torch.Tensor], new: list[torch.Tensor], masks: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """``Σ_valid p (log p - log q)`` per state, summed over the components (per dimension for MultiBinary)."""
    total = torch.zeros(old[0].shape[0], dtype=old[0].dtype)
    for old_part, new_part, valid in zip(old, new, torch.split(masks, sizes, dim=1), strict=True):
        terms = old_part.exp() * (old_part - new_part)
        total = total + torch.where(valid, terms, torch.zeros_like(terms)).sum(dim=1)
    return total / len(sizes) if sizes == [2] * len(sizes) else total


@pytest.fixture
def no_rotation(monkeypatch):
    """sb3-contrib's buffer rotates the steps at a random index (one more cut): without it, the cuts are the reference's."""
    monkeypatch.setattr(np.random, "randint", lambda high: 0)


@pytest.fixture(params=sorted(SPACES))
def unrolled_case(request, monkeypatch, no_rotation):
    space = request.param
    model = masked_recurrent_model(space, n_steps=8, episode_length=3, cg_damping=0.0, policy_kwargs=TINIER_LSTM)
    raw = raw_buffer(model)
    masks = env_after_env(raw["action_masks"]).bool()
    assert raw["episode_starts"][1:].any() and model.n_envs > 1, "episode starts inside the batch"
    assert not masks.all() and len({tuple(row.tolist()) for row in masks}) > 3, "masks that differ per step"
    use_float64(model, monkeypatch)
    batch = model._policy_batch(next(model.rollout_buffer.get(batch_size=None)))
    assert isinstance(batch, MaskedRecurrentPolicyBatch) and batch.action_masks is not None
    torch.testing.assert_close(batch.action_masks.bool(), masks, rtol=0, atol=0)  # each valid step with its mask
    batch = MaskedRecurrentPolicyBatch(
        batch.observations.double(),
        batch.actions if batch.actions.dtype == torch.long else batch.actions.double(),
        batch.old_log_prob.double(),
        batch.advantages.double(),
        tuple(state.double() for state in batch.initial_states),
        batch.episode_starts.double(),
        batch.mask,
        batch.action_masks,
    )
    reference = UnrolledLogits(model.policy, raw, torch.float64)
    names = {id(p): "policy." + name for name, p in model.policy.named_parameters()}
    actor_names = [names[id(p)] for p in model._actor_params]
    sizes = COMPONENTS[space]

    def log_probs_at(flat: torch.Tensor) -> list[torch.Tensor]:
        parameters = dict(zip(actor_names, unflatten_like(flat, model._actor_params), strict=True))
        return masked_log_softmax(functional_call(reference, parameters, ()), masks, sizes)

    return model, batch, log_probs_at, masks, sizes


def theta(model) -> torch.Tensor:
    return flatten([p.detach() for p in model._actor_params])


def set_theta(model, flat: torch.Tensor) -> None:
    with torch.no_grad():
        for parameter, value in zip(model._actor_params, unflatten_like(flat, model._actor_params), strict=True):
            parameter.copy_(value)


def test_surrogate_gradient_and_kl_equal_the_explicit_unrolled_ones(unrolled_case):
    model, batch, log_probs_at, masks, sizes = unrolled_case
    step = model.make_policy_step()
    linearized = step.linearize(batch)
    old = [part.detach() for part in log_probs_at(theta(model))]

    def surrogate(flat: torch.Tensor) -> torch.Tensor:
        ratio = torch.exp(explicit_log_prob(log_probs_at(flat), batch.actions) - batch.old_log_prob)
        return (ratio * batch.advantages).mean()

    torch.testing.assert_close(linearized.gradient, torch.func.grad(surrogate)(theta(model)), rtol=1e-7, atol=1e-12)
    assert linearized.objective == pytest.approx(float(surrogate(theta(model))), abs=1e-12)
    # The invalid actions have probability zero in the step's distributions.
    with torch.no_grad():
        log_prob_of_step = step.batch_distribution(batch).log_prob(batch.actions)
    torch.testing.assert_close(log_prob_of_step, explicit_log_prob(old, batch.actions), rtol=1e-10, atol=1e-12)
    # Away from θ_old (as in the line search): the KL of the masked distributions of the re-run sequences.
    shifted = theta(model) + 0.1 * torch.randn(
        theta(model).shape[0], generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    set_theta(model, shifted)
    with torch.no_grad():
        kl = kl_per_state(linearized.old_distribution, step.batch_distribution(batch))
    expected = explicit_kl(old, log_probs_at(shifted), masks, sizes)
    assert float(kl.mean()) > 1e-4
    torch.testing.assert_close(kl, expected, rtol=1e-9, atol=1e-12)


def test_fisher_products_equal_the_explicit_hessian_of_the_unrolled_masked_kl(unrolled_case):
    """Closed form and double backpropagation, against the Hessian of the explicit mean masked KL (no NaN from -1e8)."""
    model, batch, log_probs_at, masks, sizes = unrolled_case
    old = [part.detach() for part in log_probs_at(theta(model))]

    def mean_kl(flat: torch.Tensor) -> torch.Tensor:
        return explicit_kl(old, log_probs_at(flat), masks, sizes).mean()

    hessian = torch.autograd.functional.hessian(mean_kl, theta(model))
    assert hessian.abs().max() > 0 and torch.isfinite(hessian).all()
    for method in ("gauss_newton", "kl_hessian"):
        model.fisher_product = method
        linearized = model.make_policy_step().linearize(batch)
        generator = torch.Generator().manual_seed(0)
        for _ in range(3):
            v = torch.randn(hessian.shape[0], generator=generator, dtype=torch.float64)
            torch.testing.assert_close(linearized.fisher_product(v), hessian @ v, rtol=1e-6, atol=1e-10, msg=method)


def test_masks_change_the_step_maths(unrolled_case):
    """The reference can tell: without the masks the step's gradient differs from the masked one."""
    model, batch, _, _, _ = unrolled_case
    unmasked = MaskedRecurrentPolicyBatch(
        batch.observations,
        batch.actions,
        batch.old_log_prob,
        batch.advantages,
        batch.initial_states,
        batch.episode_starts,
        batch.mask,
    )
    masked_gradient = model.make_policy_step().linearize(batch).gradient
    unmasked_gradient = model.make_policy_step().linearize(unmasked).gradient
    assert float((masked_gradient - unmasked_gradient).abs().max()) > 1e-6


def test_fisher_sub_sampling_keeps_each_valid_step_with_its_mask(no_rotation):
    model = masked_recurrent_model("multidiscrete", n_envs=3, n_steps=16, episode_length=6)
    batch = model._policy_batch(next(model.rollout_buffer.get(batch_size=None)))
    assert isinstance(batch, MaskedRecurrentPolicyBatch) and batch.action_masks is not None
    selected = batch.valid_steps_of_every(2)
    every_other = batch.every(2)
    assert isinstance(every_other, MaskedRecurrentPolicyBatch) and every_other.action_masks is not None
    assert torch.equal(every_other.action_masks, batch.action_masks[selected])
    assert torch.equal(every_other.actions, batch.actions[selected])
    model.sub_sampling_factor = 2
    model.fisher_sub_sampling_factor = 2
    model.train()  # and the update runs on it


def step_result(model, step, batch) -> tuple[list[torch.Tensor], tuple[float, ...]]:
    """The weights after ``step`` on ``batch`` from the model's current ones (put back after), and its statistics."""
    before = [p.detach().clone() for p in model.policy.parameters()]
    stats = step.take(batch)
    after = [p.detach().clone() for p in model.policy.parameters()]
    with torch.no_grad():
        for parameter, value in zip(model.policy.parameters(), before, strict=True):
            parameter.copy_(value)
    return after, tuple(stats.to_floats())


@pytest.mark.parametrize("space", sorted(SPACES))
def test_all_valid_masks_take_recurrent_trpos_step_bit_for_bit(space):
    model = masked_recurrent_model(space, n_envs=3, n_steps=16, episode_length=6)
    batch = model._policy_batch(next(model.rollout_buffer.get(batch_size=None)))
    assert isinstance(batch, MaskedRecurrentPolicyBatch) and batch.action_masks is not None
    all_valid = MaskedRecurrentPolicyBatch(**{**vars(batch), "action_masks": torch.ones_like(batch.action_masks)})
    unmasked = RecurrentPolicyBatch(
        batch.observations,
        batch.actions,
        batch.old_log_prob,
        batch.advantages,
        batch.initial_states,
        batch.episode_starts,
        batch.mask,
    )
    masked_weights, masked_stats = step_result(model, model.make_policy_step(), all_valid)
    plain_weights, plain_stats = step_result(model, model.make_policy_step(), unmasked)
    assert masked_stats[2] == 1.0, "the step must be accepted for the comparison to mean something"
    np.testing.assert_array_equal(masked_stats, plain_stats)
    assert all(torch.equal(a, b) for a, b in zip(masked_weights, plain_weights, strict=True))
    if space == "discrete":  # RecurrentTRPO's own step class, unchanged, on the same policy and sequences: the same bits
        recurrent_step = RecurrentPolicyStep(model.policy, model._actor_params, model.make_policy_step().settings)
        recurrent_weights, recurrent_stats = step_result(model, recurrent_step, unmasked)
        np.testing.assert_array_equal(recurrent_stats, masked_stats)
        assert all(torch.equal(a, b) for a, b in zip(masked_weights, recurrent_weights, strict=True))
    # And the real masks change it.
    real_weights, _ = step_result(model, model.make_policy_step(), batch)
    assert not all(torch.equal(a, b) for a, b in zip(masked_weights, real_weights, strict=True))


@pytest.mark.parametrize("space", ["discrete", "multidiscrete"])
def test_same_seed_same_initial_weights_as_recurrent_trpo(space):
    """Discrete and MultiDiscrete heads are SB3's modules: a seed gives RecurrentTRPO's policy, parameter for parameter."""
    env = make_vec_env(lambda: MaskedRandomEnv(SPACES[space]), n_envs=2, seed=0)
    ours = MaskableRecurrentTRPO("MlpLstmPolicy", env, n_steps=8, batch_size=8, seed=3, policy_kwargs=TINY_LSTM)
    theirs = RecurrentTRPO("MlpLstmPolicy", env, n_steps=8, batch_size=8, seed=3, policy_kwargs=TINY_LSTM)
    pairs = list(zip(ours.policy.state_dict().items(), theirs.policy.state_dict().items(), strict=True))
    assert all(a[0] == b[0] and torch.equal(a[1], b[1]) for a, b in pairs)


def test_the_step_bounds_the_masked_kl_and_keeps_invalid_actions_at_zero():
    model = masked_recurrent_model("multidiscrete", n_envs=3, n_steps=16, episode_length=6)
    batch = model._policy_batch(next(model.rollout_buffer.get(batch_size=None)))
    step = model.make_policy_step()
    old = step.batch_distribution(batch)
    old = with_parameters(old, [p.detach() for p in distribution_parameters(old) or []])
    weights, stats = step_result(model, step, batch)
    assert stats[2] == 1.0
    with torch.no_grad():
        for parameter, value in zip(model.policy.parameters(), weights, strict=True):
            parameter.copy_(value)
        new = step.batch_distribution(batch)
        kl = kl_per_state(old, new).mean()
    assert 0 < float(kl) <= model.target_kl
    assert float(kl) == pytest.approx(stats[1], rel=1e-5)
    assert batch.action_masks is not None
    invalid = ~batch.action_masks.bool()
    probabilities = torch.cat([component.probs for component in new.distribution], dim=1)
    assert invalid.any() and torch.equal(probabilities[invalid], torch.zeros_like(probabilities[invalid]))


def test_the_buffer_stores_each_steps_masks_and_pads_them_valid():
    recorder = RecordMasks()
    model = masked_recurrent_model("discrete", n_envs=3, n_steps=16, episode_length=6, callback=recorder)
    raw = raw_buffer(model)
    asked = np.stack(recorder.masks[-16:]).astype(np.float32)  # the second rollout's steps, (n_steps, n_envs, 4)
    np.testing.assert_array_equal(raw["action_masks"], asked)
    # Every action taken was valid under its step's mask.
    taken = np.take_along_axis(raw["action_masks"], raw["actions"].astype(int), axis=2)
    assert taken.all()
    samples = next(model.rollout_buffer.get(batch_size=None))
    valid = samples.mask > 0.5
    assert not bool(valid.all()), "some padding"
    assert bool((samples.action_masks[~valid] == 1).all())
    stored = env_after_env(raw["action_masks"])
    assert sorted(map(tuple, samples.action_masks[valid].tolist())) == sorted(map(tuple, stored.tolist()))
