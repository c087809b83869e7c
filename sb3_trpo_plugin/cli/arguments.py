"""What every ``sb3-trpo`` sub-command shares about its command line: argument types and the error it reports."""

from __future__ import annotations

import argparse


class CommandError(Exception):
    """A mistake in the command line, reported as one line without a traceback."""


def positive_int(text: str) -> int:
    """
    argparse type of a count: an integer of at least 1.

    :param text: the value as typed
    :return: the integer
    """
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
