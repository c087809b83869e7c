"""
Sphinx configuration of sb3-trpo-plugin's documentation (``make docs``; the tests build it too: ``tests/test_docs.py``).

Offline by design: the build reads no network. Equations become MathML at build time (``_ext/mathml_math.py``, no
JavaScript from a CDN), and the cross-links into Stable-Baselines3's and sb3-contrib's documentation come from the
inventories in ``_inventories/`` (made by ``_inventories/make_inventories.py`` from the installed packages), not
from their sites.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # the package of this checkout, also without an install
sys.path.insert(0, str(DOCS / "_ext"))


def _resolve_sb3_forward_references() -> None:
    """
    Let SB3's type aliases evaluate outside SB3: ``GymEnv = Union[gym.Env, "VecEnv"]`` and ``MaybeCallback`` hold
    forward references that only SB3's own modules can resolve, so autodoc could not read the type hints of any
    signature that uses them (``TRPO.__init__``, ``learn``, ``safe_load``) and would show no types. For this
    documentation build only, the aliases are rebuilt with the classes themselves, before this package imports them.
    """
    import types
    import typing

    from stable_baselines3.common import type_aliases
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import VecEnv

    classes = {"VecEnv": VecEnv, "BaseCallback": BaseCallback}

    def resolved(hint: typing.Any) -> typing.Any:
        if isinstance(hint, (str, typing.ForwardRef)):
            return classes.get(hint if isinstance(hint, str) else hint.__forward_arg__, hint)
        arguments = typing.get_args(hint)
        if not arguments:
            return hint
        new = tuple(resolved(argument) for argument in arguments)
        if typing.get_origin(hint) is typing.Union:
            return typing.Union[new]  # noqa: UP007  (a union of a tuple of members)
        if isinstance(hint, types.GenericAlias):
            return types.GenericAlias(typing.get_origin(hint), new)
        return hint.copy_with(new)

    type_aliases.GymEnv = resolved(type_aliases.GymEnv)  # type: ignore[misc]
    type_aliases.MaybeCallback = resolved(type_aliases.MaybeCallback)  # type: ignore[misc]


_resolve_sb3_forward_references()  # before the package is imported: it binds the aliases when it is

from sb3_trpo_plugin.version import __version__  # noqa: E402  (after the path is set and the aliases are rebuilt)

project = "sb3-trpo-plugin"
author = "sb3-trpo-plugin contributors"
copyright = "2026, sb3-trpo-plugin contributors"
version = release = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "mathml_math",
    "alias_refs",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_inventories", "_ext", "Thumbs.db", ".DS_Store"]
suppress_warnings: list[str] = []
nitpicky = True

# Markdown pages: $...$ and $$...$$ equations, ::: fences, and anchors for headings so that pages link to sections.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
myst_dmath_double_inline = True

# API reference: the docstrings' ``:param:`` fields, with the signature's types in the description.
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_member_order = "bysource"
autodoc_class_signature = "separated"  # the constructor's parameters under __init__, with their evaluated types
autodoc_default_options = {"show-inheritance": True, "exclude-members": "__new__"}
autodoc_preserve_defaults = True

# Cross-links to SB3 and sb3-contrib from inventories shipped with the docs (no download at build time).
intersphinx_mapping = {
    "sb3": ("https://stable-baselines3.readthedocs.io/en/master/", str(DOCS / "_inventories" / "stable-baselines3.inv")),
    "sb3_contrib": ("https://sb3-contrib.readthedocs.io/en/master/", str(DOCS / "_inventories" / "sb3-contrib.inv")),
}
intersphinx_timeout = 1

# Libraries whose documentation has no inventory here (torch, NumPy, Gymnasium, the standard library): their names in
# signatures stay plain text instead of failing the nitpicky build.
nitpick_ignore_regex = [
    ("py:.*", r"(torch|nn|numpy|np|gymnasium|gym|optuna|rl_zoo3)(\..*)?"),
    ("py:.*", r"(pathlib|os|io|collections\.abc|typing|argparse|dataclasses|datetime|enum|zipfile|pickle)\..*"),
    ("py:.*", r"(multiprocessing|subprocess)\..*"),
    # SB3's and sb3-contrib's type aliases and rollout buffers, which their documentation does not render.
    ("py:.*", r"stable_baselines3\.common\.(type_aliases|buffers|torch_layers|preprocessing|running_mean_std|save_util)\..*"),
    ("py:.*", r"sb3_contrib\.common\.(maskable|recurrent)\.(buffers|type_aliases|distributions)\..*"),
    # Annotations that autodoc leaves unqualified: an attribute's; a signature's seen through a type alias's expansion.
    ("py:class", r"(Maskable(Dict)?)?RolloutBuffer"),
    ("py:class", r"stable_baselines3\.common\.policies\.BasePolicy"),  # not in SB3's rendered API reference
]

html_theme = "furo"
html_title = f"sb3-trpo-plugin {release}"
html_static_path: list[str] = []
html_show_sourcelink = True
html_theme_options = {
    "source_directory": "docs/",
    "navigation_with_keys": True,
}
html_math_renderer = "mathml"


def write_command_help(app: object) -> None:
    """
    Write ``sb3-trpo COMMAND --help`` into ``_generated/`` for the command-line page, from the parser itself, so that
    the page cannot drift from the options (the folder is ignored by git).
    """
    import argparse
    import os

    from sb3_trpo_plugin.cli import build_parser

    folder = DOCS / "_generated"
    folder.mkdir(exist_ok=True)
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "90"  # argparse wraps at the terminal's width: the same text on every machine
    try:
        parser = build_parser()
        commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
        for name, command in commands.choices.items():
            text = f"$ {command.prog} --help\n{command.format_help()}"
            path = folder / f"sb3-trpo-{name}.txt"
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns


def setup(app: object) -> None:
    app.connect("builder-inited", write_command_help)  # type: ignore[attr-defined]
