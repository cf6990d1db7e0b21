import pytest

from monosem.config import MonosemError
from monosem.io import atomic_dir, clean_stale_temp, safe_child, slugify


def test_slugs_and_paths_cannot_escape_data(tmp_path):
    assert slugify("../../etc/passwd") == "etc--passwd"
    assert ".." not in slugify("a/../b")
    with pytest.raises(MonosemError, match="escape"):
        safe_child(tmp_path, "..", "x")
    with pytest.raises(MonosemError):
        slugify("///")


def test_interrupted_write_leaves_nothing_behind(tmp_path):
    target = tmp_path / "cache" / "key"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "half.safetensors").write_bytes(b"x")
            raise RuntimeError("killed")
    assert not target.exists() and list((tmp_path / "cache").iterdir()) == []
    # a temp folder left by a killed process is removed on the next run
    (tmp_path / "cache" / ".key.tmp-abc").mkdir()
    clean_stale_temp(tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []
