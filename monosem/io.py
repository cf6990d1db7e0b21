"""Safe file writing and hashing: atomic files and folders, content hashes, folder names that cannot escape."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from monosem.config import MonosemError


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


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temp file in the same folder and a rename; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
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
    On an exception the temp folder is removed and ``target`` is left as it was.
    """

    def __init__(self, target: Path):
        self.target = Path(target)

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(dir=self.target.parent, prefix=f".{self.target.name}.tmp-"))
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
            old = self.target.with_name(f".{self.target.name}.old-{os.getpid()}")
            os.replace(self.target, old)
        os.replace(self.tmp, self.target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def clean_stale_temp(folder: Path) -> None:
    """Remove temp folders/files left by a process killed mid-write (names start with '.' and hold '.tmp'/'.old-')."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if p.name.startswith(".") and (".tmp" in p.name or ".old-" in p.name):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
