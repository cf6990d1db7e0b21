import pytest

from monosem.config import MonosemError, RunConfig, parse_layers
from monosem.model import FALLBACK_NAME, check_layers, get_blocks, load_model, model_banner, resolve_model


def test_default_model_falls_back_with_a_reason():
    cfg = RunConfig.from_env({"HF_HUB_OFFLINE": "1"})  # MONOSEM_MODEL unset: the default model, not an explicit one
    assert cfg.model is None and cfg.hf_hub_offline
    spec = resolve_model(cfg.model, cfg.hf_hub_offline)
    if not spec.is_fallback:
        pytest.skip("gpt2-medium is in the local Hugging Face cache: no fallback to test")
    assert spec.asked == "gpt2-medium" and spec.used == FALLBACK_NAME
    assert "not in the local cache" in spec.fallback_reason and "not reachable" in spec.fallback_reason
    banner = model_banner(spec)
    assert "gpt2-medium" in banner and FALLBACK_NAME in banner and "MODEL=" in banner
    assert spec.slug == "sentence-transformers--all-MiniLM-L6-v2"


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


def test_layers_outside_the_model_are_rejected():
    with pytest.raises(MonosemError, match=r"valid: 0\.\.5"):
        check_layers([0, 6], 6, "m")
    assert check_layers([3, 1, 1], 6) == [1, 3]
    assert parse_layers("0-3") == (0, 1, 2, 3) and parse_layers("0,2") == (0, 2)
    with pytest.raises(ValueError):
        parse_layers("a,b")
