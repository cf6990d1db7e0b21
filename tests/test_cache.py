"""The activation cache: keyed, written atomically, verified on load; damaged or half-written caches are never trusted."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from monosem.cache import concept_key, load_or_extract_concepts, open_cache
from monosem.config import MonosemError
from monosem.io import sha256_file
from monosem.paths import model_paths
from monosem.testing import small_concepts


@pytest.fixture
def small(concepts):
    return small_concepts(concepts, 1)


def test_cache_is_keyed_written_atomically_and_verified(bundled, concepts, data_dir):
    spec, model, tok = bundled
    mp = model_paths(data_dir, spec.used)
    df = small_concepts(concepts)
    c1 = load_or_extract_concepts(mp, spec, df, [0, 1], model_and_tokenizer=(model, tok))
    assert c1.folder.parent == data_dir / "activations" / spec.slug == mp.activations
    meta = json.loads((c1.folder / "meta.json").read_text())
    assert meta["key"] == c1.folder.name and meta["key_inputs"]["layers"] == [0, 1]
    # same inputs -> same folder, loaded, not recomputed
    c2 = load_or_extract_concepts(mp, spec, df, [0, 1], model_and_tokenizer=(None, None))
    assert c2.folder == c1.folder
    torch.testing.assert_close(c2.tokens(1), c1.tokens(1))
    # any change of dataset or layers -> another key
    assert concept_key(spec, df.iloc[1:], [0, 1])[0] != meta["key"]
    assert concept_key(spec, df, [0, 2])[0] != meta["key"]
    # a truncated file is detected by its checksum and recomputed with a warning
    expected = c1.tokens(1).clone()
    del c1, c2
    f = mp.activations / meta["key"] / "tokens_L1.npy"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.warns(UserWarning, match="damaged"):
        c3 = load_or_extract_concepts(mp, spec, df, [0, 1], model_and_tokenizer=(model, tok))
    torch.testing.assert_close(c3.tokens(1), expected)
    with pytest.raises(MonosemError, match="not in this cache"):
        c3.word(5)
    with pytest.raises(MonosemError, match="run notebooks/01"):
        open_cache(mp, concept_key(spec, df, [0, 3])[0])


def test_meta_json_that_does_not_match_its_key_is_recomputed(bundled, small, data_dir):
    spec, model, tok = bundled
    mp = model_paths(data_dir, spec.used)
    c = load_or_extract_concepts(mp, spec, small, [0], model_and_tokenizer=(model, tok))
    meta_path = c.folder / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["key_inputs"]["layers"] = [5]  # claims other inputs than its folder's key
    meta_path.write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="does not match its folder's key"):
        c2 = load_or_extract_concepts(mp, spec, small, [0], model_and_tokenizer=(model, tok))
    assert json.loads((c2.folder / "meta.json").read_text())["key_inputs"]["layers"] == [0]
    with pytest.raises(MonosemError):  # load-only path (notebooks 02-04) refuses a damaged cache outright
        meta_path.write_text("{}")
        open_cache(mp, concept_key(spec, small, [0])[0])


def test_a_process_killed_while_writing_leaves_no_cache_and_the_next_run_starts_clean(bundled, small, data_dir, tmp_path):
    spec, model, tok = bundled
    small.to_csv(tmp_path / "c.csv", columns=["concept", "word", "sentence"], index=False)
    code = f"""
import os, signal
from monosem import cache
from monosem.dataset import load_concepts
from monosem.model import resolve_model
from monosem.paths import model_paths
df = load_concepts({str(tmp_path / 'c.csv')!r})
spec = resolve_model('bundled')
cache.sha256_file = lambda p: os.kill(os.getpid(), signal.SIGKILL)  # dies after the tensors are written, before the rename
cache.load_or_extract_concepts(model_paths({str(data_dir)!r}, spec.used), spec, df, [0])
"""
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "MONOSEM_DATA_DIR": str(data_dir)}, capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()[-500:]
    mp = model_paths(data_dir, spec.used)
    base = mp.activations
    key, _ = concept_key(spec, small, [0])
    assert not (base / key).exists(), "a killed write must not leave a cache that looks complete"
    leftovers = [p.name for p in base.iterdir() if not p.name.endswith(".lock")]  # the (released) lock file stays, by design
    assert leftovers and all(".tmp-" in n for n in leftovers)
    c = load_or_extract_concepts(mp, spec, small, [0], model_and_tokenizer=(model, tok))
    assert c.folder.name == key and sorted(p.name for p in base.iterdir()) == sorted([key, f".{key}.lock"])


def test_object_arrays_are_never_unpickled(bundled, small, data_dir):
    spec, model, tok = bundled
    mp = model_paths(data_dir, spec.used)
    c = load_or_extract_concepts(mp, spec, small, [0], model_and_tokenizer=(model, tok))
    evil = c.folder / "tokens_L0.npy"
    os.chmod(evil, 0o644)
    np.save(evil, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    meta = json.loads((c.folder / "meta.json").read_text())
    meta["sha256"]["tokens_L0.npy"] = sha256_file(evil)  # even with a matching checksum
    (c.folder / "meta.json").write_text(json.dumps(meta))
    cache = open_cache(mp, concept_key(spec, small, [0])[0])
    with pytest.raises(ValueError, match="allow_pickle|Python objects"):
        cache.tokens(0)


def test_unknown_pooling(bundled, small, data_dir):
    spec, model, tok = bundled
    c = load_or_extract_concepts(model_paths(data_dir, spec.used), spec, small, [0], model_and_tokenizer=(model, tok))
    with pytest.raises(MonosemError, match="unknown pooling 'max'"):
        c.word(0, "max")
