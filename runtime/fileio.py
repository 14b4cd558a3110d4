"""File helpers used by every writer in the project: atomic writes (temp file in the same folder,
then ``os.replace``, so a crash or a full disk never leaves half an artifact, manifest or
checkpoint), temporaries that a later run can recognise and remove, and content hashes.

Every temporary the project makes inside an output folder is named ``.<tag>.pid<PID>.<random>.tmp``:
a process killed with SIGKILL cannot clean up after itself (a killed export left a 15 MB hidden
file and a work folder behind, issue 13), so the next run removes those whose process is gone.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_TEMP = re.compile(r"^\..+\.pid(?P<pid>\d+)\.[^.]+\.tmp$")


def _temp_prefix(tag: str) -> str:
    return f".{tag}.pid{os.getpid()}."


def make_temp_dir(parent: str | os.PathLike[str], tag: str) -> Path:
    """A private work folder inside ``parent`` (same file system, so results move in with ``os.replace``)."""
    Path(parent).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=parent, prefix=_temp_prefix(tag), suffix=".tmp"))


@contextlib.contextmanager
def temp_dir(parent: str | os.PathLike[str], tag: str) -> Iterator[Path]:
    """:func:`make_temp_dir`, removed on exit however the block ends (short of SIGKILL)."""
    path = make_temp_dir(parent, tag)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the project's temporaries in ``folder`` whose process no longer runs; returns what went."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        m = _TEMP.match(entry.name)
        if not m or int(m["pid"]) == os.getpid() or _alive(int(m["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def write_error(e: OSError) -> str:
    """A one-line explanation of a failed read/write, naming the path and what to do."""
    where = f" {e.filename}" if e.filename else ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return (f"cannot write{where}: {e.strerror} (disk full or file size limit); free space or choose another "
                "OUT; nothing half-written was left at the final paths")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write{where}: {e.strerror}; choose a writable OUT"
    return f"file system error{where}: {e.strerror or e}"


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, with the usual umask mode (``mkstemp`` alone gives 0600,
    which breaks copying artifacts to devices as another user)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path.name), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
