"""Read-only access to the files of a folder or a zip archive, by relative posix name."""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

from resnetctl.data.images import BadImage, read_file
from resnetctl.errors import DatasetError


class FileTree:
    """The files under ``root`` (a folder, or a prefix inside a zip), read as bytes."""

    def __init__(self, source: Path):
        self.source = source
        self._zip: zipfile.ZipFile | None = None
        if source.is_dir():
            self._names = []
            for dirpath, _, files in os.walk(source):  # string work per folder, not per file
                rel = os.path.relpath(dirpath, source)
                prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
                self._names.extend(prefix + f for f in files)
            self._names.sort()
        elif zipfile.is_zipfile(source):
            try:
                self._zip = zipfile.ZipFile(source)
                self._names = sorted(n for n in self._zip.namelist() if not n.endswith("/"))
            except (zipfile.BadZipFile, OSError) as exc:
                raise DatasetError(f"{source} is a damaged zip archive ({exc})", hint="download it again") from None
        elif source.exists():
            raise DatasetError(
                f"{source} is neither a folder nor a complete zip archive",
                hint="a truncated download looks like this; download it again",
            )
        else:
            raise DatasetError(f"{source} does not exist")

    def __getstate__(self) -> dict:  # decode workers get the names; each opens the zip itself
        return {**self.__dict__, "_zip": None, "_is_zip": self._zip is not None}

    def __setstate__(self, state: dict) -> None:
        is_zip = state.pop("_is_zip")
        self.__dict__.update(state)
        if is_zip:
            self._zip = zipfile.ZipFile(self.source)

    def names(self) -> list[str]:
        return self._names

    def locate(self, marker: str) -> str:
        """The prefix (``''`` or ``'top/'``) of the shallowest file named ``marker``."""
        hits = sorted((n for n in self._names if n.rsplit("/", 1)[-1] == marker), key=len)
        if not hits:
            raise DatasetError(f"No {marker} in {self.source}", hint="is this the right archive or folder?")
        return hits[0][: -len(marker)]

    def read(self, name: str) -> bytes:
        """A file's bytes. A damaged zip member (bad CRC, bad deflate data) is damage to the
        archive, which is refused whole; an unreadable file in a folder is one bad image."""
        if self._zip is not None:
            try:
                return self._zip.read(name)
            except (OSError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
                raise DatasetError(
                    f"{self.source} is a damaged archive: {name}: {exc}", hint="download it again"
                ) from None
        try:
            return read_file(os.path.join(self.source, name))
        except OSError as exc:
            raise BadImage(f"unreadable ({exc.strerror or exc})") from None

    def read_text(self, name: str) -> str:
        """Text with any line endings; a missing or damaged file is a DatasetError."""
        try:
            return self.read(name).decode("utf-8", errors="replace")
        except BadImage as exc:
            raise DatasetError(f"{self.source}: cannot read {name}: {exc}") from None
