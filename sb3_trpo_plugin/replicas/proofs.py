"""
Each fast path proves itself against the upstream computation it replicates, where it runs, before it first serves.

The releases a user runs are not the ones the replicas were written against: a newer SB3 may compute its MLP extractor
otherwise, a newer torch may change what ``Adam.step`` does around its fused kernel. So before a fast path first
serves a policy (or an optimiser), it runs side by side with the upstream computation on a small probe, and only a
match lets it serve. A mismatch (or the fast path failing where the upstream does not) moves that object to the
upstream path for good and warns once with a :class:`FastPathMismatchWarning` naming the path and the releases.

Where the verdicts live, and when a proof runs again: a verdict is a property of one object with the installed
releases (the policy's classes and modules, the optimiser's settings), so :func:`proofs_of` keeps it on that object,
in a :class:`FastPathProofs` stored in its ``__dict__``. A new model, a ``load``, a policy or an optimiser replaced
on the model is a new object and is proved afresh; the same object keeps its verdicts for its life, as the releases
do not change under a running process (weights do, and no replica's exactness depends on them). Verdicts are keyed
by path and by what the kernels depend on (device, dtype, settings), so that moving a policy to another device proves
it there again. Nothing is global: two models never share a verdict.

A proof that cannot conclude, because the upstream computation itself raises on the probe (e.g. NaN weights that
SB3's distributions refuse), records nothing: that call takes the upstream path, which raises its own error, and
the next call proves again.
"""

from __future__ import annotations

import contextlib
import math
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

T = TypeVar("T")

#: The attribute of ``__dict__`` under which :func:`proofs_of` keeps an object's verdicts.
_ATTRIBUTE = "_sb3_trpo_fast_path_proofs"


class FastPathWarning(UserWarning):
    """A fast path of ``sb3_trpo_plugin`` does not serve this model: it runs the upstream (SB3, torch) computation."""


class FastPathMismatchWarning(FastPathWarning):
    """
    A fast path computed something else than the upstream computation it replicates, with the installed releases
    (named in the message): the model now runs the upstream computation, whose results are SB3's and torch's own.
    """


class CPUOnlyRolloutWarning(FastPathWarning):
    """
    An MLP policy is on another device than the CPU: small networks train faster on the CPU (SB3 warns alike for its
    PPO and A2C), and the lean rollout runs on the CPU only, so every rollout step there is SB3's own loop.
    """


class UpstreamFailed(Exception):
    """The upstream computation raised on the probe: the proof cannot conclude (the real call will raise alike)."""


@dataclass(frozen=True)
class FastPath:
    """
    A fast path, for the messages: what it is and what it replicates (what serves in its place after a mismatch).

    :param name: e.g. ``"the lean rollout inference"``
    :param upstream: e.g. ``"the policy's own forward in SB3's rollout loop"``
    """

    name: str
    upstream: str


def releases() -> str:
    """The releases the replicas depend on, as the messages name them (sb3-contrib when it is imported)."""
    import stable_baselines3

    named = [f"torch {torch.__version__}", f"stable-baselines3 {stable_baselines3.__version__}"]
    contrib = sys.modules.get("sb3_contrib")
    if contrib is not None:
        named.append(f"sb3-contrib {getattr(contrib, '__version__', '?')}")
    return ", ".join(named)


class FastPathProofs:
    """
    The verdicts of one object's fast paths (see the module's documentation); get it with :func:`proofs_of`.

    :param owner: what the fast paths serve, for the messages (e.g. ``"ActorCriticPolicy"``)
    """

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._verdicts: dict[tuple[str, str], bool] = {}

    def verdict(self, path: FastPath, key: str = "") -> bool | None:
        """
        Whether ``path`` was proved (``True``) or disproved (``False``) for this object, ``None`` when not yet proved.

        :param path: the fast path
        :param key: what its kernels depend on (device, dtype, settings)
        """
        return self._verdicts.get((path.name, key))

    def serves(self, path: FastPath, prove: Callable[[], str | None], key: str = "") -> bool:
        """
        Whether ``path`` may serve: its recorded verdict, else the verdict of ``prove()`` (recorded, and warned about
        once when it is a mismatch).

        :param path: the fast path
        :param prove: runs the fast path and the upstream computation on a probe; returns how they differ (``None``:
            they agree), raises :class:`UpstreamFailed` when the upstream computation raises; any other exception is
            the fast path failing, a mismatch
        :param key: what its kernels depend on (device, dtype, settings): each key is proved on its own
        :return: ``True``: the fast path serves; ``False``: the upstream path does (for good after a mismatch, for
            this call when the proof could not conclude)
        """
        known = self._verdicts.get((path.name, key))
        if known is not None:
            return known
        try:
            mismatch = prove()
        except UpstreamFailed:
            return False
        except Exception as error:  # the fast path failed (e.g. an upstream internal it relies on is gone)
            mismatch = f"it raised {type(error).__name__}: {error}"
        self._verdicts[(path.name, key)] = mismatch is None
        if mismatch is not None:
            self.refuse(path, mismatch, key)
        return mismatch is None

    def refuse(self, path: FastPath, reason: str, key: str = "") -> None:
        """
        Record that ``path`` does not serve this object, and warn (:class:`FastPathMismatchWarning`).

        :param path: the fast path
        :param reason: how it differs from the upstream computation
        :param key: what its kernels depend on
        """
        self._verdicts[(path.name, key)] = False
        where = f" ({key})" if key else ""
        warnings.warn(
            FastPathMismatchWarning(
                f"sb3_trpo_plugin: {path.name}{where} does not reproduce {path.upstream} for this {self.owner} with "
                f"{releases()}: {reason}. This model now uses {path.upstream} instead (the same results as SB3's and "
                "torch's own, more slowly). Please report it with the releases named here."
            ),
            stacklevel=2,
        )


def proofs_of(owner: object) -> FastPathProofs:
    """
    The verdicts of the fast paths that serve ``owner`` (a policy, an optimiser), created empty on first use.

    :param owner: any object with a ``__dict__``
    """
    proofs = vars(owner).get(_ATTRIBUTE)
    if not isinstance(proofs, FastPathProofs):
        proofs = FastPathProofs(type(owner).__name__)
        vars(owner)[_ATTRIBUTE] = proofs  # (plain data in __dict__: not a module, parameter or buffer)
    return proofs


#: The rows of a probe batch: enough to meet every branch of a replica, few enough to cost nothing.
PROBE_ROWS = 8


@contextlib.contextmanager
def state_restored(obj: object) -> Iterator[None]:
    """
    Put back ``obj``'s attributes after the block: for SB3's action distribution, which every ``get_distribution`` or
    ``forward`` of the policy rewrites in place (an upstream computation of a proof must leave the caller's alone).

    :param obj: an object whose state is its ``__dict__``
    """
    saved = dict(vars(obj))
    try:
        yield
    finally:
        vars(obj).clear()
        vars(obj).update(saved)


def probe_generator(seed: int = 0) -> torch.Generator:
    """A generator of its own for a probe's random vectors: the probe is the same every time, torch's is not touched."""
    return torch.Generator().manual_seed(seed)


def upstream(compute: Callable[[], T]) -> T:
    """
    ``compute()``, its exception turned into :class:`UpstreamFailed` (the upstream computation of a proof).

    :param compute: the upstream computation on the probe
    """
    try:
        return compute()
    except Exception as error:
        raise UpstreamFailed(f"{type(error).__name__}: {error}") from error


def array_difference(label: str, fast: np.ndarray | torch.Tensor, reference: np.ndarray | torch.Tensor) -> str | None:
    """
    How ``fast`` differs from ``reference`` bit for bit (NaN equal to NaN), or ``None`` when they are equal.

    :param label: what the arrays are, for the message
    :param fast: what the fast path computed
    :param reference: what the upstream computation did
    """
    a = fast.detach().cpu().numpy() if isinstance(fast, torch.Tensor) else np.asarray(fast)
    b = reference.detach().cpu().numpy() if isinstance(reference, torch.Tensor) else np.asarray(reference)
    if a.shape != b.shape:
        return f"{label} have shape {a.shape}, not {b.shape}"
    same = a == b
    if a.dtype.kind in "fc" and b.dtype.kind in "fc":
        same |= np.isnan(a) & np.isnan(b)
    if not same.all():
        return f"{label} differ in {int((~same).sum())} of {same.size} values"
    return None


def relative_difference(
    label: str, fast: Sequence[torch.Tensor] | torch.Tensor, reference: Sequence[torch.Tensor] | torch.Tensor
) -> str | None:
    """
    How ``fast`` differs from ``reference`` beyond floating-point rounding, or ``None`` when it does not.

    For replicas that compute the same quantity in another order of operations (a gradient written out by hand):
    ``‖fast - reference‖ ≤ ε^0.4 · max(‖fast‖, ‖reference‖)`` with ``ε`` the dtype's machine epsilon (1.7e-3 in
    float32, 5e-7 in float64): rounding stays far below, any other computation is off by orders of magnitude more.

    :param label: what the tensors are, for the message
    :param fast: what the fast path computed (one tensor or several)
    :param reference: what the upstream computation did (same shapes)
    :raises UpstreamFailed: when ``reference`` is not finite (the probe proves nothing)
    """
    fast_list = [fast] if isinstance(fast, torch.Tensor) else list(fast)
    reference_list = [reference] if isinstance(reference, torch.Tensor) else list(reference)
    if len(fast_list) != len(reference_list) or any(
        f.shape != r.shape for f, r in zip(fast_list, reference_list, strict=True)
    ):
        return f"{label} have other shapes"
    if not fast_list:
        return None
    a = torch.cat([f.detach().reshape(-1).double() for f in fast_list])
    b = torch.cat([r.detach().reshape(-1).double() for r in reference_list])
    if not bool(torch.isfinite(b).all()):  # e.g. NaN weights: nothing to learn about the replica from this probe
        raise UpstreamFailed(f"the upstream {label} are not finite")
    tolerance = torch.finfo(fast_list[0].dtype).eps ** 0.4 if fast_list[0].is_floating_point() else 0.0
    error = float(torch.linalg.vector_norm(a - b))
    scale = max(float(torch.linalg.vector_norm(a)), float(torch.linalg.vector_norm(b)))
    if not math.isfinite(error) or error > tolerance * scale:
        relative = error / scale if scale else math.inf
        return f"{label} differ by {error:.3g} (relative {relative:.3g}, tolerance {tolerance:.2g})"
    return None
