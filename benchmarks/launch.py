"""Child processes of the benchmarks: each runs a module of this package by name, whatever the child's working folder."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
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
