"""
The documentation cannot drift from the code: it builds without a warning, every Python example on its pages runs,
every shell command on them names what exists, and it covers the package (``docs/writing_docs.md`` states the rules).

The Python blocks of a page run in one process, in page order, in a fresh folder, with every ``learn()`` capped at
two rollouts and two updates (:data:`PRELUDE`); a block preceded by ``% skip-test: <reason>`` in the page's source is
not run.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import json
import os
import pkgutil
import re
import shlex
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

import sb3_trpo_plugin
from sb3_trpo_plugin import TRPO
from sb3_trpo_plugin.cli import build_parser
from sb3_trpo_plugin.trpo.hyperparameters import PPO_KEYWORDS
from sb3_trpo_plugin.zoo import SCRIPTS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
SKIP_MARK = re.compile(r"^%\s*skip-test:\s*(\S.*)$")
#: What the test puts before a page's blocks: every learn() collects at most two rollouts and takes two updates.
PRELUDE = """
import torch
from stable_baselines3.common.base_class import BaseAlgorithm

torch.set_num_threads(1)
_setup_learn = BaseAlgorithm._setup_learn


def _two_rollouts(self, total_timesteps, *args, **kwargs):
    # Two, not one: SB3 logs an update's train/ values when the next rollout ends.
    budget = 2 * getattr(self, "n_steps", 1) * self.n_envs
    return _setup_learn(self, min(total_timesteps, budget), *args, **kwargs)


BaseAlgorithm._setup_learn = _two_rollouts
"""
#: Runs a page's blocks (JSON on stdin: the page's path and [line, code] pairs) so that tracebacks name page lines.
RUNNER = """
import json, sys
page, blocks = json.load(sys.stdin)
namespace = {"__name__": "__main__"}
for line, code in blocks:
    print(f"--- {page}, block at line {line}", flush=True)
    exec(compile("\\n" * line + code, page, "exec"), namespace)
"""


@dataclass
class CodeBlock:
    """A fenced code block of a page: its language, first line of code (0-based) and text, and why it is skipped."""

    page: Path
    line: int
    language: str
    code: str
    skip_reason: str | None


def pages() -> list[Path]:
    """Every source page of the documentation."""
    hidden = {"_build", "_generated", "_inventories", "_ext"}
    return sorted(
        path for path in DOCS.rglob("*") if path.suffix in (".md", ".rst") and not hidden & set(path.relative_to(DOCS).parts)
    )


def code_blocks(page: Path) -> list[CodeBlock]:
    """The fenced code blocks of a Markdown page (MyST directives such as ```` ```{toctree} ```` excluded)."""
    text = page.read_text()
    lines = text.splitlines()
    blocks = []
    for token in MarkdownIt("commonmark").parse(text):
        if token.type != "fence" or token.map is None or token.info.startswith("{"):
            continue
        before = [line for line in lines[: token.map[0]] if line.strip()]
        marker = SKIP_MARK.match(before[-1].strip()) if before else None
        blocks.append(CodeBlock(page, token.map[0] + 1, token.info.split()[0] if token.info else "", token.content, None))
        if marker:
            blocks[-1].skip_reason = marker.group(1)
    return blocks


def pages_with_python() -> list[Path]:
    return [
        page for page in [README, *pages()] if page.suffix == ".md" and any(b.language == "python" for b in code_blocks(page))
    ]


@pytest.mark.parametrize("page", pages_with_python(), ids=lambda page: str(page.relative_to(ROOT)))
def test_python_examples_run(page: Path, tmp_path: Path) -> None:
    blocks = [block for block in code_blocks(page) if block.language == "python" and block.skip_reason is None]
    script = tmp_path / "run_page.py"
    script.write_text(PRELUDE + RUNNER)
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    environment["MPLBACKEND"] = "Agg"
    result = subprocess.run(
        [sys.executable, str(script)],
        input=json.dumps([str(page.relative_to(ROOT)), [[block.line, block.code] for block in blocks]]),
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"an example of {page.name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    assert result.stdout.count("--- ") == len(blocks)


def test_skipped_examples_say_why() -> None:
    for page in pages_with_python():
        for block in code_blocks(page):
            assert block.skip_reason is None or len(block.skip_reason) > 10, f"{page.name}:{block.line}: say why it is skipped"


def shell_commands(block: CodeBlock) -> list[list[str]]:
    """The commands of a shell block, each split into words (continuation lines joined, comments dropped)."""
    text = block.code.replace("\\\n", " ")
    return [words for line in text.splitlines() if (words := shlex.split(line, comments=True))]


def test_shell_commands_name_what_exists() -> None:
    makefile_targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    checked = 0
    for page in [README, *pages()]:
        if page.suffix != ".md":
            continue
        for block in code_blocks(page):
            if block.language not in ("bash", "sh", "shell"):
                continue
            for words in shell_commands(block):
                where = f"{page.relative_to(ROOT)}:{block.line}: {' '.join(words)}"
                if words[0] == "sb3-trpo":
                    build_parser().parse_args(words[1:])  # argparse exits (SystemExit) on an unknown option
                    checked += 1
                if words[:3] == ["python", "-m", "sb3_trpo_plugin.zoo"]:
                    assert words[3] in SCRIPTS, where
                if words[0] == "make":
                    assert set(word for word in words[1:] if "=" not in word) <= makefile_targets, where
                for before, module in itertools.pairwise(words):
                    if before == "-m" and module.startswith(("benchmarks.", "investigations.")):  # python -m benchmarks.x
                        assert (ROOT / module.replace(".", "/")).with_suffix(".py").is_file(), where
                        checked += 1
                for word in words:
                    if re.match(r"^(examples|benchmarks|docs)/[\w/.-]+\.(py|sh)$", word):
                        assert (ROOT / word).is_file(), where
                        checked += 1
    assert checked >= 10


def test_readme_is_short_and_said_by_the_docs() -> None:
    readme = README.read_text()
    assert len(readme.splitlines()) <= 150
    assert "make demo" in readme and "make test" in readme
    docs_code = "\n".join(block.code for page in pages() if page.suffix == ".md" for block in code_blocks(page))
    for block in code_blocks(README):
        assert block.code in docs_code, f"README.md's block at line {block.line} is on no page of docs/"
    for link in re.findall(r"\]\(([^)#]+)", readme):
        assert link.startswith("http") or (ROOT / link).exists(), link


def markdown_table_first_column(page: Path) -> str:
    return "\n".join(line.split("|")[1] for line in page.read_text().splitlines() if line.startswith("| "))


def test_every_keyword_of_trpo_is_in_the_hyperparameter_table() -> None:
    table = markdown_table_first_column(DOCS / "algorithm.md")
    keywords = [name for name in inspect.signature(TRPO.__init__).parameters if name not in ("self", "policy", "env")]
    assert [name for name in keywords if f"`{name}`" not in table] == []


def test_every_logged_key_is_in_the_tensorboard_table() -> None:
    logged = set()
    for path in (ROOT / "sb3_trpo_plugin").rglob("*.py"):
        logged |= set(re.findall(r"record\(\s*\"(train/\w+)\"", path.read_text()))
    assert len(logged) > 15
    table = markdown_table_first_column(DOCS / "tensorboard.md")
    assert sorted(key for key in logged if f"`{key}`" not in table) == []


def test_every_ppo_keyword_is_explained_in_the_migration_page() -> None:
    page = (DOCS / "migrating.md").read_text()
    assert [keyword for keyword in PPO_KEYWORDS if f"| `{keyword}` |" not in page] == []


def test_every_figure_is_on_a_page() -> None:
    text = "\n".join(page.read_text() for page in pages())
    figures = sorted(path.name for path in DOCS.glob("*.png"))
    assert len(figures) >= 10
    assert [name for name in figures if f"]({name})" not in text] == []


def read_inventory(path: Path) -> dict[str, str]:
    """name -> domain:role of a Sphinx inventory (format version 2)."""
    header, _, compressed = path.read_bytes().partition(b"compressed using zlib.\n")
    assert header.startswith(b"# Sphinx inventory version 2")
    entries = {}
    for line in zlib.decompress(compressed).decode().splitlines():
        match = re.match(r"(.+?)\s+(\S+:\S+)\s+-?\d+\s+\S*\s+.*", line)
        if match:
            entries[match.group(1)] = match.group(2)
    return entries


def test_shipped_inventories_resolve_the_names_our_signatures_use() -> None:
    sb3 = read_inventory(DOCS / "_inventories" / "stable-baselines3.inv")
    contrib = read_inventory(DOCS / "_inventories" / "sb3-contrib.inv")
    for name in (
        "stable_baselines3.common.on_policy_algorithm.OnPolicyAlgorithm",
        "stable_baselines3.common.policies.ActorCriticPolicy",
        "stable_baselines3.common.callbacks.CheckpointCallback",
        "stable_baselines3.common.vec_env.vec_normalize.VecNormalize",
        "stable_baselines3.common.distributions.Distribution",
    ):
        assert sb3.get(name, "").startswith("py:"), name
    for name in (
        "sb3_contrib.ppo_mask.MaskablePPO",
        "sb3_contrib.common.maskable.policies.MaskableActorCriticPolicy",
        "sb3_contrib.common.recurrent.policies.RecurrentActorCriticPolicy",
    ):
        assert contrib.get(name, "").startswith("py:"), name


def public_names() -> list[tuple[str, object]]:
    """(module.name, object) of every name in the ``__all__`` of the package and its subpackages."""
    names = [("sb3_trpo_plugin.MaskableTRPO", sb3_trpo_plugin.MaskableTRPO)]
    names.append(("sb3_trpo_plugin.RecurrentTRPO", sb3_trpo_plugin.RecurrentTRPO))
    for module_info in pkgutil.walk_packages(sb3_trpo_plugin.__path__, "sb3_trpo_plugin."):
        if module_info.ispkg:
            module = importlib.import_module(module_info.name)
            names += [(f"{module.__name__}.{name}", getattr(module, name)) for name in getattr(module, "__all__", [])]
    names += [(f"sb3_trpo_plugin.{name}", getattr(sb3_trpo_plugin, name)) for name in sb3_trpo_plugin.__all__]
    return names


def resolve(dotted: str) -> object | None:
    """The class, function or module a documented name reaches (``None`` for plain values, which have no identity)."""
    module_name, attribute = dotted, []
    while module_name:
        try:
            value = importlib.import_module(module_name)
            break
        except ImportError:
            module_name, _, last = module_name.rpartition(".")
            attribute.insert(0, last)
    else:
        return None
    for part in attribute:
        value = getattr(value, part, None)
    return value if inspect.isclass(value) or inspect.isroutine(value) or inspect.ismodule(value) else None


def test_docs_build_without_warnings_and_cover_the_package(tmp_path: Path) -> None:
    import sphinx

    if sphinx.version_info < (9,):
        pytest.skip("Sphinx 8.1 (the newest for Python 3.10) leaves annotations through module aliases (th.Tensor) unresolved")
    html = tmp_path / "html"
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-E", "-q", "-b", "html"]
    command += ["-d", str(tmp_path / "doctrees"), str(DOCS), str(html)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"the docs build failed or warned:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"

    # Every page, its search index, the figures and the equations.
    for page in pages():
        assert (html / page.relative_to(DOCS).with_suffix(".html")).is_file(), page
    search_index = (html / "searchindex.js").read_text()
    assert (html / "search.html").is_file()
    for term in ("trust", "conjug", "torchrun", "unpickl"):
        assert f'"{term}' in search_index, term
    assert sorted(path.name for path in DOCS.glob("*.png")) == sorted(path.name for path in (html / "_images").glob("*.png"))
    algorithm = (html / "algorithm.html").read_text()
    assert algorithm.count("<math") > 20 and "\\frac" not in algorithm and "$$" not in algorithm

    # The API reference: every public name, every module, with the docstrings' parameters rendered.
    inventory = read_inventory(html / "objects.inv")
    documented = {name for name, role in inventory.items() if role.startswith("py:")}
    for name in ("TRPO", "MaskableTRPO", "RecurrentTRPO", "safe_load", "safe_load_vec_normalize", "HyperparameterError"):
        assert f"sb3_trpo_plugin.{name}" in documented, name
    assert "sb3_trpo_plugin.serialization.checkpoints.CheckpointCallback" in documented
    assert "sb3_trpo_plugin.parallel.UpdateCheckpointCallback" in documented
    # A public name is documented under that name, or the very object is documented under another of its names.
    documented_objects = {id(value) for name in documented if name.startswith("sb3_trpo_plugin") if (value := resolve(name))}
    missing = [name for name, value in public_names() if name not in documented and id(value) not in documented_objects]
    assert missing == []
    modules = {name for name, role in inventory.items() if role == "py:module"}
    package_modules = {info.name for info in pkgutil.walk_packages(sb3_trpo_plugin.__path__, "sb3_trpo_plugin.")}
    assert sorted(package_modules - modules - {"sb3_trpo_plugin.__main__", "sb3_trpo_plugin.zoo.__main__"}) == []
    algorithms = (html / "api" / "algorithms.html").read_text()
    assert "target_kl" in algorithms and "Trust-region radius" in algorithms  # TRPO's :param target_kl:


def test_every_module_of_the_package_is_on_an_api_page() -> None:
    directives = "\n".join(path.read_text() for path in (DOCS / "api").glob("*.rst"))
    named = set(re.findall(r"automodule:: (\S+)", directives))
    modules = {info.name for info in pkgutil.walk_packages(sb3_trpo_plugin.__path__, "sb3_trpo_plugin.")} | {"sb3_trpo_plugin"}
    assert sorted(name for name in modules - named if not name.endswith("__main__")) == []
