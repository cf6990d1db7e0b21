"""Safe file writing and hashing: atomic files and folders, content hashes, folder names that cannot escape."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

from monosem.config import MonosemError

log = logging.getLogger(__name__)


def slugify(name: str) -> str:
    """A folder-safe slug for a model name or path ('gpt2-medium', 'org--model'); never '..'."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "--", name.strip().strip("/\\")).strip("-.")
    slug = re.sub(r"\.{2,}", ".", slug)
    if not slug:
        raise MonosemError(f"cannot make a folder name out of model name {name!r}; give a hub name or a folder path")
    return slug


def safe_child(base: Path, *parts: str) -> Path:
    """``base/parts...``, refusing any result that would escape ``base`` (e.g. through '../')."""
    base = Path(base).resolve()
    target = base.joinpath(*parts).resolve()
    if target != base and base not in target.parents:
        raise MonosemError(f"path {'/'.join(parts)!r} would escape {base}; use a plain name without '..' or '/'")
    return target


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def hash_json(obj: Any) -> str:
    """A short stable hash of a JSON-serialisable object (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _owner_tag() -> str:
    """'<pid>h<host hash>': which process on which machine owns a temp file or folder."""
    return f"{os.getpid()}h{hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]}"


def _readable_mode() -> int:
    """0666 less the user's umask (what ``open`` would give a new file)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temp file in the same folder and a rename; returns ``path``.

    The file gets the user's usual permissions (0644 with the common umask 022), not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-{_owner_tag()}-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, _readable_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON."""
    return atomic_write_text(path, json.dumps(obj, indent=2, default=float))


def read_json(path: Path, what: str, fix: str) -> Any:
    """Parse the JSON file ``path``; a missing or malformed file is a MonosemError that names it and says ``fix``."""
    path = Path(path)
    if not path.is_file():
        raise MonosemError(f"{what} {path} not found; {fix}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise MonosemError(f"{what} {path} is not valid JSON ({exc}); {fix}") from None


class atomic_dir:
    """Context manager: build a folder in a temp sibling, then swap it into place on success.

    >>> with atomic_dir(target) as tmp:   # write files into tmp
    ...     save_file(tensors, tmp / "x.safetensors")
    On an exception the temp folder is removed and ``target`` is left as it was. Temp names carry
    the owner's pid and host, so ``clean_stale_temp`` never removes a folder another run is writing.
    """

    def __init__(self, target: Path):
        self.target = Path(target)

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(dir=self.target.parent, prefix=f".{self.target.name}.tmp-{_owner_tag()}-"))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        os.chmod(self.tmp, 0o755)  # mkdtemp makes 0700; caches are meant to be shared like any data folder
        for p in self.tmp.iterdir():
            os.chmod(p, 0o644)
        old = None
        if self.target.exists():
            old = Path(tempfile.mkdtemp(dir=self.target.parent, prefix=f".{self.target.name}.old-{_owner_tag()}-"))
            os.replace(self.target, old / self.target.name)
        os.replace(self.tmp, self.target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


STALE_AFTER_S = 24 * 3600  # a temp folder untouched this long is stale whoever owns it


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale_temp(path: Path, max_age_s: float = STALE_AFTER_S) -> bool:
    """True for a temp file or folder whose writer is gone: its owner's pid no longer runs on this host, it names no
    owner (older versions), or nothing in it changed for ``max_age_s`` seconds."""
    try:
        newest = max([path.stat().st_mtime] + [p.stat().st_mtime for p in path.iterdir()] if path.is_dir() else [path.stat().st_mtime])
    except FileNotFoundError:
        return False  # its owner just renamed or removed it
    if time.time() - newest > max_age_s:
        return True
    owner = re.search(r"\.(?:tmp|old)-(\d+)h([0-9a-f]{8})-", path.name)
    if owner is None:
        return True
    if owner.group(2) != _owner_tag().split("h", 1)[1]:
        return False  # another machine's: only its age can tell
    return not _pid_alive(int(owner.group(1)))


def clean_stale_temp(folder: Path) -> None:
    """Remove temp files/folders left by a process killed mid-write (names start with '.' and hold '.tmp'/'.old-'),
    never one that a running process is still writing (see ``is_stale_temp``)."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if p.name.startswith(".") and (".tmp" in p.name or ".old-" in p.name) and is_stale_temp(p):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


@contextmanager
def file_lock(target: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``target`` (a sibling file ``.<name>.lock``) while building it, so that two runs on one
    data folder never build the same artefact at once: the second waits, then finds it built."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "a+") as fh:
        if fcntl is None:  # no POSIX locks (Windows): atomic renames still keep every artefact whole
            yield
            return
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("another run is writing %s; waiting for it to finish", target)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_writable_dir(folder: Path, variable: str = "MONOSEM_DATA_DIR") -> Path:
    """``folder``, created if needed, after checking that files can be written in it; else a MonosemError naming ``variable``."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise MonosemError(f"cannot write in {folder} ({exc.strerror or exc}); set {variable} to a folder you can write, "
                           "or fix its permissions") from None
    return folder
