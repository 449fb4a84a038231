"""The one policy for every path a user names for output (``build --save``, ``predict --csv``,
``evaluate --predict``, ``export --out`` and the labels beside it, ``summary --plot``).

Checked before any work is done (:func:`claim`): the folder must exist and be writable; an existing
file is replaced only with ``--force``; a symlink, a device, a FIFO or a socket is never written
through or replaced (``--csv /dev/stdout`` must not replace the system's ``/dev/stdout``); a
folder is never replaced by a file; a path among the tool's own files (a file a run's contract
names, anything in a prepared dataset, the lock beside one: :func:`tool_owned`) is never an
output, ``--force`` or not. Written under a short hidden temporary name in the same
folder and renamed into place (:func:`written`), so a reader never sees half a file and a long
valid name never fails for its temporary's sake. One process writes an output at a time: a
second writer of the same real path is refused. Where a command allows it (``predict --csv``,
``evaluate --predict``), ``-`` names stdout, the Unix way, not a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from resnetctl import locks
from resnetctl.errors import ResnetctlError

TEMP_PREFIX = ".resnetctl-"
STDOUT = "-"


@dataclass(frozen=True)
class Output:
    path: Path  # absolute, so a later chdir (a checking subprocess) cannot change its meaning
    what: str  # the option that named it, for messages
    force: bool
    folder: bool = False  # a folder output (a SavedModel)
    stdout: bool = False  # named "-": written to stdout, no file
    same: str | None = None  # a side file: an existing file that holds exactly this is kept, not a conflict


def _kind(mode: int) -> str | None:
    for test, word in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device")):
        if test(mode):
            return word
    return "a socket" if stat.S_ISSOCK(mode) else None


def check_stdout_once(output, as_json: bool) -> None:
    """An output named ``-`` (stdout) and ``--json`` would both write to stdout: refused."""
    from resnetctl.errors import ResnetctlError

    if output is not None and output.stdout and as_json:
        raise ResnetctlError(
            f"{output.what} - and --json would both write to stdout",
            hint=f"give {output.what} a file name, or leave out --json",
        )


def claim(
    path: str | os.PathLike,
    what: str,
    *,
    force: bool = False,
    folder: bool = False,
    replaceable: Callable[[Path], bool] | None = None,
    stdout: bool = False,
    same: str | None = None,
) -> Output:
    """``path`` checked as an output, before any work. ``replaceable`` says whether an existing
    thing there is one that ``--force`` may replace (e.g. only an earlier export folder);
    ``stdout``: whether ``-`` may name stdout (a text output); ``same``: the text of a side file
    that several outputs share (the class names beside exports of one model in several formats):
    a file there that already holds exactly it is no conflict and is kept as it is."""
    if stdout and str(path) == STDOUT:
        if sys.stdout is None:  # started with stdout closed (>&-)
            raise ResnetctlError(f"{what} - writes to stdout, and stdout is closed")
        return Output(Path(STDOUT), what, force, stdout=True)
    given = Path(path).expanduser()
    where = Path(os.path.abspath(given))
    if not where.parent.is_dir():
        raise ResnetctlError(f"{what} {given}: folder {given.parent} does not exist", hint="create it first")
    if not os.access(where.parent, os.W_OK | os.X_OK):
        raise ResnetctlError(f"{what} {given}: folder {where.parent} is not writable")
    if len(os.fsencode(where.name)) > 255:
        raise ResnetctlError(f"{what} {given}: the file name is longer than 255 bytes")
    owner = tool_owned(where)
    if owner:
        raise ResnetctlError(
            f"{what} {given} is {owner}, which resnetctl manages; no output replaces it, --force or not",
            hint="give a path outside the tool's files",
        )
    try:
        st = os.lstat(where)
    except FileNotFoundError:
        return Output(where, what, force, folder, same=same)
    if stat.S_ISLNK(st.st_mode):
        raise ResnetctlError(
            f"{what} {given} is a symbolic link; it is never written through or replaced",
            hint="give the real path, or a new name",
        )
    special = _kind(st.st_mode)
    if special:
        raise ResnetctlError(f"{what} {given} is {special}; it is never replaced", hint="give a file path")
    if stat.S_ISDIR(st.st_mode) and not folder:
        raise ResnetctlError(f"{what} {given} is a folder; give a file name")
    if same is not None and stat.S_ISREG(st.st_mode) and _holds(where, same):
        return Output(where, what, force, folder, same=same)
    if not force:
        raise ResnetctlError(f"{what} {given} already exists", hint="give another name, or add --force to replace it")
    if folder and not stat.S_ISDIR(st.st_mode):
        raise ResnetctlError(f"{what} {given} exists and is a file; --force replaces only a folder of the same kind")
    if replaceable is not None and not replaceable(where):
        raise ResnetctlError(
            f"{what} {given} exists and was not written by this command; --force replaces only an earlier output"
        )
    return Output(where, what, force, folder)


_BESIDE = re.compile(r"\.(.+?)\.(?:lock|tmp-.*)")  # the lock or a temporary of the run/dataset NAME beside it


def tool_owned(where: Path) -> str | None:
    """What of the tool's ``where`` is or would be (``"a file of run R (PATH)"``), else None: a file
    or folder a run's contract names (:meth:`RunDir.owns`), anything in a prepared dataset (its
    folder holds its files only), a run or dataset itself, or the lock or a temporary beside one.
    Folders are taken as they really are, so a link to a run's folder leads into the run."""
    from resnetctl.data.store import made_by_resnetctl
    from resnetctl.runs import RunDir

    real = Path(os.path.realpath(where.parent)) / where.name
    for folder in (real, *real.parents):
        if not folder.is_dir() or folder.is_symlink():
            continue
        if RunDir(folder).is_run():
            inside = real.relative_to(folder).parts
            if not inside:
                return f"the folder of run {folder.name} ({folder})"
            return f"a file of run {folder.name} ({folder})" if RunDir(folder).owns(inside) else None
        if made_by_resnetctl(folder):
            return f"dataset {folder.name} ({folder})" if folder == real else f"in dataset {folder.name} ({folder})"
    beside = _BESIDE.fullmatch(real.name)
    if beside:
        sibling = real.parent / beside.group(1)
        kind = "run" if RunDir(sibling).is_run() else "dataset" if made_by_resnetctl(sibling) else None
        if kind:
            return f"the lock or a temporary of {kind} {sibling.name} ({sibling})"
    return None


def _holds(path: Path, text: str) -> bool:
    """Whether the regular file ``path`` holds exactly ``text`` (read no further than its length)."""
    wanted = text.encode("utf-8")
    try:
        with open(path, "rb") as f:
            return f.read(len(wanted) + 1) == wanted
    except OSError:
        return False


def recheck(output: Output) -> None:
    """Claim again at publish time: what appeared at the path during the work must not be lost."""
    claim(output.path, output.what, force=output.force, folder=output.folder, same=output.same)


def temp_name(output: Output, suffix: str = "") -> Path:
    """A short hidden name in the output's folder (a valid 250-byte name must not fail for it)."""
    return output.path.with_name(f"{TEMP_PREFIX}{secrets.token_hex(4)}.tmp{suffix}")


def _lock_file(output: Output) -> Path:
    """Outside the user's folder (no litter there), keyed on the output's real path."""
    key = hashlib.sha1(os.fsencode(os.path.realpath(output.path))).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / f"resnetctl-outputs-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder / key


@contextlib.contextmanager
def written(output: Output, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write ``output`` to; on success it is renamed into place (a
    folder output replaces the earlier folder only once the new one is complete). The temporary
    is removed on any failure, and a second writer of the same output is refused."""
    with locks.exclusive_file(_lock_file(output), f"{output.what} {output.path}"):
        tmp = temp_name(output, suffix)
        try:
            yield tmp
            recheck(output)
            publish(tmp, output.path)
        finally:
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()


def publish(tmp: Path, target: Path) -> None:
    """Put a finished file or folder at ``target`` by rename. An earlier folder there is moved
    aside first and removed only after the new one is in place (prepare and export share this)."""
    if target.is_dir() and not target.is_symlink():
        old = target.with_name(f"{TEMP_PREFIX}{secrets.token_hex(4)}.old")
        os.replace(target, old)
        try:
            os.replace(tmp, target)
        except OSError:
            os.replace(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def write_text(output: Output, text: str) -> None:
    if output.stdout:  # flushed here, so a reader that stopped reading (| head) is seen at once
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    if output.same == text and _holds(output.path, text):  # a shared side file that says this already
        return
    with written(output) as tmp:
        tmp.write_text(text, encoding="utf-8")
