"""Each benchmark owns one section of ``docs/benchmarks.md``, between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``."""

from __future__ import annotations

from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def replace_section(document: str, name: str, section: str) -> str:
    """
    Put ``section`` between the markers of ``name`` in ``document``, leaving everything else as it is.

    :param document: the current Markdown (may be empty)
    :param name: the section's marker name (``speed``, ``learning``, ``distributed``)
    :param section: the new content, markers excluded
    :return: the new document; the section is appended (after a title, for an empty document) when
        its markers are absent
    """
    start_mark, end_mark = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start_mark}\n{section.strip()}\n{end_mark}"
    start, end = document.find(start_mark), document.find(end_mark)
    if start != -1 and end > start:
        return document[:start] + block + document[end + len(end_mark) :]
    if not document.strip():
        return f"# Benchmarks\n\n{block}\n"
    return document.rstrip("\n") + "\n\n" + block + "\n"


def write_section(name: str, section: str, path: Path = BENCHMARKS_MD) -> None:
    """
    Rewrite the section ``name`` of ``path`` (``docs/benchmarks.md`` by default).

    :param name: the section's marker name
    :param section: the new content, markers excluded
    :param path: the Markdown file, created if absent
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(replace_section(path.read_text() if path.exists() else "", name, section))
