"""
Cross-references to one of this package's objects by another of its names resolve to where it is documented.

The API reference documents each public object once, under the name users import (``sb3_trpo_plugin.safe_load``),
while docstrings and type hints may name it where it is defined (``sb3_trpo_plugin.loading.safe_load.safe_load``)
or where a subpackage re-exports it (``sb3_trpo_plugin.loading.safe_load``). Sphinx's ``:canonical:`` covers the
first only. On a reference Sphinx cannot resolve, this imports the named object and, when it is the very object
documented under another name, resolves to that entry; a bare name (``find_latest_checkpoint`` in a docstring of a
module that imports it) resolves when exactly one documented object of the package has that name. A type variable
(``SelfTRPO``) stays plain text, as it has no page. Anything else stays unresolved, and the nitpicky build fails on
it as before.
"""

from __future__ import annotations

import importlib
from typing import Any, TypeVar

from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment

PACKAGE = "sb3_trpo_plugin"


def _import(dotted: str) -> Any:
    """:return: the object a dotted name reaches by importing its longest module prefix, or ``None``"""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            value: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attribute in parts[split:]:
                value = getattr(value, attribute)
        except AttributeError:
            return None
        return value
    return None


def _documented_by_identity(env: BuildEnvironment) -> dict[int, tuple[str, str]]:
    """id(object) -> (documented name, object type) of the package's documented objects, computed once per build."""
    cache = getattr(env, "_alias_refs_documented", None)
    if cache is None:
        cache = {}
        for name, entry in env.get_domain("py").objects.items():  # type: ignore[attr-defined]
            if name.startswith(PACKAGE) and not entry.aliased:
                value = _import(name)
                if value is not None and not isinstance(value, (int, float, str, bool)):
                    cache.setdefault(id(value), (name, entry.objtype))
        env._alias_refs_documented = cache  # type: ignore[attr-defined]
    return cache


def resolve_alias(app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.Element) -> nodes.Element | None:
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip(".~")
    module = node.get("py:module") or ""
    candidates = [target]
    if module:
        candidates.insert(0, f"{module}.{target}")
    domain = env.get_domain("py")
    for candidate in candidates:
        if not candidate.startswith(PACKAGE):
            continue
        value = _import(candidate)
        if isinstance(value, TypeVar):
            return contnode
        documented = _documented_by_identity(env).get(id(value)) if value is not None else None
        if documented is not None:
            name, _objtype = documented
            return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], name, node, contnode)
    if "." not in target:
        matches = [name for name in domain.objects if name.startswith(PACKAGE) and name.endswith(f".{target}")]  # type: ignore[attr-defined]
        if len(matches) == 1:
            return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], matches[0], node, contnode)
    return None


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("missing-reference", resolve_alias)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
