"""
Each fast path proves itself against the upstream computation before it first serves a model; a simulated upstream
change (an SB3 or torch method patched to compute something else) moves that model to the upstream path, warns once,
and the model then computes exactly what the upstream computation does: SB3's own rollout loop, autograd, Adam.step.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from unittest import mock

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.torch_layers import MlpExtractor
from torch import nn

from sb3_trpo_plugin import TRPO, CPUOnlyRolloutWarning, FastPathMismatchWarning, FastPathWarning
from sb3_trpo_plugin.replicas import critic_gradient, layers
from sb3_trpo_plugin.replicas.actor_jacobian import ACTOR_JACOBIAN, actor_jacobian
from sb3_trpo_plugin.replicas.critic_gradient import CRITIC_FEATURES, CRITIC_GRADIENT, critic_head_regression
from sb3_trpo_plugin.replicas.eligibility import unrecognised_reason
from sb3_trpo_plugin.replicas.fused_adam import FUSED_ADAM, optimizer_step
from sb3_trpo_plugin.replicas.inference import LEAN_INFERENCE, PolicyInference, policy_inference
from sb3_trpo_plugin.replicas.proofs import proofs_of
from sb3_trpo_plugin.trpo.critic_fit import critic_regression
from tests.conftest import ACTION_SPACES, RandomEnv, filled_model, policy_batch
from tests.test_rollout import StepOutputReader, assert_same_rollouts, collect, make_model


class Mismatches(Sequence[warnings.WarningMessage]):
    """The :class:`FastPathMismatchWarning` warnings recorded so far."""

    def __init__(self, caught: list[warnings.WarningMessage]) -> None:
        self.caught = caught

    def _found(self) -> list[warnings.WarningMessage]:
        return [w for w in self.caught if issubclass(w.category, FastPathMismatchWarning)]

    def __len__(self) -> int:
        return len(self._found())

    def __getitem__(self, index: Any) -> Any:
        return self._found()[index]


@pytest.fixture
def mismatches() -> Iterator[Mismatches]:
    """The :class:`FastPathMismatchWarning` warnings of the test, every one of them (no deduplication by location)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield Mismatches(caught)


def scaled_forward_actor(self: MlpExtractor, features: torch.Tensor) -> torch.Tensor:
    """A future SB3 whose MLP extractor computes another latent for the actor."""
    return self.policy_net(features) * 1.5


def scaled_forward_critic(self: MlpExtractor, features: torch.Tensor) -> torch.Tensor:
    """A future SB3 whose MLP extractor computes another latent for the critic."""
    return self.value_net(features) * 1.5


ROLLOUT_CASES: dict[str, Callable[[], TRPO]] = {
    "cartpole": lambda: TRPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=3), n_steps=32, batch_size=64, seed=0),
    "pendulum": lambda: TRPO("MlpPolicy", make_vec_env("Pendulum-v1", n_envs=2, seed=3), n_steps=32, batch_size=64, seed=0),
    "multidiscrete": lambda: make_model(ACTION_SPACES["multidiscrete"]),
    "gsde": lambda: make_model(ACTION_SPACES["box"], use_sde=True, sde_sample_freq=4, n_envs=3),
}


@pytest.mark.parametrize("case", ROLLOUT_CASES)
@pytest.mark.parametrize("change", ["forward_actor", "forward_critic"])
def test_lean_rollout_falls_back_to_sb3s_loop_when_sb3_computes_otherwise(case, change, monkeypatch, mismatches) -> None:
    make = ROLLOUT_CASES[case]
    patched = scaled_forward_actor if change == "forward_actor" else scaled_forward_critic
    monkeypatch.setattr(MlpExtractor, change, patched)
    # Without its proof the lean inference would act on, unaware: its rollout is not SB3's under the changed release.
    unproved = make()
    proofs_of(unproved.policy)._verdicts[(LEAN_INFERENCE.name, "")] = True
    with mock.patch.object(PolicyInference, "upstream_mismatch") as proof:
        unaware = collect(unproved, lean=True, callback=StepOutputReader(), n_rollouts=2)
    proof.assert_not_called()
    sb3 = collect(make(), lean=False, n_rollouts=2)
    with pytest.raises(AssertionError):
        assert_same_rollouts(unaware, sb3, exact=False)

    model = make()
    with mock.patch.object(
        OnPolicyAlgorithm, "collect_rollouts", autospec=True, side_effect=OnPolicyAlgorithm.collect_rollouts
    ) as sb3_loop:
        proved = collect(model, lean=True, n_rollouts=2)
    assert sb3_loop.call_count == 2  # SB3's own loop collected both rollouts
    assert_same_rollouts(proved, sb3)  # bit for bit
    assert len(mismatches) == 1, [str(w.message) for w in mismatches]  # once, not once per rollout
    message = str(mismatches[0].message)
    assert "the lean rollout inference does not reproduce the policy's own forward" in message
    assert f"torch {torch.__version__}" in message and "stable-baselines3 " in message
    assert proofs_of(model.policy).verdict(LEAN_INFERENCE) is False
    assert policy_inference(model.policy) is None  # later rollouts do not even build it


def test_maskable_rollout_falls_back_to_sb3_contribs_loop(monkeypatch, mismatches) -> None:
    from sb3_contrib.common.envs import InvalidActionEnvMultiDiscrete

    from sb3_trpo_plugin import MaskableTRPO
    from sb3_trpo_plugin.masked.on_policy import MaskedOnPolicyAlgorithm

    def make() -> MaskableTRPO:
        env = make_vec_env(lambda: InvalidActionEnvMultiDiscrete(dims=[3, 4], n_invalid_actions=2), n_envs=2, seed=1)
        return MaskableTRPO("MlpPolicy", env, n_steps=16, batch_size=32, seed=0)

    monkeypatch.setattr(MlpExtractor, "forward_actor", scaled_forward_actor)
    contrib_model = make()
    contrib_model._use_masking = True
    contrib = collect(contrib_model, lean=False, n_rollouts=2)
    model = make()
    model._use_masking = True
    with mock.patch.object(
        MaskedOnPolicyAlgorithm, "collect_rollouts", autospec=True, side_effect=MaskedOnPolicyAlgorithm.collect_rollouts
    ) as contrib_loop:
        proved = collect(model, lean=True, n_rollouts=2)
    assert contrib_loop.call_count == 2
    assert_same_rollouts(proved, contrib)
    assert len(mismatches) == 1 and "lean rollout inference" in str(mismatches[0].message)


@pytest.mark.parametrize("case", ["cartpole", "gsde"])
def test_proof_leaves_the_rollout_as_it_was_and_runs_once_per_policy(case, mismatches) -> None:
    reference = collect(ROLLOUT_CASES[case](), lean=False, n_rollouts=2)  # (SB3 seeds torch's global generator)
    model = ROLLOUT_CASES[case]()
    with mock.patch.object(
        PolicyInference, "upstream_mismatch", autospec=True, side_effect=PolicyInference.upstream_mismatch
    ) as proof:
        rollouts = collect(model, lean=True, callback=None, n_rollouts=2)
    assert proof.call_count == 1  # the first rollout only
    assert_same_rollouts(rollouts, reference, exact=False)  # the generator, modes and noise were left alone
    assert proofs_of(model.policy).verdict(LEAN_INFERENCE) is True
    model.policy = ROLLOUT_CASES[case]().policy  # another policy object is proved afresh
    assert proofs_of(model.policy).verdict(LEAN_INFERENCE) is None
    collect(model, lean=True, n_rollouts=1)
    assert proof.call_count == 1 and proofs_of(model.policy).verdict(LEAN_INFERENCE) is True
    assert not mismatches


def test_a_proof_that_cannot_conclude_records_nothing() -> None:
    """NaN weights make SB3's distribution refuse its parameters: no verdict, SB3's loop raises its own error."""
    model = make_model(ACTION_SPACES["discrete"])
    _, callback = model._setup_learn(10**6)
    callback.on_training_start({}, {})  # checks the weights: make them NaN after
    with torch.no_grad():
        model.policy.action_net.bias[0] = float("nan")
    with pytest.raises(ValueError, match="Expected parameter logits"):
        model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    assert proofs_of(model.policy).verdict(LEAN_INFERENCE) is None


def test_a_lean_inference_that_cannot_be_built_or_raises_is_a_mismatch(monkeypatch, mismatches) -> None:
    def broken(module: nn.Module) -> Any:
        raise AttributeError("'FlattenExtractor' object has no attribute 'flatten'")  # e.g. a renamed SB3 attribute

    monkeypatch.setattr(layers, "features_extractor", broken)
    monkeypatch.setattr("sb3_trpo_plugin.replicas.inference.features_extractor", broken)
    reference = collect(make_model(ACTION_SPACES["box"]), lean=False, n_rollouts=1)
    assert_same_rollouts(collect(make_model(ACTION_SPACES["box"]), lean=True, n_rollouts=1), reference)
    assert len(mismatches) == 1 and "building it raised AttributeError" in str(mismatches[0].message)
    monkeypatch.undo()

    reference = collect(make_model(ACTION_SPACES["discrete"]), lean=False, n_rollouts=1)
    with mock.patch("sb3_trpo_plugin.replicas.heads._CategoricalHead.__call__", side_effect=RuntimeError("kernel gone")):
        assert_same_rollouts(collect(make_model(ACTION_SPACES["discrete"]), lean=True, n_rollouts=1), reference)
    assert len(mismatches) == 2 and "it raised RuntimeError: kernel gone" in str(mismatches[1].message)


@pytest.mark.parametrize("space", ["discrete", "box", "multidiscrete"])
def test_actor_jacobian_falls_back_to_autograd_when_sb3_computes_otherwise(space, monkeypatch, mismatches) -> None:
    model = filled_model(RandomEnv(ACTION_SPACES[space]), n_steps=32, batch_size=32)
    batch = policy_batch(model)
    distribution = model.policy.get_distribution(batch.observations)
    assert actor_jacobian(model.policy, model._actor_params, batch.observations, distribution) is not None
    assert proofs_of(model.policy).verdict(ACTOR_JACOBIAN, "cpu, torch.float32") is True

    model = filled_model(RandomEnv(ACTION_SPACES[space]), n_steps=32, batch_size=32)
    monkeypatch.setattr(MlpExtractor, "forward_actor", scaled_forward_actor)
    batch = policy_batch(model)
    step = model.make_policy_step().linearize(batch)  # proves, and falls back
    assert len(mismatches) == 1 and "the hand-derived actor Jacobian (cpu, torch.float32)" in str(mismatches[0].message)
    distribution = model.policy.get_distribution(batch.observations)
    assert actor_jacobian(model.policy, model._actor_params, batch.observations, distribution) is None
    monkeypatch.setattr("sb3_trpo_plugin.trpo.policy_step.actor_jacobian", lambda *args, **kwargs: None)
    autograd = model.make_policy_step().linearize(batch)
    assert torch.equal(step.gradient, autograd.gradient)  # exactly autograd's path
    vector = torch.randn(step.gradient.shape, generator=torch.Generator().manual_seed(0))
    assert torch.equal(step.fisher_product(vector), autograd.fisher_product(vector))
    assert len(mismatches) == 1


def test_critic_gradient_falls_back_to_autograd_when_sb3_computes_otherwise(monkeypatch, mismatches) -> None:
    def fitted(model: TRPO) -> tuple[float, list[torch.Tensor]]:
        rollout = next(model.rollout_buffer.get(batch_size=None))
        torch.manual_seed(5)
        loss = model._fit_critic(rollout)
        return loss, [p.detach().clone() for p in model._critic_params]

    make = lambda: filled_model(make_vec_env("CartPole-v1", n_envs=2, seed=0), n_steps=32, batch_size=16)  # noqa: E731
    model = make()
    features = model.policy.extract_features(torch.randn(4, 4), model.policy.vf_features_extractor)
    assert critic_head_regression(model.policy, model._critic_params, features) is not None  # proved: serves

    monkeypatch.setattr(MlpExtractor, "forward_critic", scaled_forward_critic)
    model = make()  # (its rollout: the lean inference is disproved too, and SB3's loop collects it)
    loss, weights = fitted(model)
    critic_mismatches = [w for w in mismatches if "critic" in str(w.message)]
    assert len(critic_mismatches) == 1 and "the critic's hand-derived gradient" in str(critic_mismatches[0].message)
    assert proofs_of(model.policy).verdict(CRITIC_GRADIENT, "cpu, torch.float32") is False
    monkeypatch.setattr(critic_gradient, "plain_regression", lambda layers: None)  # autograd, as for any other critic
    autograd_loss, autograd_weights = fitted(make())
    assert loss == autograd_loss
    for got, expected in zip(weights, autograd_weights, strict=True):
        assert torch.equal(got, expected)
    assert len([w for w in mismatches if "critic" in str(w.message)]) == 1


def test_critic_values_of_another_policy_class_are_proved_before_its_features_are_computed_once(
    monkeypatch, mismatches
) -> None:
    sb3_contrib = pytest.importorskip("sb3_contrib")
    from sb3_contrib.common.envs import InvalidActionEnvDiscrete

    from sb3_trpo_plugin import MaskableTRPO

    sb3_model = filled_model(make_vec_env("CartPole-v1", n_envs=2, seed=0), n_steps=32, batch_size=16)
    sb3_rollout = next(sb3_model.rollout_buffer.get(batch_size=None))
    assert critic_regression(sb3_model.policy, sb3_model._critic_params, sb3_rollout.observations).network is not None
    assert proofs_of(sb3_model.policy).verdict(CRITIC_FEATURES) is None  # SB3's own predict_values: nothing to prove

    def regression_of_a_new_model() -> tuple[Any, Any]:
        model = MaskableTRPO("MlpPolicy", InvalidActionEnvDiscrete(dim=20, n_invalid_actions=10), n_steps=32, seed=0)
        model.learn(32)
        observations = next(model.rollout_buffer.get(batch_size=None)).observations
        return model, critic_regression(model.policy, model._critic_params, observations)

    model, regression = regression_of_a_new_model()  # sb3-contrib's predict_values, proved: the features, once
    assert regression.network is not None and regression.inputs.shape[1] == 20
    assert proofs_of(model.policy).verdict(CRITIC_FEATURES) is True and len(mismatches) == 0

    policy_class = sb3_contrib.common.maskable.policies.MaskableActorCriticPolicy
    original = policy_class.predict_values
    monkeypatch.setattr(policy_class, "predict_values", lambda self, obs: 2 * original(self, obs))  # computes otherwise
    model, regression = regression_of_a_new_model()
    assert regression.network is None  # autograd through the policy's own predict_values, on the observations
    assert proofs_of(model.policy).verdict(CRITIC_FEATURES) is False
    assert len(mismatches) == 1 and "the critic's values from its features" in str(mismatches[0].message)


def test_fused_adam_step_falls_back_to_adam_step_when_torch_computes_otherwise(monkeypatch, mismatches) -> None:
    params = [nn.Parameter(torch.zeros(3))]
    try:
        optimizer = torch.optim.Adam(params, lr=0.1, fused=True)
    except RuntimeError:  # torch before 2.4 has no fused Adam on the CPU
        pytest.skip("this torch has no fused Adam on the CPU: optimizer_step is Adam.step")
    if not callable(getattr(torch, "_fused_adam_", None)):
        pytest.skip("this torch has no fused Adam kernel: optimizer_step is Adam.step")
    assert optimizer_step(optimizer) != optimizer.step  # proved: the direct step serves
    assert proofs_of(optimizer).verdict(FUSED_ADAM, "cpu, amsgrad=False, maximize=False, weight decay=False") is True

    import torch.optim.adam as adam_module

    original = adam_module._fused_adam

    def halved_learning_rate(*args: Any, **kwargs: Any) -> None:  # a torch whose Adam.step does something else
        original(*args, **{**kwargs, "lr": kwargs["lr"] / 2})

    monkeypatch.setattr(adam_module, "_fused_adam", halved_learning_rate)
    optimizer = torch.optim.Adam(params, lr=0.1, fused=True)
    assert optimizer_step(optimizer) == optimizer.step
    assert optimizer_step(optimizer) == optimizer.step
    assert len(mismatches) == 1 and "the direct fused Adam step" in str(mismatches[0].message)
    assert "the parameters of tensor 0 differ" in str(mismatches[0].message)


def test_mismatch_warning_is_a_user_warning_of_the_package() -> None:
    assert issubclass(FastPathMismatchWarning, FastPathWarning) and issubclass(FastPathWarning, UserWarning)
    assert issubclass(CPUOnlyRolloutWarning, FastPathWarning)


@pytest.fixture
def simulated_cuda() -> Iterator[None]:
    """A CUDA machine as ``device="auto"`` sees it (``torch.cuda.is_available()``), modules left on the CPU."""
    with (
        mock.patch.object(torch.cuda, "is_available", lambda: True),
        mock.patch.object(nn.Module, "to", lambda self, *args, **kwargs: self),
    ):
        yield


def construction_warnings(make: Callable[[], Any]) -> tuple[Any, list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = make()
    return model, [w for w in caught if "CPU" in str(w.message)]


def test_an_mlp_policy_on_a_gpu_is_warned_about_once(simulated_cuda) -> None:
    model, caught = construction_warnings(lambda: TRPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64))
    assert model.device.type == "cuda"
    assert len(caught) == 1, [str(w.message) for w in caught]  # ours replaces SB3's recommendation: one warning
    assert caught[0].category is CPUOnlyRolloutWarning
    message = str(caught[0].message)
    assert "TRPO on cuda" in message and "device='cpu'" in message and "lean rollout runs on the CPU only" in message
    model, caught = construction_warnings(lambda: TRPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, device="cpu"))
    assert model.device.type == "cpu" and not caught


@pytest.mark.parametrize("variant", ["MaskableTRPO", "RecurrentTRPO"])
def test_the_variants_mlp_policies_on_a_gpu_are_warned_about(variant, simulated_cuda) -> None:
    from sb3_contrib.common.envs import InvalidActionEnvDiscrete

    from sb3_trpo_plugin import MaskableTRPO, RecurrentTRPO

    def make() -> Any:
        if variant == "MaskableTRPO":
            return MaskableTRPO("MlpPolicy", InvalidActionEnvDiscrete(dim=4, n_invalid_actions=1), n_steps=64, batch_size=64)
        return RecurrentTRPO("MlpLstmPolicy", "CartPole-v1", n_steps=64, batch_size=64)

    _, caught = construction_warnings(make)
    assert [w.category for w in caught] == [CPUOnlyRolloutWarning]
    assert f"{variant} on cuda" in str(caught[0].message)


def test_a_policy_on_another_device_takes_sb3s_loop() -> None:
    model = make_model(ACTION_SPACES["discrete"])
    with mock.patch.object(type(model.policy), "device", new_callable=mock.PropertyMock, return_value=torch.device("cuda", 0)):
        assert unrecognised_reason(model.policy) == "the policy is on cuda:0, the lean inference runs on the CPU only"
        assert policy_inference(model.policy) is None


def test_dict_observations_prove_the_inference_too(mismatches) -> None:
    space = spaces.Dict({"vector": spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32), "discrete": spaces.Discrete(4)})
    model = make_model(ACTION_SPACES["box"], space, n_steps=8)
    collect(model, lean=True, n_rollouts=1)
    assert proofs_of(model.policy).verdict(LEAN_INFERENCE) is True and not mismatches
