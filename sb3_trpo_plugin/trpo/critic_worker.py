"""
The critic's worker process: fits the critic on the jobs its parent sends, one at a time, until its pipe closes.

Started by :class:`~sb3_trpo_plugin.trpo.critic_pipeline.CriticWorker` as ``python -m
sb3_trpo_plugin.trpo.critic_worker READ_FD WRITE_FD`` (a fresh interpreter: nothing of the parent's ``__main__`` runs
here, and no fork of a process whose threads hold locks). Messages are pickled tuples, one per pipe message:

- to the parent: ``("ready", pid, package_directory)`` once imported, then per job ``("done", CriticFitResult)`` or
  ``("error", traceback_text)``;
- from the parent: ``("fit", CriticFitJob)``, or ``("stop",)``.

An exception in a fit is sent back with its traceback and the worker waits for the next job; the parent's critic is
left as it was before the job (:mod:`.critic_pipeline`).
"""

from __future__ import annotations

import os
import pickle
import sys
import traceback
from multiprocessing.connection import Connection
from pathlib import Path

from sb3_trpo_plugin.trpo.critic_job import CriticHead, warm_up_job


def serve(requests: Connection, replies: Connection) -> None:
    """
    Answer the jobs arriving on ``requests`` on ``replies`` until ``("stop",)`` or the end of the pipe.

    :param requests: the parent's messages
    :param replies: this process's messages
    """
    CriticHead().fit(warm_up_job())  # the first optimiser step's imports and the first kernels' set-up, before any job
    try:
        replies.send_bytes(pickle.dumps(("ready", os.getpid(), str(Path(__file__).resolve().parents[1]))))
    except BrokenPipeError:  # the parent closed the worker before it was ready
        return
    head = CriticHead()
    while True:
        try:
            message = pickle.loads(requests.recv_bytes())
        except EOFError:  # the parent is gone
            return
        if message[0] == "stop":
            return
        try:
            reply: tuple[object, ...] = ("done", head.fit(message[1]))
        except Exception:
            head = CriticHead()  # nothing half-fitted is kept
            reply = ("error", traceback.format_exc())
        try:
            replies.send_bytes(pickle.dumps(reply))
        except BrokenPipeError:  # the parent closed the worker during the fit
            return


def main(argv: list[str]) -> None:
    """The worker's entry point: ``argv`` holds the file descriptors of the two pipe ends it was given."""
    read_fd, write_fd = int(argv[0]), int(argv[1])
    serve(Connection(read_fd, writable=False), Connection(write_fd, readable=False))


if __name__ == "__main__":
    main(sys.argv[1:])
