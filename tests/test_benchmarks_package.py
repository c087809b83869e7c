"""
``benchmarks/`` is a package run by module name: no module of it touches ``sys.path`` or starts a child by file path,
and every one of them imports as ``benchmarks.<name>``.
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
MODULES = sorted(path.stem for path in BENCHMARKS.glob("*.py") if path.stem != "__init__")


def attribute_uses(path: Path) -> set[str]:
    """``name.attribute`` for every attribute read of a plain name in a source file (``sys.path``, ``sys.executable``)."""
    tree = ast.parse(path.read_text())
    return {
        f"{node.value.id}.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
    }


def imported_modules(path: Path) -> set[str]:
    """The modules a source file imports, at any depth (``from a import b`` gives ``a``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: a relative import"
            found.add(node.module or "")
    return found


@pytest.mark.parametrize("module", MODULES)
def test_no_benchmark_touches_sys_path(module: str) -> None:
    path = BENCHMARKS / f"{module}.py"
    uses = attribute_uses(path)
    assert "sys.path" not in uses
    # Children run modules by name through benchmarks.launch, never a file by its path.
    assert "sys.executable" not in uses or module == "launch"
    assert not {name for name in imported_modules(path) if name in MODULES}, "siblings are imported as benchmarks.<name>"


@pytest.mark.parametrize("module", MODULES)
def test_every_benchmark_imports_as_a_module_of_the_package(module: str) -> None:
    assert importlib.import_module(f"benchmarks.{module}").__name__ == f"benchmarks.{module}"


def test_the_checks_see_what_they_look_for(tmp_path: Path) -> None:
    source = tmp_path / "old.py"
    source.write_text("import sys\nsys.path.insert(0, 'x')\nimport sections\nfrom learning import ABLATIONS\n")
    assert "sys.path" in attribute_uses(source)
    assert {"sections", "learning"} <= imported_modules(source)


def test_the_shell_scripts_run_modules_by_name() -> None:
    for script in BENCHMARKS.glob("*.sh"):
        text = script.read_text()
        assert not re.search(r"benchmarks/\w+\.py (run|one|report)", text), script.name
        assert '"$PY" -m benchmarks.learning run' in text, script.name


def test_run_pool_runs_each_command_at_most_jobs_at_a_time_and_names_the_failures(tmp_path: Path) -> None:
    from benchmarks.launch import Run, run_pool

    log = tmp_path / "log"
    # Each child appends its start and end to one file, sleeping between, so that overlaps show in the file's order.
    body = "import sys, time; f = open(sys.argv[1], 'a'); f.write(f'+{sys.argv[2]}\\n'); f.flush(); time.sleep(0.4); "
    body += "f.write(f'-{sys.argv[2]}\\n'); f.close(); open(sys.argv[3], 'w').close() if sys.argv[2] != 'bad' else sys.exit(3)"

    def run(name: str) -> Run:
        result = tmp_path / f"{name}.done"
        return Run(name, [sys.executable, "-c", body, str(log), name, str(result)], result)

    (tmp_path / "skipped.done").touch()
    runs = [run("a"), run("bad"), run("skipped"), run("c")]
    assert run_pool(runs, jobs=2) == ["bad"]
    events = log.read_text().split()
    assert sorted(events) == sorted(["+a", "-a", "+bad", "-bad", "+c", "-c"])  # the finished run is not run again
    depth = max(sum(1 if e[0] == "+" else -1 for e in events[: i + 1]) for i in range(len(events)))
    assert depth == 2  # two at a time, never three
    assert (tmp_path / "a.done").exists() and (tmp_path / "c.done").exists() and not (tmp_path / "bad.done").exists()
    with pytest.raises(ValueError, match="at least 1"):
        run_pool(runs, jobs=0)
    assert not list(tmp_path.glob("*.claim"))  # each claim removed when its run ended, failed or not


def test_run_pool_skips_a_run_that_a_live_process_claims_and_takes_over_a_stale_claim(tmp_path: Path) -> None:
    from benchmarks.launch import Run, run_pool

    def run(name: str) -> Run:
        result = tmp_path / f"{name}.done"
        return Run(name, [sys.executable, "-c", f"open({str(result)!r}, 'w').close()"], result)

    busy, stale = run("busy"), run("stale")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    try:
        busy.claim.write_text(str(sleeper.pid))  # another pool's run, in progress
        stale.claim.write_text(str(finished.pid))  # a pool that died mid-run
        assert run_pool([busy, stale], jobs=2) == []
        assert not busy.result.exists() and busy.claim.read_text() == str(sleeper.pid)  # left to its process
        assert stale.result.exists() and not stale.claim.exists()  # run here, its claim released
    finally:
        sleeper.kill()
        sleeper.wait()
    assert run_pool([busy], jobs=1) == [] and busy.result.exists()  # its process gone: the claim is stale
