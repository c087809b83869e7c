"""
The pipelined critic: the critic of update k is fitted in a worker process while rollout k+1 is collected.

Sequential TRPO alternates rollout k, the policy step on it, the critic's regression on it, rollout k+1. The next
rollout's actions need the actor alone, which the policy step has already moved; the critic is first read when the
rollout ends (the lean rollout computes the values of the whole rollout in one batch there, and, while a fit is in
flight, the time-limit bootstraps of its truncated episodes too). So after the policy step on rollout k, TRPO hands
the critic's fit to a worker process (:mod:`.critic_worker`) and collects rollout k+1 meanwhile, on another core; at
the end of rollout k+1 it waits for the fitted weights and optimiser state, writes them into the policy, and only then
computes rollout k+1's values, bootstraps, returns and advantages. The worker runs the sequential update's own code on
the same numbers (:mod:`.critic_job`), the epochs' shuffles drawn here where the sequential update draws them: the
weights are the sequential update's, bit for bit.

:class:`CriticWorker` is one worker process; :class:`CriticPipeline` is what ``TRPO`` holds: at most one fit in flight,
waited for before anything reads the critic. The worker is a fresh interpreter (``python -m``), so nothing of the
user's ``__main__`` runs in it; until it has started (about as long as importing this package), fits run in this
process, so a worker's start costs nothing. A failed fit raises :class:`CriticWorkerError` with the worker's traceback
and leaves the critic as it was before that fit.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
import time
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch

from sb3_trpo_plugin.common.reductions import ONE_PROCESS
from sb3_trpo_plugin.trpo.critic_fit import CriticRegression
from sb3_trpo_plugin.trpo.critic_job import CriticFitJob, CriticFitResult, copy_weights, critic_fit_job, state_of_result

#: The fewest updates a ``learn()`` call must have left for it to start a worker: the start (a fresh interpreter
#: importing this package, one to two seconds of a core) would not pay in shorter runs, whose fits stay in-process.
MIN_UPDATES_TO_START = 8
#: This package's directory: the worker must import this copy of it.
PACKAGE = Path(__file__).resolve().parents[1]
#: How often a wait for the worker checks that it is still alive, in seconds.
_LIVENESS_INTERVAL = 1.0


class CriticWorkerError(RuntimeError):
    """
    The critic's worker process failed a fit (the message holds its traceback) or exited during one. The critic keeps
    the weights and optimiser state it had before that fit; the next fit starts a new worker if this one is gone.
    """


class CriticWorker:
    """
    One worker process fitting critics (:mod:`.critic_worker`), started at construction, answering one job at a time.

    Its pipes end when this object is collected, or at :meth:`close`; the worker then exits. It runs in a session of its
    own, so a Ctrl-C in the terminal interrupts this process only.
    """

    def __init__(self) -> None:
        parent_read, child_write = os.pipe()
        child_read, parent_write = os.pipe()
        package_root = str(PACKAGE.parent)
        environment = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
            # One core: the worker's purpose. The critic's small products run on one thread either way, and a second
            # thread would only spin against this process (results do not depend on the thread count at these sizes).
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sb3_trpo_plugin.trpo.critic_worker", str(child_read), str(child_write)],
                pass_fds=(child_read, child_write),
                stdin=subprocess.DEVNULL,
                env=environment,
                start_new_session=True,
            )
        except BaseException:
            for descriptor in (parent_read, parent_write):
                os.close(descriptor)
            raise
        finally:
            os.close(child_read)
            os.close(child_write)
        self._requests = Connection(parent_write, readable=False)
        self._replies = Connection(parent_read, writable=False)
        self._ready = False
        self._finalizer = weakref.finalize(self, _stop, self.process, self._requests, self._replies)

    def ready(self) -> bool:
        """
        Whether the worker has started and can take a job (without waiting).

        :raises CriticWorkerError: when it exited before it was ready, or imported another copy of this package
        """
        if self.process.poll() is not None:
            when = "between fits" if self._ready else "as it started"
            raise CriticWorkerError(f"the critic's worker process exited with code {self.process.returncode} {when}")
        if not self._ready and self._replies.poll(0):
            self._ready = self._check_ready(self._receive("as it started"))
        return self._ready

    def wait_until_ready(self, timeout: float) -> bool:
        """
        Wait up to ``timeout`` seconds for the worker to be ready (tests and benchmarks: to measure the pipeline itself).

        :return: whether it is ready
        """
        deadline = time.monotonic() + timeout
        while not self.ready() and time.monotonic() < deadline:
            self._replies.poll(min(0.05, max(0.0, deadline - time.monotonic())))
        return self._ready

    def submit(self, job: CriticFitJob) -> None:
        """Send one job; its result must be read (:meth:`result`) before the next is sent."""
        self._requests.send_bytes(pickle.dumps(("fit", job)))

    def result(self) -> CriticFitResult:
        """
        Wait for the result of the job sent last.

        :raises CriticWorkerError: with the worker's traceback when the fit raised, or when the worker exited
        """
        while not self._replies.poll(_LIVENESS_INTERVAL):
            if self.process.poll() is not None and not self._replies.poll(0):
                raise CriticWorkerError(f"the critic's worker process exited with code {self.process.returncode} during a fit")
        kind, payload = self._receive("during a fit")
        if kind == "error":
            raise CriticWorkerError(f"the critic's fit failed in its worker process:\n{payload}")
        assert kind == "done", kind
        return payload

    @property
    def was_ready(self) -> bool:
        """Whether the worker started and said it was ready (it may have exited since)."""
        return self._ready

    @property
    def alive(self) -> bool:
        """Whether the worker process is running."""
        return self.process.poll() is None

    def close(self) -> None:
        """Stop the worker and wait for it to exit."""
        self._finalizer()

    def _receive(self, when: str) -> tuple[Any, ...]:
        try:
            return pickle.loads(self._replies.recv_bytes())
        except EOFError:
            self.process.wait()
            raise CriticWorkerError(f"the critic's worker process exited with code {self.process.returncode} {when}") from None

    def _check_ready(self, message: tuple[Any, ...]) -> bool:
        kind, _, package = message
        if kind != "ready" or Path(package) != PACKAGE:
            self.close()
            raise CriticWorkerError(f"the critic's worker process imported the package at {package}, not {PACKAGE}")
        return True


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the platform has it, else the machine's count)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def spare_core() -> bool:
    """
    Whether this process may run on more cores (:func:`usable_cores`) than torch's threads in it use: the core the
    worker runs on. Where torch's threads already take every core (its default: one per core), the worker contends with
    them. Measured on Hopper-v5 on 2 cores with torch's 2 threads, ``learn()`` took 32.9 s pipelined against 28.2 s
    sequential (medians of 3; docs/benchmarks.md, "Targets of the pipelined critic"); with one thread, 25.1 s against
    27.5 s.
    """
    return usable_cores() > torch.get_num_threads()


def _stop(process: subprocess.Popen[bytes], requests: Connection, replies: Connection) -> None:
    """Ask the worker to stop, close the pipes and reap it (killed if it does not exit within a few seconds)."""
    with contextlib.suppress(OSError):
        requests.send_bytes(pickle.dumps(("stop",)))
    requests.close()
    replies.close()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class _Fit:
    """A fit in flight: how to apply its result to the model."""

    apply: Callable[[CriticFitResult], None]


class CriticPipeline:
    """
    What ``TRPO`` holds of the pipelined critic: at most one fit in flight in one worker process, started on demand.

    :attr:`fits_in_worker` and :attr:`fits_in_process` count the fits each way (the benchmarks and tests read them).
    """

    def __init__(self) -> None:
        self._worker: CriticWorker | None = None
        self._in_flight: _Fit | None = None
        self._start_failed = False
        #: Fits handed to the worker.
        self.fits_in_worker = 0
        #: Fits run in this process (the pipeline did not apply, or the worker was starting).
        self.fits_in_process = 0

    def start(self) -> None:
        """Start the worker, if none is running and none failed to start (it becomes ready in the background)."""
        if not self._start_failed and (self._worker is None or not self._worker.alive):
            self._worker = CriticWorker()

    def start_for(self, updates: float) -> None:
        """
        Start the worker for a ``learn()`` of ``updates`` updates, if enough to pay (:data:`MIN_UPDATES_TO_START`) and
        a core is left to it (:func:`spare_core`).
        """
        if updates >= MIN_UPDATES_TO_START and spare_core():
            self.start()

    def ready(self) -> bool:
        """
        Whether a fit handed over now would run in the worker (started, and none in flight). A worker that exited
        between fits is replaced, and one that could not start is not tried again; either says so in a warning.
        """
        if self._in_flight is not None or self._worker is None:
            return False
        try:
            return self._worker.ready()
        except CriticWorkerError as error:
            worker, self._worker = self._worker, None
            worker.close()
            if worker.was_ready:
                message = f"{error}: a new one starts, and fits run in this process until it is ready"
                self.start()
            else:
                self._start_failed = True
                message = f"{error}: this model's critic is fitted in this process from now on"
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            return False

    def wait_until_ready(self, timeout: float = 60.0) -> bool:
        """Start the worker if needed and wait up to ``timeout`` seconds until it is ready; whether it is."""
        self.start()
        return self._worker is not None and self._worker.wait_until_ready(timeout)

    @property
    def in_flight(self) -> bool:
        """Whether a fit is in flight: the critic's weights must not be read before :meth:`wait`."""
        return self._in_flight is not None

    def submit(self, job: CriticFitJob, apply: Callable[[CriticFitResult], None]) -> None:
        """
        Hand ``job`` to the worker (which must be :meth:`ready`); :meth:`wait` later passes its result to ``apply``.

        :param job: the fit
        :param apply: writes the result into the model
        """
        assert self._worker is not None and self.ready(), "submit a fit only when the pipeline is ready"
        self._worker.submit(job)
        self._in_flight = _Fit(apply)
        self.fits_in_worker += 1

    def wait(self) -> float | None:
        """
        Wait for the fit in flight and apply it; its mean loss, or ``None`` when none was in flight.

        :raises CriticWorkerError: when the fit failed (with the worker's traceback) or the worker exited; the fit is
            dropped and the model keeps the critic it had before it
        """
        fit = self._in_flight
        if fit is None:
            return None
        assert self._worker is not None
        try:
            result = self._worker.result()  # (interrupted, e.g. by Ctrl-C, the fit stays in flight for the next wait)
        except CriticWorkerError:
            self._in_flight = None
            if not self._worker.alive:  # the next fit starts a new one
                self._worker.close()
                self._worker = None
            raise
        self._in_flight = None
        fit.apply(result)
        return result.mean_loss

    def close(self) -> None:
        """Stop the worker (a fit in flight is dropped: :meth:`wait` for it first)."""
        self._in_flight = None
        if self._worker is not None:
            self._worker.close()
            self._worker = None

    def __getstate__(self) -> dict[str, Any]:
        """Copies (``copy.deepcopy`` of a model) get a pipeline of their own, with no worker and nothing in flight."""
        return {"_worker": None, "_in_flight": None, "_start_failed": False, "fits_in_worker": 0, "fits_in_process": 0}


def pipelined_fit(
    regression: CriticRegression, optimizer: torch.optim.Optimizer, returns: torch.Tensor, n_epochs: int, batch_size: int
) -> tuple[CriticFitJob, Callable[[CriticFitResult], None]]:
    """
    The job of fitting a critic head to ``returns``, and how to write its result into the model.

    The job carries torch's generator state, from which the worker draws each epoch's shuffle (one ``randperm`` per
    epoch, as the sequential fit draws them); the same shuffles are drawn here too, and discarded, so that torch's
    generator goes on as after a sequential update (nothing random runs between the sequential fit's draws).

    :param regression: the critic's regression, with the head's hand-derived ``network`` (its layers are the policy's)
    :param optimizer: the critic's optimiser
    :param returns: the λ-returns
    :param n_epochs: passes over the rollout
    :param batch_size: rows per minibatch
    """
    network, inputs = regression.network, regression.inputs
    assert network is not None and isinstance(inputs, torch.Tensor), "only a hand-derived head's fit is pipelined"
    shuffles = torch.get_rng_state()
    for _ in range(n_epochs):
        ONE_PROCESS.minibatch_order(len(returns), batch_size, returns.device)

    def apply(result: CriticFitResult) -> None:
        copy_weights(network.parameters(), result.weights)
        optimizer.load_state_dict(state_of_result(result, optimizer))

    return critic_fit_job(network, optimizer, inputs, returns, shuffles, n_epochs, batch_size), apply
