"""The run manifest (monosem/run.py): notebook 01 records what it made, ``open_run`` reopens it or names notebook 01 to rerun."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monosem.config import MonosemError, RunConfig
from monosem.dataset import load_concepts
from monosem.model import load_model, resolve_model
from monosem.paths import manifest_path, model_paths
from monosem.run import open_run
from monosem.testing import run_notebook01, small_concepts

ROOT = Path(__file__).resolve().parents[1]
NB01 = "01_extract_activations"


@pytest.fixture(scope="module")
def model():
    spec = resolve_model("bundled")
    return spec, *load_model(spec)


def extract(cfg: RunConfig, model) -> dict:
    """What notebook 01 does, without the notebook: extract the caches for ``cfg`` and write the manifest."""
    spec, net, tok = model
    return run_notebook01(cfg, (net, tok))


def small_csv(folder: Path) -> Path:
    df = small_concepts(load_concepts(ROOT / "data" / "concepts.csv"), 1)
    path = folder / "concepts.csv"
    folder.mkdir(parents=True, exist_ok=True)
    df[["concept", "word", "sentence"]].to_csv(path, index=False)
    return path


def make_cfg(data_dir: Path, csv: Path, **changes) -> RunConfig:
    return RunConfig.from_env(environ={}, model="bundled", layers=(0,), data_dir=data_dir, concepts=csv, background_tokens=400, n_eval_texts=2,
                              hf_hub_offline=True, background="pydoc", **changes)


@pytest.fixture(scope="module")
def built(tmp_path_factory, model):
    root = tmp_path_factory.mktemp("run")
    cfg = make_cfg(root / "data", small_csv(root))
    return cfg, extract(cfg, model)


def test_open_run_reopens_what_notebook_01_made(built):
    cfg, made = built
    assert made["manifest"] == manifest_path(cfg.data_path, "bundled") and made["manifest"].is_file()
    run = open_run(cfg)
    assert run.spec == made["spec"]
    assert run.layers == [0]
    assert run.concepts.key == made["concepts"].key and run.background.key == made["background"].key
    assert run.concepts.folder == made["concepts"].folder and run.background.folder == made["background"].folder
    assert [c.key for c in run.caches] == [made["background"].key], "SAEs initialise from the corpus sample; concept sentences are not training data"
    assert run.heldout.key == made["heldout"].key and run.corpus.key == made["corpus"].key and run.corpus_title == "Python docs (pydoc)"
    assert run.heldout.texts() == run.corpus.heldout_texts() and len(run.corpus.heldout_texts()) == 2
    assert run.fidelity_texts() == run.corpus.heldout_texts()[:32]  # unset: 32 texts for a 6-block model
    assert open_run(cfg.replace(n_fidelity_texts=1)).fidelity_texts() == run.corpus.heldout_texts()[:1]
    assert run.background.texts() == made["sample"] and set(made["sample"]) <= set(run.corpus.train_texts())
    assert not set(run.corpus.heldout_texts()) & set(run.corpus.train_texts()), "held-out texts must not be in the training corpus"
    assert run.corpus_tokens > run.background.n_tokens
    assert run.df.equals(made["df"])
    assert run.paths == model_paths(cfg.data_path, made["spec"].used)
    assert run.background.tokens(0).shape == made["background"].tokens(0).shape


@pytest.mark.parametrize(("change", "names"), [
    ({"layers": (0, 1)}, "MONOSEM_LAYERS"),
    ({"dtype": "float16"}, "MONOSEM_DTYPE"),
    ({"background_tokens": 500}, "MONOSEM_BACKGROUND_TOKENS"),
    ({"n_eval_texts": 3}, "MONOSEM_EVAL_TEXTS"),
    ({"background": "wordnet"}, "MONOSEM_BACKGROUND"),
])
def test_settings_mismatch_names_notebook_01(built, change, names):
    cfg, _ = built
    with pytest.raises(MonosemError) as err:
        open_run(cfg.replace(**change))
    assert NB01 in str(err.value) and names in str(err.value), str(err.value)


def test_changed_concepts_csv_names_notebook_01(built, tmp_path):
    cfg, made = built
    changed = tmp_path / "changed.csv"
    df = made["df"][["concept", "word", "sentence"]].copy()
    df.loc[0, "sentence"] = df.loc[0, "sentence"] + " Indeed."
    df.to_csv(changed, index=False)
    with pytest.raises(MonosemError) as err:
        open_run(cfg.replace(concepts=changed))
    assert NB01 in str(err.value) and "changed" in str(err.value), str(err.value)


def test_missing_manifest_says_run_notebook_01_first(built, tmp_path):
    cfg, _ = built
    with pytest.raises(MonosemError) as err:
        open_run(cfg.replace(data_dir=tmp_path / "empty"))
    assert NB01 in str(err.value) and "first" in str(err.value), str(err.value)


def _with_manifest(cfg: RunConfig, data_dir: Path, text: str) -> RunConfig:
    other = cfg.replace(data_dir=data_dir)
    path = manifest_path(other.data_path, other.model_asked)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return other


@pytest.mark.parametrize("text", ["{not json", "", "[1, 2]", '{"layers": [0]}', '"a string"'], ids=["broken", "empty", "list", "missing-keys", "string"])
def test_malformed_manifest_is_a_clear_error(built, tmp_path, text):
    cfg, _ = built
    other = _with_manifest(cfg, tmp_path / "data", text)
    with pytest.raises(MonosemError) as err:  # not a JSONDecodeError / TypeError
        open_run(other)
    assert NB01 in str(err.value), str(err.value)


def test_other_code_version_names_notebook_01(built, tmp_path):
    cfg, made = built
    raw = json.loads(made["manifest"].read_text(encoding="utf-8"))
    other = _with_manifest(cfg, tmp_path / "data", json.dumps({**raw, "code_version": "0"}))
    with pytest.raises(MonosemError) as err:
        open_run(other)
    assert NB01 in str(err.value) and "code version" in str(err.value), str(err.value)


def test_float16_corpus_opens_in_later_notebooks(tmp_path, model):
    cfg = make_cfg(tmp_path / "data", small_csv(tmp_path), dtype="float16")
    made = extract(cfg, model)
    run = open_run(cfg)  # what notebooks 02-04 do with the same settings
    assert run.background.key == made["background"].key
    assert run.background.meta["key_inputs"]["dtype"] == "float16"
    assert str(run.background.token_array(0).dtype) == "float16"
    assert run.background.tokens(0).dtype.is_floating_point and run.background.tokens(0).shape[0] == run.background.n_tokens
    with pytest.raises(MonosemError, match=NB01):
        open_run(cfg.replace(dtype="float32"))


def test_missing_or_corrupted_cache_names_notebook_01(tmp_path, model):
    import shutil

    cfg = make_cfg(tmp_path / "data", small_csv(tmp_path))
    made = extract(cfg, model)
    tokens = made["background"].folder / "tokens_L0.npy"
    data = tokens.read_bytes()
    tokens.write_bytes(data[:-8] + bytes(b ^ 0xFF for b in data[-8:]))  # same size, other bytes
    with pytest.raises(MonosemError) as err:
        open_run(cfg)
    assert NB01 in str(err.value) and "tokens_L0.npy" in str(err.value), str(err.value)
    shutil.rmtree(made["concepts"].folder)
    with pytest.raises(MonosemError) as err:
        open_run(cfg)
    assert NB01 in str(err.value) and made["concepts"].key in str(err.value), str(err.value)
