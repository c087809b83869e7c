"""Atomic file writes: a crash leaves either the previous file or the complete new one, never a mix."""

from __future__ import annotations

import contextlib
import os
import pathlib
import secrets


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """
    Write ``data`` to ``path`` so that readers (and a restart after a crash) see the old or the new content only.

    The bytes go to a hidden temporary file in the same folder (same file system, so the rename is
    atomic), are flushed and ``fsync``-ed, then ``os.replace`` puts the file in place and the folder is
    ``fsync``-ed so the rename itself survives a power loss. A crash before the rename leaves the old
    file untouched (and possibly a ``.<name>.<random>.tmp`` file, which is never mistaken for a model).
    The new file gets the usual permissions (``0o666`` less the umask), like ``open(path, "wb")``.

    :param path: destination; missing parent folders are created
    :param data: the complete new content
    """
    destination = pathlib.Path(path)
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(f".{destination.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "xb") as file:
            write_in_chunks(file, data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, destination)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    fsync_folder(destination.parent)


def write_in_chunks(file: object, data: bytes, chunk_size: int = 1 << 20) -> None:
    """
    Write ``data`` to an open binary file in chunks of ``chunk_size`` bytes.

    :param file: a writable binary file object
    :param data: bytes to write
    :param chunk_size: bytes per ``write`` call
    """
    view = memoryview(data)
    for start in range(0, len(view), chunk_size):
        file.write(view[start : start + chunk_size])  # type: ignore[attr-defined]


def fsync_folder(folder: pathlib.Path) -> None:
    """
    Make a rename inside ``folder`` durable (POSIX); a no-op where folders cannot be opened (Windows).

    :param folder: the folder that holds the renamed file
    """
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(descriptor)
    finally:
        os.close(descriptor)
