"""Read-only access to the files of a folder or a zip archive, by relative posix name."""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

from resnetctl.data.images import BadImage, file_kind, max_file_bytes, read_file
from resnetctl.errors import DatasetError


def walk_folder(root: str | os.PathLike, prune_hidden: bool = False) -> tuple[list[str], list[dict]]:
    """Every regular file under ``root`` by relative posix name (sorted per folder, top-down),
    and what was skipped: ``[{"file", "reason"}]`` for FIFOs, devices, sockets, broken links,
    unreadable folders and folders reached a second time (a link loop).

    Links to folders are followed (a class folder may be a symlink); each real folder is read
    once, by device and inode, so a loop ends. Iterative: no depth limit. Nothing but folders is
    opened: a file's kind comes from its directory entry (or ``stat``), never from ``open``.
    """
    files: list[str] = []
    skipped: list[dict] = []
    stack = [("", os.fspath(root))]
    seen: set[tuple[int, int]] = set()
    while stack:
        prefix, path = stack.pop()
        where = prefix.rstrip("/") or "."
        try:
            info = os.stat(path)
            key = (info.st_dev, info.st_ino)
            if key in seen:
                skipped.append({"file": where, "reason": "a link to a folder already read (a loop); not followed"})
                continue
            seen.add(key)
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            skipped.append({"file": where, "reason": f"unreadable folder ({exc.strerror or exc})"})
            continue
        folders = []
        for entry in entries:
            if prune_hidden and entry.name.startswith("."):
                continue
            name = prefix + entry.name
            try:
                if entry.is_dir():
                    folders.append((name + "/", entry.path))
                    continue
                if entry.is_file():
                    files.append(name)
                    continue
                kind = file_kind(entry.stat().st_mode)
            except OSError as exc:
                kind = "a broken link" if entry.is_symlink() else f"unreadable ({exc.strerror or exc})"
            skipped.append({"file": name, "reason": f"{kind}; not opened"})
        stack.extend(reversed(folders))
    return files, skipped


class FileTree:
    """The files under ``root`` (a folder, or a prefix inside a zip), read as bytes."""

    def __init__(self, source: Path):
        self.source = source
        self._zip: zipfile.ZipFile | None = None
        self.skipped: list[dict] = []  # special files and link loops, never opened
        if source.is_dir():
            self._names, self.skipped = walk_folder(source)
            self._names.sort()
        elif source.is_file() and zipfile.is_zipfile(source):
            try:
                self._zip = zipfile.ZipFile(source)
                self._names = sorted(n for n in self._zip.namelist() if not n.endswith("/"))
            except (zipfile.BadZipFile, OSError) as exc:
                raise DatasetError(f"{source} is a damaged zip archive ({exc})", hint="download it again") from None
            twice = sorted({a for a, b in zip(self._names, self._names[1:], strict=False) if a == b})
            if twice:
                raise DatasetError(
                    f"{source} holds {len(twice)} member name(s) twice, e.g. {twice[0]}: which one is meant is unclear",
                    hint="rebuild the archive with each file once",
                )
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
            limit = max_file_bytes()
            try:
                if self._zip.getinfo(name).file_size > limit:
                    raise BadImage(f"a member of {self._zip.getinfo(name).file_size:,} bytes, over {limit:,}")
                with self._zip.open(name) as member:
                    data = member.read(limit + 1)  # never more than the limit, whatever the header says
                if len(data) > limit:
                    raise BadImage(f"a member of over {limit:,} bytes")
                return data
            except (OSError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
                raise DatasetError(
                    f"{self.source} is a damaged archive: {name}: {exc}", hint="download it again"
                ) from None
        try:
            return read_file(os.path.join(self.source, name))
        except OSError as exc:  # BadImage from read_file (a FIFO swapped in, too large) passes as it is
            raise BadImage(f"unreadable ({exc.strerror or exc})") from None

    def read_text(self, name: str) -> str:
        """Text with any line endings; a missing or damaged file is a DatasetError."""
        try:
            return self.read(name).decode("utf-8", errors="replace")
        except BadImage as exc:
            raise DatasetError(f"{self.source}: cannot read {name}: {exc}") from None
