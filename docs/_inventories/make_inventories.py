"""
Write the intersphinx inventories of Stable-Baselines3's and sb3-contrib's documentation, without the network.

The docs build reads no network, so it cannot download ``objects.inv`` from SB3's and sb3-contrib's sites. This
script writes equivalent inventories from the installed packages and the layout of those sites: which page
documents which objects (the ``autoclass``/``automodule`` directives of their ``docs/`` folders), under the names
their pages give them (an object documented as ``stable_baselines3.common.vec_env.VecNormalize`` is also reached
from ``stable_baselines3.common.vec_env.vec_normalize.VecNormalize``, where it is defined, which is the name a type
hint gives Sphinx). Objects their docs do not render (rollout buffers, type aliases) are not listed: those names
stay plain text in our pages.

Run it again when SB3 or sb3-contrib add pages (``python docs/_inventories/make_inventories.py``); the output is
deterministic for a given installed version, and ``tests/test_docs.py`` checks that the shipped files resolve the
names our API reference links to.
"""

from __future__ import annotations

import importlib
import inspect
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass
class Page:
    """One page of a project's docs and what it renders."""

    uri: str  # relative to the docs' base URL
    #: documented name -> the names that should reach it too (where the object is defined, re-exports)
    classes: dict[str, list[str]] = field(default_factory=dict)
    #: modules whose public classes and functions the page renders with ``automodule :members:``
    modules: list[str] = field(default_factory=list)
    #: module-level functions rendered one by one
    functions: list[str] = field(default_factory=list)
    #: whether the classes' inherited members are rendered too (``:inherited-members:``)
    inherited_members: bool = False


def _import(dotted: str) -> object:
    module_name, _, attribute = dotted.rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)


def _canonical(obj: object) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"  # type: ignore[attr-defined]


def _members(cls: type, inherited: bool) -> Iterable[tuple[str, str]]:
    """The (name, role) of a class's public methods and properties, as autodoc's ``:members:`` renders them."""
    names = dir(cls) if inherited else list(vars(cls))
    for name in names:
        if name.startswith("_"):
            continue
        value = inspect.getattr_static(cls, name)
        if isinstance(value, property):
            yield name, "property"
        elif isinstance(value, (classmethod, staticmethod)) or inspect.isfunction(value):
            yield name, "method"


def _entries(pages: list[Page]) -> list[tuple[str, str, str]]:
    """(name, domain:role, uri) of every object the pages document, with each object's other names."""
    entries: dict[tuple[str, str], str] = {}

    def add(name: str, role: str, uri: str) -> None:
        entries.setdefault((name, role), uri)

    def add_class(documented: str, aliases: list[str], cls: type, page: Page) -> None:
        anchor = f"{page.uri}#{documented}"
        role = "py:exception" if issubclass(cls, BaseException) else "py:class"
        for name in [documented, *aliases, _canonical(cls)]:
            add(name, role, anchor)
        for member, member_role in _members(cls, page.inherited_members):
            for name in [documented, *aliases, _canonical(cls)]:
                add(f"{name}.{member}", f"py:{member_role}", f"{page.uri}#{documented}.{member}")

    for page in pages:
        for documented, aliases in page.classes.items():
            add_class(documented, aliases, _import(documented), page)  # type: ignore[arg-type]
        for module_name in page.modules:
            module = importlib.import_module(module_name)
            add(module_name, "py:module", f"{page.uri}#module-{module_name}")
            for name, value in vars(module).items():
                if name.startswith("_") or getattr(value, "__module__", None) != module_name:
                    continue
                if inspect.isclass(value):
                    add_class(f"{module_name}.{name}", [], value, page)
                elif inspect.isfunction(value):
                    add(f"{module_name}.{name}", "py:function", f"{page.uri}#{module_name}.{name}")
        for function_name in page.functions:
            function = _import(function_name)
            for name in (function_name, _canonical(function)):
                add(name, "py:function", f"{page.uri}#{function_name}")
    return sorted((name, role, uri) for (name, role), uri in entries.items())


def write_inventory(path: Path, project: str, version: str, pages: list[Page]) -> int:
    """
    Write a Sphinx inventory (format version 2) of the pages' objects.

    :return: the number of objects written
    """
    lines = []
    for name, role, uri in _entries(pages):
        if uri.endswith(f"#{name}"):
            uri = uri[: -len(name)] + "$"  # the format's shorthand for "the anchor is the name"
        lines.append(f"{name} {role} 1 {uri} -\n")
    header = f"# Sphinx inventory version 2\n# Project: {project}\n# Version: {version}\n"
    header += "# The remainder of this file is compressed using zlib.\n"
    path.write_bytes(header.encode() + zlib.compress("".join(lines).encode()))
    return len(lines)


def _vec_envs() -> dict[str, list[str]]:
    import stable_baselines3.common.vec_env as vec_env

    names = ["VecEnv", "DummyVecEnv", "SubprocVecEnv", "VecFrameStack", "VecNormalize", "VecVideoRecorder"]
    names += ["VecCheckNan", "VecTransposeImage", "VecMonitor", "VecExtractDictObs", "VecEnvWrapper"]
    return {f"stable_baselines3.common.vec_env.{name}": [] for name in names if hasattr(vec_env, name)}


def sb3_pages() -> list[Page]:
    return [
        Page(
            "modules/base.html",
            classes={
                "stable_baselines3.common.base_class.BaseAlgorithm": [],
                "stable_baselines3.common.off_policy_algorithm.OffPolicyAlgorithm": [],
                "stable_baselines3.common.on_policy_algorithm.OnPolicyAlgorithm": [],
            },
        ),
        Page(
            "modules/ppo.html",
            classes={
                "stable_baselines3.ppo.PPO": ["stable_baselines3.PPO"],
                "stable_baselines3.ppo.MlpPolicy": ["stable_baselines3.ppo.policies.MlpPolicy"],
                "stable_baselines3.ppo.CnnPolicy": ["stable_baselines3.ppo.policies.CnnPolicy"],
                "stable_baselines3.ppo.MultiInputPolicy": ["stable_baselines3.ppo.policies.MultiInputPolicy"],
            },
            inherited_members=True,
        ),
        Page("modules/a2c.html", classes={"stable_baselines3.a2c.A2C": ["stable_baselines3.A2C"]}, inherited_members=True),
        Page("guide/callbacks.html", modules=["stable_baselines3.common.callbacks"]),
        Page("guide/vec_envs.html", classes=_vec_envs()),
        Page("common/distributions.html", modules=["stable_baselines3.common.distributions"]),
        Page("common/env_util.html", modules=["stable_baselines3.common.env_util"]),
        Page("common/evaluation.html", modules=["stable_baselines3.common.evaluation"]),
        Page("common/env_checker.html", modules=["stable_baselines3.common.env_checker"]),
        Page("common/monitor.html", modules=["stable_baselines3.common.monitor"]),
        Page("common/logger.html", modules=["stable_baselines3.common.logger"]),
        Page("common/utils.html", modules=["stable_baselines3.common.utils"]),
    ]


def sb3_contrib_pages() -> list[Page]:
    return [
        Page(
            "modules/trpo.html",
            classes={"sb3_contrib.trpo.TRPO": ["sb3_contrib.TRPO"]},
            inherited_members=True,
        ),
        Page(
            "modules/ppo_mask.html",
            classes={
                "sb3_contrib.ppo_mask.MaskablePPO": ["sb3_contrib.MaskablePPO"],
                "sb3_contrib.ppo_mask.MlpPolicy": ["sb3_contrib.ppo_mask.policies.MlpPolicy"],
                "sb3_contrib.ppo_mask.CnnPolicy": ["sb3_contrib.ppo_mask.policies.CnnPolicy"],
                "sb3_contrib.ppo_mask.MultiInputPolicy": ["sb3_contrib.ppo_mask.policies.MultiInputPolicy"],
            },
            inherited_members=True,
        ),
        Page(
            "modules/ppo_recurrent.html",
            classes={
                "sb3_contrib.ppo_recurrent.RecurrentPPO": ["sb3_contrib.RecurrentPPO"],
                "sb3_contrib.ppo_recurrent.MlpLstmPolicy": ["sb3_contrib.ppo_recurrent.policies.MlpLstmPolicy"],
                "sb3_contrib.ppo_recurrent.CnnLstmPolicy": ["sb3_contrib.ppo_recurrent.policies.CnnLstmPolicy"],
                "sb3_contrib.ppo_recurrent.MultiInputLstmPolicy": ["sb3_contrib.ppo_recurrent.policies.MultiInputLstmPolicy"],
            },
            inherited_members=True,
        ),
        Page("common/wrappers.html", classes={"sb3_contrib.common.wrappers.TimeFeatureWrapper": []}),
    ]


def main() -> None:
    import sb3_contrib
    import stable_baselines3

    count = write_inventory(HERE / "stable-baselines3.inv", "Stable Baselines3", stable_baselines3.__version__, sb3_pages())
    print(f"stable-baselines3.inv: {count} objects (SB3 {stable_baselines3.__version__})")
    count = write_inventory(
        HERE / "sb3-contrib.inv", "Stable Baselines3 - Contrib", sb3_contrib.__version__, sb3_contrib_pages()
    )
    print(f"sb3-contrib.inv: {count} objects (sb3-contrib {sb3_contrib.__version__})")


if __name__ == "__main__":
    main()
