"""
One fit of the critic as data: what this process sends the critic's worker process, and what comes back.

The pipelined critic (:mod:`.critic_pipeline`) fits the critic in another process while the next rollout is collected.
That process runs the same code as the sequential update (:func:`~sb3_trpo_plugin.trpo.critic_fit.fit_critic` with
:class:`~sb3_trpo_plugin.critic.MLPRegression`'s hand-derived gradient and the critic's own optimiser), on the same
numbers: the critic head's weights, the optimiser's settings and state, the features the head is fed, the λ-returns,
and the state of torch's generator where the sequential update draws the epochs' shuffles: the worker draws the same
permutations from it, and the sending process draws them too (and discards them), so that no random stream shifts.
Besides the weights and optimiser state, a job holds one copy of the rollout's features and returns.
Everything travels as NumPy arrays and Python values, pickled by value (no tensor shared between the processes).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from sb3_trpo_plugin.common.reductions import OneProcess
from sb3_trpo_plugin.compat.torch_features import fused_adam_on_cpu
from sb3_trpo_plugin.critic import MLPRegression
from sb3_trpo_plugin.trpo.critic_fit import CriticRegression, fit_critic


@dataclass(frozen=True)
class CriticFitJob:
    """
    One fit of a plain MLP critic head, ``n_epochs`` epochs of minibatch regression.

    :param weights: each linear layer's weight, then its bias when it has one, first layer to last
        (:meth:`MLPRegression.parameters`'s order)
    :param has_bias: whether each linear layer has a bias
    :param activations: ``"tanh"`` or ``"relu"`` after each linear layer but the last
    :param optimizer_class: the critic optimiser's class (importable: it is pickled by reference)
    :param optimizer_settings: the keywords its constructor takes from the parameter group (``lr``, ``betas``, ``fused``…)
    :param optimizer_state: the optimiser's ``state_dict()``, tensors as arrays (:func:`state_as_arrays`)
    :param optimizer_order: the optimiser's parameters, as indices into ``weights``
    :param inputs: the features the head is fed, ``(n_rows, in_features)``
    :param returns: the λ-returns, ``(n_rows,)``
    :param shuffles: the state of torch's CPU generator from which the epochs' shuffles are drawn, one ``randperm`` per
        epoch (as :data:`~sb3_trpo_plugin.common.reductions.ONE_PROCESS` draws them)
    :param n_epochs: passes over the rows
    :param batch_size: rows per minibatch
    """

    weights: list[np.ndarray]
    has_bias: list[bool]
    activations: list[str]
    optimizer_class: type[torch.optim.Optimizer]
    optimizer_settings: dict[str, Any]
    optimizer_state: dict[str, Any]
    optimizer_order: list[int]
    inputs: np.ndarray
    returns: np.ndarray
    shuffles: np.ndarray
    n_epochs: int
    batch_size: int


@dataclass(frozen=True)
class CriticFitResult:
    """
    What one fit returns.

    :param weights: the fitted weights, in the job's order
    :param optimizer_state: the optimiser's state after the fit, tensors as arrays (the ``"state"`` of its ``state_dict``)
    :param mean_loss: the mean minibatch loss (``nan`` when there were none), as the sequential fit returns it
    """

    weights: list[np.ndarray]
    optimizer_state: dict[Any, Any]
    mean_loss: float


def critic_fit_job(
    network: MLPRegression,
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    returns: torch.Tensor,
    shuffles: torch.Tensor,
    n_epochs: int,
    batch_size: int,
) -> CriticFitJob:
    """
    The job of fitting ``network`` (the critic's head, whose trained parameters are exactly ``optimizer``'s) on
    ``inputs`` and ``returns`` with the given shuffles.

    :param network: the critic head's hand-derived regression
    :param optimizer: the critic's optimiser (one parameter group)
    :param inputs: the features the head is fed
    :param returns: the λ-returns
    :param shuffles: torch's generator state where the sequential fit draws the epochs' shuffles
    :param n_epochs: passes over the rows
    :param batch_size: rows per minibatch
    """
    parameters = network.parameters()
    position = {id(p): i for i, p in enumerate(parameters)}
    (group,) = optimizer.param_groups
    constructor = inspect.signature(type(optimizer).__init__).parameters
    return CriticFitJob(
        weights=[p.detach().cpu().numpy().copy() for p in parameters],
        has_bias=[linear.bias is not None for linear in network.linears],
        activations=list(network.activations),
        optimizer_class=type(optimizer),
        optimizer_settings={k: v for k, v in group.items() if k != "params" and k in constructor},
        optimizer_state=state_as_arrays(optimizer.state_dict()),
        optimizer_order=[position[id(p)] for p in group["params"]],
        inputs=inputs.detach().cpu().numpy().copy(),
        returns=returns.detach().cpu().numpy().copy(),
        shuffles=shuffles.numpy().copy(),
        n_epochs=n_epochs,
        batch_size=batch_size,
    )


class RedrawnShuffles(OneProcess):
    """
    The reductions of one process that draws each epoch's shuffle from a generator of its own, started from the state
    the sending process's generator had: the same permutations, one ``randperm`` per epoch.

    :param generator_state: a state of torch's CPU generator
    """

    def __init__(self, generator_state: np.ndarray):
        self._generator = torch.Generator()
        self._generator.set_state(torch.from_numpy(generator_state))

    def minibatch_order(self, n_rows: int, batch_size: int, device: torch.device) -> tuple[torch.Tensor, int]:
        return torch.randperm(n_rows, generator=self._generator).to(device), batch_size


class CriticHead:
    """
    A critic head rebuilt from jobs, with its optimiser: kept from job to job while the jobs' layers and optimiser
    settings stay the same (the optimiser's proofs, :mod:`~sb3_trpo_plugin.replicas.fused_adam`, then hold), rebuilt
    otherwise. The weights and optimiser state come from each job.
    """

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._network: MLPRegression | None = None
        self._optimizer: torch.optim.Optimizer | None = None
        self._trained: list[nn.Parameter] = []

    def fit(self, job: CriticFitJob) -> CriticFitResult:
        """
        Fit the head as :meth:`TRPO._regress_critic <sb3_trpo_plugin.TRPO>` would: the same regression, the same
        optimiser steps, the given shuffles.

        :param job: the weights, optimiser, data and shuffles
        :return: the fitted weights, the optimiser's state and the mean loss
        """
        network, optimizer, trained = self._prepared(job)
        copy_weights(network.parameters(), job.weights)
        optimizer.load_state_dict(state_as_tensors(job.optimizer_state, len(trained)))
        inputs, returns = torch.from_numpy(job.inputs), torch.from_numpy(job.returns)
        regression = CriticRegression(
            inputs,
            lambda batch, targets: network.loss_and_gradients(cast(torch.Tensor, batch), targets),
            network.gradients_are_finite,
        )
        loss = fit_critic(
            regression,
            returns,
            optimizer,
            trained,
            [],
            n_epochs=job.n_epochs,
            batch_size=job.batch_size,
            reductions=RedrawnShuffles(job.shuffles),
        )
        return CriticFitResult(
            weights=[p.detach().numpy().copy() for p in network.parameters()],
            optimizer_state=state_as_arrays(optimizer.state_dict())["state"],
            mean_loss=loss,
        )

    def _prepared(self, job: CriticFitJob) -> tuple[MLPRegression, torch.optim.Optimizer, list[nn.Parameter]]:
        """The head and optimiser for ``job``'s layers and settings, kept or rebuilt."""
        key = (
            tuple((w.shape, w.dtype.str) for w in job.weights),
            tuple(job.has_bias),
            tuple(job.activations),
            job.optimizer_class,
            repr(sorted(job.optimizer_settings.items())),
            tuple(job.optimizer_order),
        )
        if key != self._key or self._network is None or self._optimizer is None:
            weights = iter(job.weights)
            linears = []
            for has_bias in job.has_bias:
                weight = next(weights)
                linear = nn.Linear(weight.shape[1], weight.shape[0], bias=has_bias, dtype=_torch_dtype(weight))
                if has_bias:
                    next(weights)
                linears.append(linear)
            self._network = MLPRegression(linears, job.activations)
            parameters = self._network.parameters()
            self._trained = [parameters[i] for i in job.optimizer_order]
            self._optimizer = job.optimizer_class(self._trained, **job.optimizer_settings)
            self._key = key
        return self._network, self._optimizer, self._trained


def warm_up_job() -> CriticFitJob:
    """
    A small fit with the optimiser the critic usually has (Adam, fused where torch has it on the CPU): a worker runs it
    before its first job, so that the imports of the first optimiser step and the kernels' set-up are not timed there.
    """
    generator = np.random.default_rng(0)
    weights = [generator.standard_normal(shape).astype(np.float32) for shape in [(4, 3), (4,), (1, 4), (1,)]]
    settings: dict[str, Any] = {"lr": 1e-3, "fused": True} if fused_adam_on_cpu() else {"lr": 1e-3}
    optimizer = torch.optim.Adam([nn.Parameter(torch.from_numpy(w)) for w in weights], **settings)
    return CriticFitJob(
        weights=weights,
        has_bias=[True, True],
        activations=["tanh"],
        optimizer_class=torch.optim.Adam,
        optimizer_settings=settings,
        optimizer_state=state_as_arrays(optimizer.state_dict()),
        optimizer_order=[0, 1, 2, 3],
        inputs=generator.standard_normal((8, 3)).astype(np.float32),
        returns=generator.standard_normal(8).astype(np.float32),
        shuffles=torch.Generator().manual_seed(0).get_state().numpy(),
        n_epochs=3,
        batch_size=4,
    )


def state_as_arrays(state: dict[str, Any]) -> dict[str, Any]:
    """An optimiser's ``state_dict()`` with every tensor as a NumPy array (same dtype and shape; pickled by value)."""
    return {
        "state": {
            index: {
                name: value.detach().cpu().numpy().copy() if torch.is_tensor(value) else value for name, value in s.items()
            }
            for index, s in state["state"].items()
        },
        "param_groups": [dict(group) for group in state["param_groups"]],
    }


def state_as_tensors(state: dict[str, Any], n_parameters: int) -> dict[str, Any]:
    """:func:`state_as_arrays`'s result back as a ``state_dict`` to load, its group over ``n_parameters`` parameters."""
    (group,) = state["param_groups"]
    return {
        "state": {
            index: {name: torch.from_numpy(value) if isinstance(value, np.ndarray) else value for name, value in s.items()}
            for index, s in state["state"].items()
        },
        "param_groups": [{**group, "params": list(range(n_parameters))}],
    }


def state_of_result(result: CriticFitResult, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The ``state_dict`` for ``optimizer`` after the fit: the result's state with the optimiser's own parameter group."""
    arrays = {"state": result.optimizer_state, "param_groups": optimizer.state_dict()["param_groups"]}
    return state_as_tensors(arrays, len(optimizer.param_groups[0]["params"]))


def copy_weights(parameters: Sequence[nn.Parameter], weights: Sequence[np.ndarray]) -> None:
    """Write ``weights`` into ``parameters`` in place (views of them, e.g. the hand-derived regression's, stay valid)."""
    with torch.no_grad():
        for parameter, weight in zip(parameters, weights, strict=True):
            parameter.copy_(torch.from_numpy(weight))


def _torch_dtype(array: np.ndarray) -> torch.dtype:
    """The torch dtype of a NumPy array's."""
    return torch.from_numpy(array[:0]).dtype
