"""Child processes of the benchmarks: each runs a module of this package by name, whatever the child's working folder."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

#: The folder that holds this package (the repository, or the checkout a campaign benchmarks).
ROOT = Path(__file__).resolve().parent.parent


def module_command(module: str, *arguments: str) -> list[str]:
    """
    The command line that runs ``module`` with this interpreter, as ``python -m`` does.

    :param module: e.g. ``"benchmarks.learning"``
    :param arguments: the module's command-line arguments
    """
    return [sys.executable, "-m", module, *arguments]


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """
    This process's environment with :data:`ROOT` first on ``PYTHONPATH``, so that a child imports this checkout's
    ``benchmarks`` (and, where it holds one, its ``sb3_trpo_plugin``) from any working folder.

    :param extra: variables to set on top
    """
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **(extra or {})}


@dataclass(frozen=True)
class Run:
    """
    One child process of a campaign.

    :param name: what the log calls it
    :param command: its command line (:func:`module_command`)
    :param result: the file it writes when it succeeds; a run whose file exists when its turn comes is skipped
    """

    name: str
    command: list[str]
    result: Path

    @property
    def claim(self) -> Path:
        """The file that says, while the run is in progress, which process runs it (see :func:`claim_run`)."""
        return self.result.with_name(self.result.name + ".claim")


def _is_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (signal 0 checks without signalling)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def claim_run(run: Run) -> int | None:
    """
    Claim ``run`` for this pool: create its claim file, unless another live process holds it.

    Two pools given overlapping lists (two campaigns, or a campaign resumed while the first still runs) would otherwise
    both start a run that neither has finished. A claim whose process has died (a pool killed mid-run) is stale and
    taken over.

    :return: ``None`` when claimed; else the process id that runs it now
    """
    run.claim.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            descriptor = os.open(run.claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                holder = int(run.claim.read_text().strip() or 0)
            except (FileNotFoundError, ValueError):
                holder = 0
            if holder and _is_alive(holder):
                return holder
            run.claim.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(descriptor, "w") as claim:
            claim.write(str(os.getpid()))
        return None
    raise RuntimeError(f"could not claim {run.name}: {run.claim} keeps reappearing")


def run_pool(runs: Sequence[Run], jobs: int) -> list[str]:
    """
    Run ``runs`` in order, ``jobs`` processes at a time (each with :func:`child_environment`), logging each start and
    end with the time of day. A run already finished is skipped, and so is one that another live process runs now
    (:func:`claim_run`).

    :return: the names of the runs that exited with an error
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    queue = list(runs)
    running: list[tuple[subprocess.Popen[bytes], Run, float]] = []
    failed: list[str] = []
    while queue or running:
        while queue and len(running) < jobs:
            run = queue.pop(0)
            if run.result.exists():  # done meanwhile by another campaign
                continue
            holder = claim_run(run)
            if holder is not None:
                print(f"{time.strftime('%H:%M:%S')} skip {run.name}: process {holder} runs it", flush=True)
                continue
            print(f"{time.strftime('%H:%M:%S')} start {run.name}", flush=True)
            process = subprocess.Popen(run.command, env=child_environment())
            run.claim.write_text(str(process.pid))  # the run's own process: it may outlive this pool
            running.append((process, run, time.perf_counter()))
        time.sleep(0.2)
        for entry in list(running):
            process, run, started = entry
            if process.poll() is None:
                continue
            running.remove(entry)
            run.claim.unlink(missing_ok=True)
            status = "done" if process.returncode == 0 else f"FAILED (exit {process.returncode})"
            if process.returncode != 0:
                failed.append(run.name)
            print(f"{time.strftime('%H:%M:%S')} {status} {run.name} in {time.perf_counter() - started:.0f} s", flush=True)
    return failed
