"""
The package's layers, checked from the source: each package imports only the packages below it, so no two packages
import each other; and ``docs/architecture.md`` checked against the source where it states what the source can
confirm: its import table, who defines ``collect_rollouts``, the one module that touches process-wide state, its map
of every module. Every module stays under :data:`MAX_LINES` lines.
"""

from __future__ import annotations

import ast
import re
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
    "masked_recurrent": {
        "compat",
        "masked",
        "recurrent",
        "trpo",
        "replicas",
        "rollout",
        "common",
    },  # MaskableRecurrentTRPO: both variants' seams
    "loading": {
        "compat",
        "trpo",
        "masked",
        "recurrent",
        "masked_recurrent",
        "serialization",
        "version",
    },  # the variants lazily, for their files
    "export": {"compat", "loading", "serialization", "version"},  # ONNX export; onnx and onnxruntime imported when it runs
    "": {"trpo", "loading", "version", "masked", "recurrent", "masked_recurrent", "replicas", "export"},
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


# docs/architecture.md, checked where it states something the source can confirm.

ARCHITECTURE_PAGE = PACKAGE.parent / "docs" / "architecture.md"
#: The most lines a source file of the package may have (one concern per file keeps them short).
MAX_LINES = 500
#: Calls that change state belonging to the whole process (its exit, torch's process group and device, the global
#: generators and settings of torch and NumPy, the environment), by the dotted name they resolve to.
PROCESS_WIDE_CALLS = {
    "atexit.register",
    "torch.distributed.init_process_group",
    "torch.distributed.destroy_process_group",
    "torch.cuda.set_device",
    "torch.set_num_threads",
    "torch.set_num_interop_threads",
    "torch.set_default_dtype",
    "torch.set_default_device",
    "torch.set_default_tensor_type",
    "torch.set_float32_matmul_precision",
    "torch.use_deterministic_algorithms",
    "torch.manual_seed",
    "torch.seed",
    "torch.cuda.manual_seed",
    "torch.cuda.manual_seed_all",
    "numpy.random.seed",
    "random.seed",
    "os.putenv",
    "os.environ.update",
    "os.environ.setdefault",
    "os.environ.pop",
    "signal.signal",
    "sys.setrecursionlimit",
    "warnings.resetwarnings",
}
#: The one module allowed to make them, and the ones it makes (``docs/architecture.md``, "Process-wide state").
PROCESS_GROUP_MODULE = "parallel/process_group.py"
PROCESS_GROUP_CALLS = {
    "atexit.register",
    "torch.distributed.init_process_group",
    "torch.distributed.destroy_process_group",
    "torch.cuda.set_device",
}


def page_section(title: str) -> str:
    """The text of ``docs/architecture.md`` under the heading ``## title``, up to the next such heading."""
    text = ARCHITECTURE_PAGE.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def table_rows(section: str) -> list[list[str]]:
    """The cells of each body row of the Markdown tables in ``section``."""
    rows = [line.strip().strip("|").split("|") for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row] for row in rows if not set(row[0].strip()) <= {"-", " "}][1:]


def ticked(cell: str) -> list[str]:
    """The names in backticks in a table cell, in order."""
    return re.findall(r"`([^`]+)`", cell)


def test_the_import_table_on_the_page_is_the_checked_one() -> None:
    """The page's "may import" column says exactly what :data:`ALLOWED` lets each part import."""
    on_page: dict[str, set[str]] = {}
    for label, _job, may_import in (row for row in table_rows(page_section("Layers")) if len(row) == 3):
        names = ticked(label)
        part = "" if label == "package root" else names[0].removesuffix("/").removesuffix(".py")
        allowed = set(ticked(may_import)) | ({""} if "package root" in may_import else set())
        assert may_import != "nothing" or not allowed
        on_page[part] = allowed
    assert on_page == ALLOWED


def module_map() -> set[str]:
    """The modules the page's map of the code lists, as paths inside the package (``parallel/collectives.py``)."""
    block = page_section("Map of the code").split("```text\n", 1)[1].split("```", 1)[0]
    listed, package = set(), None
    for line in block.splitlines()[1:]:  # below ``sb3_trpo_plugin/``
        indent, name = len(line) - len(line.lstrip()), line.split()[0] if line.strip() else ""
        if indent == 0:
            break  # tests/, examples/, ...: outside the package
        if indent == 2 and name.endswith("/"):
            package = name
        elif indent == 2:
            listed.add(name)
        elif indent == 4:
            listed.add(f"{package}{name}")
    return listed


def test_the_module_map_lists_every_module() -> None:
    """Every module of the package is on the map (a subpackage by its line, its ``__init__.py`` standing for it)."""
    modules = {
        str(path.relative_to(PACKAGE))
        for path in source_files()
        if not (path.name == "__init__.py" and path.parent != PACKAGE)
    }
    assert module_map() == modules


def collect_rollouts_owners() -> dict[str, list[str]]:
    """The page's table: each algorithm, and the classes whose ``collect_rollouts`` it runs, in MRO order."""
    rows = table_rows(page_section("Who collects the rollouts"))
    return {ticked(algorithm)[0]: ticked(chain) for algorithm, chain in rows}


def test_the_page_says_who_collects_the_rollouts() -> None:
    """Each algorithm's ``collect_rollouts`` definitions, in the order Python runs them, are the page's."""
    pytest.importorskip("sb3_contrib")
    import sb3_trpo_plugin

    owners = collect_rollouts_owners()
    assert set(owners) == {"TRPO", "MaskableTRPO", "RecurrentTRPO", "MaskableRecurrentTRPO"}
    for name, chain in owners.items():
        algorithm = getattr(sb3_trpo_plugin, name)
        assert [cls.__name__ for cls in algorithm.__mro__ if "collect_rollouts" in vars(cls)] == chain, name


def test_the_page_names_every_class_of_the_package_that_defines_collect_rollouts() -> None:
    defining = set()
    for path in source_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(item, ast.FunctionDef) and item.name == "collect_rollouts" for item in node.body
            ):
                defining.add(node.name)
    named = {cls for chain in collect_rollouts_owners().values() for cls in chain} - {"OnPolicyAlgorithm"}
    assert defining == named


def dotted_calls(tree: ast.AST) -> set[str]:
    """The calls of a module by the dotted name they resolve to through its imports (``dist.x`` → ``torch.distributed.x``)."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:
                    head = alias.name.split(".")[0]
                    aliases[head] = head
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    found = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        parts, target = [], node.func
        while isinstance(target, ast.Attribute):
            parts.append(target.attr)
            target = target.value
        if isinstance(target, ast.Name) and target.id in aliases:
            found.add(".".join([aliases[target.id], *reversed(parts)]))
    return found


def writes_environment(tree: ast.AST) -> bool:
    """Whether a module assigns to or deletes from ``os.environ``."""
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else []
        if isinstance(node, ast.AugAssign):
            targets = [node.target]
        if any(isinstance(t, ast.Subscript) and ast.unparse(t.value) == "os.environ" for t in targets):
            return True
    return False


def test_only_the_process_group_module_touches_process_wide_state() -> None:
    """``docs/architecture.md``, "Process-wide state": one module, and the four things it does; no ``global`` anywhere."""
    touching: dict[str, set[str]] = {}
    for path in source_files():
        tree = ast.parse(path.read_text())
        calls = dotted_calls(tree) & PROCESS_WIDE_CALLS
        if writes_environment(tree):
            calls.add("os.environ[...] =")
        if any(isinstance(node, ast.Global) for node in ast.walk(tree)):
            calls.add("global")
        if calls:
            touching[str(path.relative_to(PACKAGE))] = calls
    assert touching == {PROCESS_GROUP_MODULE: PROCESS_GROUP_CALLS}


def test_the_process_wide_scan_resolves_aliases() -> None:
    """The scanner itself: an aliased module, a name imported from a module, and a method of a value (not resolved)."""
    tree = ast.parse(
        "import atexit\nimport torch.distributed as dist\nfrom torch import manual_seed\nimport os\n"
        "atexit.register(f)\ndist.init_process_group('gloo')\nmanual_seed(0)\ntorch_generator().manual_seed(0)\n"
        "os.environ['X'] = '1'\n"
    )
    assert dotted_calls(tree) == {"atexit.register", "torch.distributed.init_process_group", "torch.manual_seed"}
    assert writes_environment(tree)


@pytest.mark.parametrize("path", source_files(), ids=lambda path: str(path.relative_to(PACKAGE)))
def test_every_module_is_at_most_500_lines(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_LINES


def test_the_variants_collect_through_the_data_parallel_and_the_lean_loop() -> None:
    """
    Every algorithm's ``collect_rollouts`` is the data-parallel one, around the lean loop, around the variant's own
    loop (SB3's, or sb3-contrib's ``MaskablePPO`` / ``RecurrentPPO`` loop called on the model): no class hides another.
    ``lean_rollout`` is declared once, and the variants take TRPO's constructor as it is.
    """
    from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

    from sb3_trpo_plugin import TRPO, MaskableRecurrentTRPO, MaskableTRPO, RecurrentTRPO
    from sb3_trpo_plugin.masked.on_policy import MaskedOnPolicyAlgorithm
    from sb3_trpo_plugin.masked_recurrent.algorithm import MaskedRecurrentOnPolicyAlgorithm
    from sb3_trpo_plugin.parallel import DataParallelOnPolicyAlgorithm
    from sb3_trpo_plugin.recurrent.on_policy import RecurrentOnPolicyAlgorithm
    from sb3_trpo_plugin.rollout import LeanRolloutAlgorithm

    own_loops: dict[type, list[type]] = {
        TRPO: [],
        MaskableTRPO: [MaskedOnPolicyAlgorithm],
        RecurrentTRPO: [RecurrentOnPolicyAlgorithm],
        # sb3-contrib has no loop for masks with LSTM states: the class below the lean loop refuses, and hides RecurrentPPO's
        MaskableRecurrentTRPO: [MaskedRecurrentOnPolicyAlgorithm, RecurrentOnPolicyAlgorithm],
    }
    for algorithm, own_loop in own_loops.items():
        owners = [cls for cls in algorithm.__mro__ if "collect_rollouts" in vars(cls)]
        assert owners == [DataParallelOnPolicyAlgorithm, LeanRolloutAlgorithm, *own_loop, OnPolicyAlgorithm], algorithm
        assert [cls for cls in algorithm.__mro__ if "lean_rollout" in vars(cls)] == [LeanRolloutAlgorithm]
        constructors = [cls for cls in algorithm.__mro__ if "__init__" in vars(cls)]
        assert constructors[:3] == [TRPO, DataParallelOnPolicyAlgorithm, OnPolicyAlgorithm], algorithm
