"""RunConfig: defaults, parsing of MONOSEM_* variables, overrides, validation messages, and the README's settings table."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from monosem.config import DEFAULT_PRESETS, PRESET_NAMES, MonosemError, RunConfig, parse_layers, settings_table_markdown

ROOT = Path(__file__).resolve().parents[1]
FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}


def env_of(name: str) -> str:
    return FIELDS[name].metadata["env"]


# -- defaults and parsing ---------------------------------------------------------------------------


def test_defaults_without_environment():
    cfg = RunConfig.from_env(environ={})
    assert cfg == RunConfig()
    assert cfg.model is None and cfg.model_asked == "gpt2-medium"
    assert cfg.layers == (0, 1, 2, 3)
    assert cfg.sae_presets == DEFAULT_PRESETS and cfg.sae_preset == "auto" and cfg.analysed() == "topk"  # fixed in advance, not by the outcome
    assert set(DEFAULT_PRESETS) <= set(PRESET_NAMES)
    assert (cfg.sae_train_tokens, cfg.sae_batch, cfg.sae_buffer_tokens, cfg.seed) == (None, None, 32768, 0)  # None: by model size and device
    assert cfg.background == "auto"
    assert (cfg.threshold, cfg.alpha, cfg.pooling, cfg.dtype) == (0.6, 0.05, "mean", "float32")
    assert cfg.device is None and cfg.save_figures is False and cfg.hf_hub_offline is False
    for f in dataclasses.fields(RunConfig):  # every default passes its own validator unchanged
        assert getattr(cfg, f.name) == f.default, f.name


def test_from_env_ignores_the_process_environment_when_given_one(monkeypatch):
    monkeypatch.setenv("MONOSEM_SAE_TOKENS", "7000")
    assert RunConfig.from_env(environ={}).sae_train_tokens is None
    assert RunConfig.from_env().sae_train_tokens == 7000  # environ=None reads os.environ


@pytest.mark.parametrize(("text", "layers"), [("0-3", (0, 1, 2, 3)), ("0,2", (0, 2)), ("2, 0 ,2", (0, 2)), ("5", (5,)), (" 1 - 2 ", (1, 2))])
def test_layers_from_env(text, layers):
    assert RunConfig.from_env(environ={"MONOSEM_LAYERS": text}).layers == layers


def test_layers_as_override_tuple_or_list():
    assert RunConfig.from_env(environ={}, layers=(3, 1)).layers == (1, 3)
    assert RunConfig.from_env(environ={}, layers=[2]).layers == (2,)
    assert parse_layers("0-3") == (0, 1, 2, 3)


@pytest.mark.parametrize(("text", "value"), [("1", True), ("true", True), ("YES", True), ("on", True), ("0", False), ("false", False), ("no", False), ("off", False)])
def test_bools_from_env(text, value):
    cfg = RunConfig.from_env(environ={"MONOSEM_SAVE_FIGURES": text, "HF_HUB_OFFLINE": text})
    assert cfg.save_figures is value and cfg.hf_hub_offline is value


def test_bad_bool_from_env():
    with pytest.raises(MonosemError, match="MONOSEM_SAVE_FIGURES") as err:
        RunConfig.from_env(environ={"MONOSEM_SAVE_FIGURES": "maybe"})
    assert "0 or 1" in str(err.value) or "1/0" in str(err.value)


def test_numbers_text_and_paths_from_env(tmp_path):
    cfg = RunConfig.from_env(environ={
        "MONOSEM_SAE_TOKENS": "12000", "MONOSEM_SAE_BATCH": "64", "MONOSEM_SAE_EXPANSION": "2.5", "MONOSEM_ALPHA": "0.1",
        "MONOSEM_THRESHOLD": "1", "MONOSEM_SEED": "42", "MONOSEM_MODEL": "bundled", "MONOSEM_DATA_DIR": str(tmp_path),
        "MONOSEM_CONCEPTS": str(tmp_path / "c.csv"), "MONOSEM_DTYPE": "float16", "MONOSEM_POOLING": "last", "MONOSEM_DEVICE": "cpu",
        "MONOSEM_BACKGROUND": "hf:wikitext"})
    assert (cfg.sae_train_tokens, cfg.sae_batch, cfg.sae_expansion, cfg.alpha, cfg.threshold, cfg.seed) == (12000, 64, 2.5, 0.1, 1.0, 42)
    assert cfg.model == "bundled" and cfg.model_asked == "bundled"
    assert cfg.data_dir == tmp_path and cfg.data_path == tmp_path.resolve()
    assert cfg.concepts_path == tmp_path / "c.csv"
    assert (cfg.dtype, cfg.pooling, cfg.device, cfg.background) == ("float16", "last", "cpu", "hf:wikitext")


def test_presets_list_from_env():
    cfg = RunConfig.from_env(environ={"MONOSEM_SAE_PRESETS": " topk, l1 ,topk", "MONOSEM_SAE_PRESET": "l1"})
    assert cfg.sae_presets == ("topk", "l1") and cfg.sae_preset == "l1"


def test_empty_variables_mean_default():
    env = {f.metadata["env"]: "" for f in dataclasses.fields(RunConfig)}
    assert RunConfig.from_env(environ=env) == RunConfig()
    assert RunConfig.from_env(environ={"MONOSEM_LAYERS": ""}).layers == (0, 1, 2, 3)


def test_overrides_beat_environment():
    env = {"MONOSEM_SAE_TOKENS": "5", "MONOSEM_LAYERS": "0-5", "MONOSEM_ALPHA": "0.2"}
    cfg = RunConfig.from_env(environ=env, sae_train_tokens=9, layers=(1,))
    assert (cfg.sae_train_tokens, cfg.layers, cfg.alpha) == (9, (1,), 0.2)


def test_override_wins_over_an_invalid_environment_value():
    assert RunConfig.from_env(environ={"MONOSEM_SAE_TOKENS": "abc"}, sae_train_tokens=3).sae_train_tokens == 3


def test_the_retired_step_count_variable_says_what_replaced_it():
    with pytest.raises(MonosemError, match="MONOSEM_SAE_STEPS is no longer read.*MONOSEM_SAE_TOKENS"):
        RunConfig.from_env(environ={"MONOSEM_SAE_STEPS": "600"})


def test_unknown_override_is_an_error():
    with pytest.raises(MonosemError, match="sae_stepz"):
        RunConfig.from_env(environ={}, sae_stepz=3)


def test_every_field_has_metadata_and_a_unique_variable():
    envs = []
    for f in dataclasses.fields(RunConfig):
        for key in ("env", "doc", "parse", "check", "allowed"):
            assert key in f.metadata, f"{f.name} lacks {key}"
        assert callable(f.metadata["parse"]) and callable(f.metadata["check"]), f.name
        assert f.metadata["doc"].strip(), f"{f.name} has an empty doc"
        assert re.fullmatch(r"(MONOSEM_[A-Z0-9_]+|HF_HUB_OFFLINE)", f.metadata["env"]), f.name
        envs.append(f.metadata["env"])
    duplicates = sorted({e for e in envs if envs.count(e) > 1})
    assert not duplicates, f"environment variables used by several fields: {duplicates}"


# -- validation: each failure is a MonosemError naming the variable and what is allowed ---------------

BAD = [
    # (environment, variable the message must name, fragments of the allowed values, one of which must appear)
    ({"MONOSEM_SAE_TOKENS": "0"}, "MONOSEM_SAE_TOKENS", (">= 1", "1..")),
    ({"MONOSEM_SAE_TOKENS": "-5"}, "MONOSEM_SAE_TOKENS", (">= 1", "1..")),
    ({"MONOSEM_SAE_TOKENS": "abc"}, "MONOSEM_SAE_TOKENS", (">= 1", "1..")),
    ({"MONOSEM_SAE_BUFFER": "0"}, "MONOSEM_SAE_BUFFER", (">= 1", "1..")),
    ({"MONOSEM_FIDELITY_TEXTS": "0"}, "MONOSEM_FIDELITY_TEXTS", (">= 1", "1..")),
    ({"MONOSEM_SAE_BATCH": "0"}, "MONOSEM_SAE_BATCH", (">= 1", "1..")),
    ({"MONOSEM_ALPHA": "2"}, "MONOSEM_ALPHA", ("(0, 1)",)),
    ({"MONOSEM_ALPHA": "-1"}, "MONOSEM_ALPHA", ("(0, 1)",)),
    ({"MONOSEM_ALPHA": "0"}, "MONOSEM_ALPHA", ("(0, 1)",)),
    ({"MONOSEM_THRESHOLD": "1.5"}, "MONOSEM_THRESHOLD", ("[0, 1]",)),
    ({"MONOSEM_SAE_PRESETS": "nope"}, "MONOSEM_SAE_PRESETS", ("reference, l1, topk",)),
    ({"MONOSEM_LAYERS": "3-1"}, "MONOSEM_LAYERS", ("0-3", "1-3")),
    ({"MONOSEM_LAYERS": "a,b"}, "MONOSEM_LAYERS", ("0-3",)),
    ({"MONOSEM_DTYPE": "float64"}, "MONOSEM_DTYPE", ("float32, float16",)),
    ({"MONOSEM_POOLING": "max"}, "MONOSEM_POOLING", ("mean, last, sentence",)),
    ({"MONOSEM_DEVICE": "tpu"}, "MONOSEM_DEVICE", ("cpu",)),
    ({"MONOSEM_SAE_PRESETS": "l1,topk", "MONOSEM_SAE_PRESET": "reference"}, "MONOSEM_SAE_PRESET", ("l1,topk", "l1, topk")),  # not among them
    ({"MONOSEM_SAE_PRESETS": "l1", "MONOSEM_SAE_PRESET": "topk"}, "MONOSEM_SAE_PRESET", ("l1",)),
]


@pytest.mark.parametrize(("env", "variable", "allowed"), BAD, ids=[",".join(f"{k}={v}" for k, v in e.items()) for e, _, _ in BAD])
def test_invalid_values_name_the_variable_and_the_allowed_values(env, variable, allowed):
    with pytest.raises(MonosemError) as err:
        RunConfig.from_env(environ=env)
    msg = str(err.value)
    assert re.search(rf"\b{variable}\b", msg), f"the message does not name {variable}: {msg}"
    assert any(a in msg for a in allowed), f"the message does not say what is allowed ({allowed}): {msg}"


def test_batch_error_names_batch_not_steps():
    with pytest.raises(MonosemError) as err:
        RunConfig.from_env(environ={"MONOSEM_SAE_BATCH": "0"})
    assert "MONOSEM_SAE_BATCH" in str(err.value) and "MONOSEM_SAE_TOKENS" not in str(err.value)


def test_backwards_layer_range_is_not_silently_empty():
    with pytest.raises(MonosemError, match="backwards"):
        RunConfig.from_env(environ={"MONOSEM_LAYERS": "3-1"})


def test_cuda_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(MonosemError) as err:
        RunConfig.from_env(environ={"MONOSEM_DEVICE": "cuda"})
    assert "MONOSEM_DEVICE" in str(err.value) and "cpu" in str(err.value)


def test_invalid_overrides_are_rejected_too():
    with pytest.raises(MonosemError, match="MONOSEM_SAE_TOKENS"):
        RunConfig.from_env(environ={}, sae_train_tokens=0)
    with pytest.raises(MonosemError, match="MONOSEM_LAYERS"):
        RunConfig.from_env(environ={}, layers=())
    with pytest.raises(MonosemError, match="MONOSEM_SAE_TOKENS"):
        RunConfig.from_env(environ={}, sae_train_tokens=True)  # a bool is not a token count


def test_replace_validates():
    cfg = RunConfig.from_env(environ={})
    assert cfg.replace(alpha=0.01).alpha == 0.01
    assert cfg.alpha == 0.05  # frozen: replace makes a copy
    with pytest.raises(MonosemError, match="MONOSEM_ALPHA"):
        cfg.replace(alpha=3)
    with pytest.raises(MonosemError, match="MONOSEM_SAE_PRESET"):
        cfg.replace(sae_preset="reference", sae_presets=("l1",))
    assert cfg.replace(sae_presets=("l1",)).sae_preset == "auto"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.alpha = 0.2  # type: ignore[misc]


def test_settings_rows_and_unknown_names():
    rows = RunConfig.from_env(environ={}, layers=(0, 2)).settings("layers", "alpha")
    assert rows == [{"setting": "layers", "value": "0,2", "variable": "MONOSEM_LAYERS", "meaning": FIELDS["layers"].metadata["doc"]},
                    {"setting": "alpha", "value": "0.05", "variable": "MONOSEM_ALPHA", "meaning": FIELDS["alpha"].metadata["doc"]}]
    with pytest.raises(MonosemError, match="nope"):
        RunConfig().settings("nope")


# -- the README's settings table is generated from the dataclass -------------------------------------


def test_settings_table_lists_every_field():
    table = settings_table_markdown()
    for f in dataclasses.fields(RunConfig):
        assert f"`{f.metadata['env']}` | `{f.name}`" in table, f.name
    assert len(table.splitlines()) == 2 + len(FIELDS)


def test_readme_block_equals_settings_table():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- settings:start -->\n(.*?)\n?<!-- settings:end -->", text, re.S)
    assert m, "README.md has no <!-- settings:start --> ... <!-- settings:end --> block"
    assert m.group(1).strip("\n") == settings_table_markdown(), "README settings table is out of date: run `python scripts/update_readme.py`"


def test_update_readme_check_passes():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "update_readme.py"), "--check"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


# one invalid environment value per validated field (paths accept any text)
INVALID = {"model": "  ", "layers": "x", "batch_size": "0", "device": "tpu", "dtype": "int8", "background": "foo", "background_tokens": "0",
           "n_eval_texts": "0", "n_fidelity_texts": "0", "sae_presets": "nope", "sae_train_tokens": "0", "sae_batch": "0", "sae_workers": "0", "sae_buffer_tokens": "0", "sae_expansion": "0", "sae_k": "0", "seed": "-1",
           "threshold": "2", "alpha": "1", "pooling": "max", "sae_preset": "nope", "n_permutations": "0", "n_bootstrap": "0", "n_splits": "0",
           "sae_source": "  ", "top_k": "0", "save_figures": "maybe", "hf_hub_offline": "maybe", "min_replication": "0", "random_control": "maybe",
           "control_steps": "0", "massive_factor": "0.5", "n_seeds": "0", "n_bootstrap_paired": "0", "n_probe_draws": "0", "n_natural_texts": "2",
           "n_readout_texts": "0", "n_readout_features": "0"}


def test_the_sweep_covers_every_validated_field():
    assert set(FIELDS) - set(INVALID) == {"concepts", "replication_words", "data_dir", "root"}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_every_field_rejects_an_invalid_value_naming_its_variable(name):
    variable, bad = env_of(name), INVALID[name]
    with pytest.raises(MonosemError) as err:
        RunConfig.from_env(environ={variable: bad})
    msg = str(err.value)
    assert re.search(rf"(?<![A-Z_]){variable}\b", msg), f"the message does not name {variable}: {msg}"
    assert bad.strip() in msg or repr(bad) in msg, f"the message does not show the rejected value {bad!r}: {msg}"
