"""
The package's layers, checked from the source: each package imports only the packages below it
(``docs/architecture.md`` draws the same table), so no two packages import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sb3_trpo_plugin"

#: What each part of ``sb3_trpo_plugin`` may import from the package ("" is the package root ``__init__``).
ALLOWED: dict[str, set[str]] = {
    "version": set(),
    "compat": set(),  # the differences between releases of SB3, sb3-contrib, gymnasium, NumPy and torch
    "trust_region": set(),  # pure maths: tensors and callables only
    "critic": set(),  # pure maths: the critic's hand-derived gradient
    "envs": set(),
    "common": {"compat", "trust_region"},
    "replicas": {
        "compat",
        "common",
        "trust_region",
        "critic",
    },  # exact replicas of SB3/torch computations, proved where they run
    "serialization": {"compat", "version"},
    "rollout": {"compat", "replicas", "common"},
    "parallel": {"compat", "rollout", "common", "trust_region", "serialization"},
    "trpo": {"compat", "trust_region", "critic", "common", "replicas", "rollout", "parallel", "serialization"},
    "masked": {"compat", "trpo", "replicas", "rollout", "common"},  # sb3-contrib's action masking; imported lazily by the root
    "recurrent": {
        "compat",
        "trpo",
        "replicas",
        "rollout",
        "critic",
        "common",
    },  # RecurrentTRPO; imports sb3-contrib (optional)
    "loading": {"compat", "trpo", "masked", "recurrent", "serialization", "version"},  # the variants lazily, for their files
    "export": {"compat", "loading", "serialization", "version"},  # ONNX export; onnx and onnxruntime imported when it runs
    "": {"trpo", "loading", "version", "masked", "recurrent", "replicas", "export"},
    "cli": {"compat", "", "trpo", "loading", "serialization", "version", "envs", "export"},
    "zoo": {"compat", "", "trpo", "masked"},
    "__main__": {"cli"},
}


def part_of(module: str) -> str:
    """``sb3_trpo_plugin.trpo.policy_step`` → ``trpo``; the package root → ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imported_parts(path: Path) -> set[str]:
    """The parts of the package that a source file imports (at any depth of the file, relative imports resolved)."""
    tree = ast.parse(path.read_text())
    here = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")[: -node.level]
                names = [".".join([*base, node.module] if node.module else base)]
            else:
                names = [node.module or ""]
            if names[0] == "sb3_trpo_plugin":  # ``from sb3_trpo_plugin import x``: x may be a part or a name of the root
                names = [
                    f"sb3_trpo_plugin.{alias.name}" if alias.name in ALLOWED else "sb3_trpo_plugin" for alias in node.names
                ]
        else:
            continue
        found |= {part_of(name) for name in names if name == "sb3_trpo_plugin" or name.startswith("sb3_trpo_plugin.")}
    return found


def source_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", source_files(), ids=lambda path: str(path.relative_to(PACKAGE)))
def test_imports_follow_the_layers(path: Path) -> None:
    relative = path.relative_to(PACKAGE)
    part = "" if relative.name == "__init__.py" and len(relative.parts) == 1 else relative.with_suffix("").parts[0]
    assert part in ALLOWED, f"{relative}: a new part of the package; add it to ALLOWED and docs/architecture.md"
    imported = imported_parts(path) - {part}
    assert imported <= ALLOWED[part], f"{relative} imports {sorted(imported - ALLOWED[part])}, above its layer"


def test_the_layers_have_no_cycle() -> None:
    """Depth-first search over ALLOWED: a cycle would let two packages import each other."""
    state: dict[str, str] = {}

    def visit(part: str, path: list[str]) -> None:
        assert state.get(part) != "open", f"import cycle: {' -> '.join([*path, part])}"
        if state.get(part) == "done":
            return
        state[part] = "open"
        for below in ALLOWED[part]:
            visit(below, [*path, part])
        state[part] = "done"

    for part in ALLOWED:
        visit(part, [])


def test_the_checker_sees_imports() -> None:
    """The parser itself: absolute, relative, root-level and function-level imports are all found."""
    assert {"trust_region", "common"} <= imported_parts(PACKAGE / "trpo" / "policy_step.py")
    assert {"trpo", "parallel", "serialization"} <= imported_parts(PACKAGE / "trpo" / "trpo.py")
    assert imported_parts(PACKAGE / "__init__.py") >= {"trpo", "loading", "version"}
    assert imported_parts(PACKAGE / "zoo" / "__init__.py") & {"", "trpo"}
