"""The fault matrix: each realistic mistake or fault gets one clear line that says what and how to fix, and no good artefact is lost.

The README's troubleshooting table lists the same cases.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from monosem.cache import concept_key, load_or_extract_concepts, open_cache
from monosem.config import MonosemError, RunConfig
from monosem.dataset import load_concepts
from monosem.io import atomic_dir, clean_stale_temp, ensure_writable_dir, is_stale_temp, sha256_file
from monosem.model import load_model, resolve_model
from monosem.paths import model_paths
from monosem.sae.saelens import load_sae, save_sae
from monosem.sae.standard import StandardSAE
from monosem.testing import ROOT, small_concepts


def flip_byte(path: Path, offset_from_end: int = 3) -> None:
    """Flip one bit of a byte near the end of ``path`` (inside the tensor data, not the header)."""
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x40
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))


@pytest.fixture
def saved_sae(tmp_path):
    folder = tmp_path / "layer_0"
    save_sae(StandardSAE(8, 4, seed=0), folder, "m", 0, training={"key": "k"})
    return folder


# -- artefacts that prove their integrity -----------------------------------------------------------------


def test_a_flipped_byte_in_a_saved_sae_is_refused_with_the_file_and_the_fix(saved_sae):
    flip_byte(saved_sae / "sae_weights.safetensors")
    with pytest.raises(MonosemError, match=r"sae_weights.safetensors is missing or corrupted.*retrain it with notebooks/02_train_sae.ipynb"):
        load_sae(saved_sae)


def test_a_flipped_byte_in_cfg_json_is_refused(saved_sae):
    cfg = saved_sae / "cfg.json"
    cfg.write_text(cfg.read_text().replace('"d_sae": 4', '"d_sae": 5'))
    with pytest.raises(MonosemError, match=r"cfg.json is missing or corrupted"):
        load_sae(saved_sae)


@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_nan_or_inf_weights_are_refused_on_load_and_never_written(tmp_path, saved_sae, poison):
    (saved_sae / "checksums.json").unlink()  # a folder from elsewhere: no checksums, so the values themselves are checked
    w = load_file(saved_sae / "sae_weights.safetensors")
    w["W_dec"][0, 0] = poison
    save_file(w, saved_sae / "sae_weights.safetensors")
    with pytest.raises(MonosemError, match=r"\['W_dec'\] contain NaN or Inf.*retrain"):
        load_sae(saved_sae)
    sae = StandardSAE(8, 4, seed=0)
    with torch.no_grad():
        sae.b_enc[1] = poison
    with pytest.raises(MonosemError, match="NaN or Inf in \\['b_enc'\\].*nothing was written"):
        save_sae(sae, tmp_path / "new", "m", 0)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("dtype", [torch.float16, torch.int32])
def test_weights_of_an_unexpected_dtype_are_refused(saved_sae, dtype):
    (saved_sae / "checksums.json").unlink()
    w = load_file(saved_sae / "sae_weights.safetensors")
    save_file({k: v.to(dtype) for k, v in w.items()}, saved_sae / "sae_weights.safetensors")
    with pytest.raises(MonosemError, match="do not have the dtype 'float32' that cfg.json states"):
        load_sae(saved_sae)


def test_a_topk_cfg_with_k_as_text_is_refused(tmp_path):
    from monosem.sae.topk import TopKSAE

    save_sae(TopKSAE(8, 16, True, 0, 4), tmp_path / "t", "m", 0)
    (tmp_path / "t" / "checksums.json").unlink()
    cfg = json.loads((tmp_path / "t" / "cfg.json").read_text())
    (tmp_path / "t" / "cfg.json").write_text(json.dumps({**cfg, "k": "4"}))
    with pytest.raises(MonosemError, match="a topk cfg.json needs an integer k, got '4'"):
        load_sae(tmp_path / "t")


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory, concepts, bundled):
    spec, model, tok = bundled
    data = tmp_path_factory.mktemp("data")
    df = small_concepts(concepts, 1)
    mp = model_paths(data, spec.used)
    cache = load_or_extract_concepts(mp, spec, df, [0], model_and_tokenizer=(model, tok))
    return spec, mp, df, cache


def test_a_flipped_byte_in_a_cache_file_names_the_file_and_notebook_01(small_cache):
    spec, mp, df, cache = small_cache
    key = cache.key
    target = cache.folder / "tokens_L0.npy"
    original = target.read_bytes()
    try:
        flip_byte(target, 100)
        with pytest.raises(MonosemError, match=r"tokens_L0.npy is missing or corrupted.*rerun notebooks/01_extract_activations.ipynb"):
            open_cache(mp, key)
    finally:
        target.write_bytes(original)


@pytest.mark.parametrize("damage", ["empty checksums", "truncated"])
def test_a_meta_json_without_every_checksum_or_cut_short_is_invalid(small_cache, damage):
    spec, mp, df, cache = small_cache
    meta_path = cache.folder / "meta.json"
    original = meta_path.read_text()
    try:
        if damage == "empty checksums":
            meta_path.write_text(json.dumps({**json.loads(original), "sha256": {}}))
            message = r"lists checksums for \[\] but the folder holds .*every file needs one"
        else:
            meta_path.write_text(original[: len(original) // 2])
            message = r"meta.json is not valid JSON .*rerun notebooks/01_extract_activations.ipynb"
        with pytest.raises(MonosemError, match=message):
            open_cache(mp, cache.key)
    finally:
        meta_path.write_text(original)
    assert open_cache(mp, cache.key).key == concept_key(spec, df, [0])[0]


# -- validation before anything is touched --------------------------------------------------------------


@pytest.mark.parametrize("variable, value, message", [
    ("MONOSEM_SAE_TOKENS", "0", "MONOSEM_SAE_TOKENS.*must be >= 1"),
    ("MONOSEM_SAE_TOKENS", "-5", "MONOSEM_SAE_TOKENS.*must be >= 1"),
    ("MONOSEM_SAE_BATCH", "0", "MONOSEM_SAE_BATCH.*must be >= 1"),
    ("MONOSEM_ALPHA", "2", r"MONOSEM_ALPHA.*must lie in \(0, 1\)"),
    ("MONOSEM_ALPHA", "-1", r"MONOSEM_ALPHA.*must lie in \(0, 1\)"),
    ("MONOSEM_SAE_PRESETS", "nope", "unknown SAE preset.*nope.*reference, l1, topk"),
    ("MONOSEM_LAYERS", "3-1", "runs backwards; write it low-high, e.g. 1-3"),
    ("MONOSEM_DTYPE", "float64", "float64.*float32, float16"),
])
def test_bad_settings_fail_when_the_config_is_built(variable, value, message):
    with pytest.raises(MonosemError, match=message):
        RunConfig.from_env({variable: value})


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_missing_gpu_fails_when_the_config_is_built():
    with pytest.raises(MonosemError, match="MONOSEM_DEVICE.*no CUDA GPU; unset it or use cpu"):
        RunConfig.from_env({"MONOSEM_DEVICE": "cuda"})


def test_a_bad_setting_stops_notebook_02_before_any_sae_is_touched(tmp_path, saved_sae):
    """The notebook itself: MONOSEM_SAE_TOKENS=0 fails in the parameters cell; the SAE folder keeps its bytes."""
    before = {p.name: p.read_bytes() for p in saved_sae.iterdir()}
    env = {**os.environ, "MONOSEM_DATA_DIR": str(tmp_path / "data"), "MONOSEM_SAE_TOKENS": "0"}
    proc = subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", "--output-dir", str(tmp_path / "out"),
                           str(ROOT / "notebooks" / "02_train_sae.ipynb")], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "MONOSEM_SAE_TOKENS (sae_train_tokens) = 0 is invalid" in proc.stderr and "allowed: >= 1" in proc.stderr
    assert not (tmp_path / "data").exists(), "nothing may be written when a setting is bad"
    assert {p.name: p.read_bytes() for p in saved_sae.iterdir()} == before


# -- realistic input mistakes ---------------------------------------------------------------------------


def test_a_sentence_longer_than_the_model_allows_is_named_by_line(tmp_path, bundled, concepts):
    spec, model, tok = bundled
    df = small_concepts(concepts, 1)
    long_sentence = "The colour " + "very " * 600 + "green was everywhere."
    rows = df[["concept", "word", "sentence"]].to_dict(orient="records")
    rows.append({"concept": "colors", "word": "green", "sentence": long_sentence})
    path = tmp_path / "c.csv"
    import pandas as pd

    pd.DataFrame(rows).to_csv(path, index=False)
    long_df = load_concepts(path)
    with pytest.raises(MonosemError, match=rf"longer than the model's limit of 512 tokens: line {len(rows) + 1} \(6\d\d tokens\)"):
        load_or_extract_concepts(model_paths(tmp_path / "data", spec.used), spec, long_df, [0], model_and_tokenizer=(model, tok))


def test_a_10_mb_field_is_named_by_line(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("concept,word,sentence\nnumbers,two,She had two coins.\ncolors,red," + '"' + "x" * 10_000_000 + ' red"\n', encoding="utf-8")
    with pytest.raises(MonosemError, match=r"line 3: field larger than field limit .*one sentence per line"):
        load_concepts(path)


def test_a_csv_saved_by_excel_with_a_bom_is_accepted(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes(b"\xef\xbb\xbfconcept,word,sentence\nnumbers,two,She had two coins.\n")
    df = load_concepts(path)
    assert list(df.columns[:3]) == ["concept", "word", "sentence"] and df.word.tolist() == ["two"]


def test_an_uncased_tokenizer_spells_accented_words_without_a_false_alarm(bundled):
    from monosem.activations import word_token_check

    spec, model, tok = bundled  # all-MiniLM-L6-v2 lowercases and strips accents
    import pandas as pd

    df = pd.DataFrame({"word": ["Café", "naïve"], "sentence": ["We met at the Café today.", "A naïve plan."]})
    df["word_start"] = [df.sentence[0].index("Café"), 2]
    df["word_end"] = df.word_start + df.word.str.len()
    check = word_token_check(tok, df)
    assert check.ok.all(), check
    assert check.decoded.tolist() == ["cafe", "naive"]


def test_a_model_folder_with_only_a_bin_checkpoint_is_refused(tmp_path, gpt2_tiny):
    model, tok = gpt2_tiny
    folder = tmp_path / "pickled"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    for weights in folder.glob("*.safetensors"):  # leave only a (never opened) pickled checkpoint, as old hub folders have
        weights.unlink()
    (folder / "pytorch_model.bin").write_bytes(b"a pickle that must never be loaded")
    with pytest.raises(MonosemError, match="has no .safetensors weights; this project never unpickles .bin checkpoints"):
        load_model(resolve_model(str(folder)))


def test_a_data_folder_that_is_a_file_says_which_variable_to_set(tmp_path):
    blocker = tmp_path / "data"
    blocker.write_text("not a folder")
    with pytest.raises(MonosemError, match=r"cannot write in .*data.*set MONOSEM_DATA_DIR to a folder you can write"):
        ensure_writable_dir(blocker)
    with pytest.raises(MonosemError, match="MONOSEM_DATA_DIR"):
        model_paths(blocker, "m")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into a read-only folder")
def test_a_read_only_data_folder_says_which_variable_to_set(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(MonosemError, match="cannot write in"):
            ensure_writable_dir(folder)
    finally:
        folder.chmod(0o755)


# -- concurrent runs --------------------------------------------------------------------------------------


def test_a_temp_folder_is_stale_only_when_its_writer_is_gone(tmp_path):
    with atomic_dir(tmp_path / "target") as mine:
        assert not is_stale_temp(mine), "this process is writing it"
        clean_stale_temp(tmp_path)
        assert mine.exists()
        dead = tmp_path / mine.name.replace(f".tmp-{os.getpid()}h", ".tmp-999999999h")
        dead.mkdir()
        legacy = tmp_path / ".target.tmp-abc"
        legacy.mkdir()
        old = tmp_path / mine.name.replace(".tmp-", ".old-")
        old.mkdir()
        os.utime(old, (0, 0))
        clean_stale_temp(tmp_path)
        assert mine.exists() and not dead.exists() and not legacy.exists() and not old.exists()
    assert (tmp_path / "target").is_dir()


CHILD = textwrap.dedent("""
    import hashlib, sys
    from monosem.config import RunConfig
    from monosem.run import open_run
    from monosem.sae.train import SAEJob, train_or_load_saes, training_plan
    from monosem.store import ActivationStore
    from monosem.testing import run_notebook01

    data, csv = sys.argv[1], sys.argv[2]
    cfg = RunConfig.from_env({}, model="bundled", layers=(0,), data_dir=data, concepts=csv, background="pydoc", background_tokens=1500, n_eval_texts=2,
                             hf_hub_offline=True, sae_presets=("reference",), sae_train_tokens=2560, sae_batch=64)
    made = run_notebook01(cfg)
    run = open_run(cfg)
    plan = training_plan(cfg.sae_train_tokens, cfg.sae_batch, cfg.sae_buffer_tokens, 384, "cpu")
    store = ActivationStore(made["model"], made["tokenizer"], run.corpus.train_texts(), run.layers, seed=cfg.seed)
    train_or_load_saes(run.paths, run.spec, [SAEJob("reference", 0)], plan, store, run.caches, run.heldout, run.corpus_title, cfg.seed, progress=False)
    print(hashlib.sha256((run.paths.sae(0) / "sae_weights.safetensors").read_bytes()).hexdigest())
""")


def test_two_runs_at_once_on_one_data_folder_both_finish_with_identical_results(tmp_path, concepts):
    csv = tmp_path / "c.csv"
    small_concepts(concepts, 1)[["concept", "word", "sentence"]].to_csv(csv, index=False)
    data = tmp_path / "data"
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(data), str(csv)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    digests = [out.strip().splitlines()[-1] for out, _ in outs]
    assert digests[0] == digests[1]
    spec = resolve_model("bundled", True)
    mp = model_paths(data, spec.used)
    load_sae(mp.sae(0))  # its checksums verify
    assert sha256_file(mp.sae(0) / "sae_weights.safetensors") == digests[0]
    leftovers = [p for folder in (mp.activations, mp.sae(0).parent) for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    assert not leftovers


def test_float16_storage_runs_all_four_notebooks(tmp_path):
    """A setting notebook 01 accepts works in 02-04: they open its caches through the run manifest."""
    env = {**os.environ, "MONOSEM_DATA_DIR": str(tmp_path / "data"), "MONOSEM_DTYPE": "float16", "MONOSEM_LAYERS": "1",
           "MONOSEM_SAE_PRESETS": "reference", "MONOSEM_SAE_TOKENS": "12800", "MONOSEM_SAE_BATCH": "256", "MONOSEM_BACKGROUND_TOKENS": "2000", "MONOSEM_PERMUTATIONS": "50",
           "MONOSEM_BOOTSTRAP": "50", "MONOSEM_SPLITS": "10"}
    for name in ("01_extract_activations", "02_train_sae", "03_selectivity", "04_word_level_exploration"):
        proc = subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", "--output-dir", str(tmp_path / "out"),
                               str(ROOT / "notebooks" / f"{name}.ipynb")], env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{name} failed with MONOSEM_DTYPE=float16:\n{proc.stderr[-3000:]}"
    manifest = json.loads(next((tmp_path / "data" / "runs").glob("*.json")).read_text())
    assert manifest["dtype"] == "float16"
    summary = json.loads(next((tmp_path / "data" / "results").glob("*/summary.json")).read_text())
    assert summary["layers"] == [1] and summary["sae_preset"] == "reference"
