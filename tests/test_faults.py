"""Bad input and faults: a clear error that says what to do, and nothing lost or half-written."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

import helpers as h


@pytest.fixture
def small(concepts):
    words = concepts.drop_duplicates("word").groupby("concept").head(1).word
    return concepts[concepts.word.isin(words)].reset_index(drop=True)


def test_meta_json_that_does_not_match_its_key_is_recomputed(bundled, small, data_dir):
    spec, model, tok = bundled
    c = h.load_or_extract(spec, small, [0], model_and_tokenizer=(model, tok))
    meta_path = c.folder / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["key_inputs"]["layers"] = [5]  # claims other inputs than its folder's key
    meta_path.write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="does not match its folder's key"):
        c2 = h.load_or_extract(spec, small, [0], model_and_tokenizer=(model, tok))
    assert json.loads((c2.folder / "meta.json").read_text())["key_inputs"]["layers"] == [0]
    with pytest.raises(h.MonosemError):  # load-only path (notebooks 02-04) refuses a damaged cache outright
        meta_path.write_text("{}")
        h.load_activations(spec, small, [0])


def test_a_process_killed_while_writing_leaves_no_cache_and_the_next_run_starts_clean(bundled, small, data_dir, tmp_path):
    spec, model, tok = bundled
    small.to_csv(tmp_path / "c.csv", columns=["concept", "word", "sentence"], index=False)
    code = f"""
import os, signal, helpers as h
df = h.load_concepts({str(tmp_path / 'c.csv')!r})
spec = h.resolve_model('bundled')
h.sha256_file = lambda p: os.kill(os.getpid(), signal.SIGKILL)  # dies after the tensors are written, before the rename
h.load_or_extract(spec, df, [0])
"""
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "MONOSEM_DATA_DIR": str(data_dir)}, capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()[-500:]
    base = h.activations_dir(spec)
    key, _ = h.activation_key(spec, small, [0])
    assert not (base / key).exists(), "a killed write must not leave a cache that looks complete"
    leftovers = [p.name for p in base.iterdir()]
    assert leftovers and all(".tmp-" in n for n in leftovers)
    c = h.load_or_extract(spec, small, [0], model_and_tokenizer=(model, tok))
    assert c.folder.name == key and [p.name for p in base.iterdir()] == [key]


def test_sae_folder_with_a_missing_tensor(tmp_path):
    from safetensors.torch import load_file, save_file

    h.save_sae(h.SAE(8, 4, seed=0), tmp_path / "s", "m", 0)
    w = load_file(tmp_path / "s" / "sae_weights.safetensors")
    del w["b_dec"]
    save_file(w, tmp_path / "s" / "sae_weights.safetensors")
    with pytest.raises(h.MonosemError, match=r"expected exactly \['W_dec', 'W_enc', 'b_dec', 'b_enc'\]"):
        h.load_sae(tmp_path / "s")
    (tmp_path / "s" / "cfg.json").write_text("{not json")
    with pytest.raises(h.MonosemError, match="not a valid SAELens cfg.json"):
        h.load_sae(tmp_path / "s")


def test_a_failed_sae_write_keeps_the_previous_sae(tmp_path, monkeypatch):
    folder = tmp_path / "layer_0"
    h.save_sae(h.SAE(8, 4, seed=0), folder, "m", 0)
    before = (folder / "sae_weights.safetensors").read_bytes()

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(h, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        h.save_sae(h.SAE(8, 4, seed=1), folder, "m", 0)
    assert (folder / "sae_weights.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["layer_0"]


def test_model_names_cannot_put_files_outside_data(data_dir):
    for name in ("../../etc", "a/../../b", "/abs/path/../x"):
        for path in (h.results_dir(name), h.sae_folder(name, 0), h.sae_folder(name, 0, "../../x")):
            assert data_dir.resolve() in path.parents, path
    with pytest.raises(h.MonosemError, match="cannot make a folder name"):
        h.results_dir("..")


def test_object_arrays_are_never_unpickled(bundled, small, data_dir):
    spec, model, tok = bundled
    c = h.load_or_extract(spec, small, [0], model_and_tokenizer=(model, tok))
    evil = c.folder / "tokens_L0.npy"
    os.chmod(evil, 0o644)
    np.save(evil, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    meta = json.loads((c.folder / "meta.json").read_text())
    meta["sha256"]["tokens_L0.npy"] = h.sha256_file(evil)  # even with a matching checksum
    (c.folder / "meta.json").write_text(json.dumps(meta))
    cache = h.load_activations(spec, small, [0])
    with pytest.raises(ValueError, match="allow_pickle|Python objects"):
        cache.tokens(0)


def test_no_pickle_and_no_remote_code_anywhere():
    sources = [ROOT / "helpers.py", *(ROOT / "notebooks").glob("*.ipynb"), *(ROOT / "bench").glob("*.py")]
    for path in sources:
        text = path.read_text()
        for bad in ("trust_remote_code=True", "torch.save(", "torch.load(", "import pickle", "allow_pickle=True"):
            assert bad not in text, f"{path.name} uses {bad}"


def test_bad_environment_values_say_which_variable(monkeypatch):
    monkeypatch.setenv("MONOSEM_LAYERS", "one,two")
    with pytest.raises(h.MonosemError, match="MONOSEM_LAYERS='one,two' is invalid"):
        h.env_param("MONOSEM_LAYERS", [0], h.parse_layers)
    monkeypatch.setenv("MONOSEM_SAE_STEPS", "many")
    with pytest.raises(h.MonosemError, match="MONOSEM_SAE_STEPS"):
        h.env_param("MONOSEM_SAE_STEPS", 10, int)


def test_unknown_pooling_and_basis(bundled, small, data_dir):
    spec, model, tok = bundled
    c = h.load_or_extract(spec, small, [0], model_and_tokenizer=(model, tok))
    with pytest.raises(h.MonosemError, match="unknown pooling 'max'"):
        c.word(0, "max")
    with pytest.raises(h.MonosemError, match="unknown basis"):
        h.unit_activations("neurons", c, 0)
