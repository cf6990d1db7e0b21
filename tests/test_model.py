import pytest

import helpers as h


def test_default_model_falls_back_with_a_reason(monkeypatch):
    monkeypatch.delenv("MONOSEM_MODEL", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = h.resolve_model(None)
    if not spec.is_fallback:
        pytest.skip("gpt2-medium is in the local Hugging Face cache: no fallback to test")
    assert spec.asked == "gpt2-medium" and spec.used == h.FALLBACK_NAME
    assert "not in the local cache" in spec.fallback_reason and "not reachable" in spec.fallback_reason
    banner = h.model_banner(spec)
    assert "gpt2-medium" in banner and h.FALLBACK_NAME in banner and "MODEL=" in banner
    assert spec.slug == "sentence-transformers--all-MiniLM-L6-v2"


def test_explicit_unknown_model_is_an_error_not_a_fallback(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(h.MonosemError, match="could not be loaded.*MODEL="):
        h.resolve_model("no-such-org/no-such-model")
    with pytest.raises(h.MonosemError, match="does not exist"):
        h.resolve_model("./no/such/folder")


def test_local_folder_model(tmp_path, gpt2_tiny):
    model, tok = gpt2_tiny
    model.save_pretrained(tmp_path / "tiny-gpt2")
    tok.save_pretrained(tmp_path / "tiny-gpt2")
    spec = h.resolve_model(str(tmp_path / "tiny-gpt2"))
    assert spec.used == "tiny-gpt2" and spec.revision.startswith("sha256:") and not spec.is_fallback
    m2, t2 = h.load_model(spec)
    assert len(h.get_blocks(m2)) == 6 and t2(" green")["input_ids"] == [4077]


def test_slugs_and_paths_cannot_escape_data(tmp_path):
    assert h.slugify("../../etc/passwd") == "etc--passwd"
    assert ".." not in h.slugify("a/../b")
    with pytest.raises(h.MonosemError, match="escape"):
        h.safe_child(tmp_path, "..", "x")
    with pytest.raises(h.MonosemError):
        h.slugify("///")


def test_layers_outside_the_model_are_rejected():
    with pytest.raises(h.MonosemError, match=r"valid: 0\.\.5"):
        h.check_layers([0, 6], 6, "m")
    assert h.check_layers([3, 1, 1], 6) == [1, 3]
    assert h.parse_layers("0-3") == [0, 1, 2, 3] and h.parse_layers("0,2") == [0, 2]
    with pytest.raises(ValueError):
        h.parse_layers("a,b")


def test_threshold_outside_unit_interval():
    for bad in (-0.1, 1.5, "0.6", float("nan")):
        with pytest.raises(h.MonosemError, match=r"\[0, 1\]"):
            h.check_threshold(bad)
