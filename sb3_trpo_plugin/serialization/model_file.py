"""What ``TRPO.save`` does with the archive SB3 builds: add the JSON description, then write it atomically."""

from __future__ import annotations

import io
import os
import pathlib
import zipfile
from typing import Any

from sb3_trpo_plugin.serialization.atomic import atomic_write_bytes
from sb3_trpo_plugin.serialization.description import DESCRIPTION_ENTRY, description_json


def model_file_path(path: str | os.PathLike[str]) -> pathlib.Path:
    """
    Where SB3's ``save`` would write: ``path`` itself, with ``.zip`` appended when it has no suffix.

    :param path: the path given to ``save``
    :return: the file to write
    """
    path = pathlib.Path(path)
    return path.with_name(path.name + ".zip") if path.suffix == "" else path


def write_model_file(model: Any, archive: io.BytesIO, path: str | os.PathLike[str] | io.BufferedIOBase) -> None:
    """
    Add the JSON description of ``model`` to the zip archive SB3 wrote into ``archive``, then write it to ``path``.

    A path is written atomically (:func:`~sb3_trpo_plugin.serialization.atomic.atomic_write_bytes`):
    a crash during the save leaves the previous file in place. A file object receives the bytes as is.

    :param model: the TRPO model being saved
    :param archive: the in-memory zip from ``BaseAlgorithm.save``
    :param path: destination path (``.zip`` added when it has no suffix, as SB3 does) or writable binary file
    """
    with zipfile.ZipFile(archive, mode="a") as zip_file:
        zip_file.writestr(DESCRIPTION_ENTRY, description_json(model))
    data = archive.getvalue()
    if isinstance(path, (str, os.PathLike)):
        atomic_write_bytes(model_file_path(path), data)
    else:
        path.write(data)
