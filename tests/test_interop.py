"""SAEs made by SAELens itself are analysed by notebooks 03 and 04; feature dashboards; JSON export."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT

import helpers as h

sae_lens = pytest.importorskip("sae_lens", reason="sae-lens is not installed (optional extra: pip install -e '.[saelens]')")


def saelens_sae(arch: str, d_in: int, d_sae: int, hook: str, seed: int = 0):
    """An SAE built and initialised by SAELens itself."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig

    torch.manual_seed(seed)
    meta = {"model_name": "all-MiniLM-L6-v2", "hook_name": hook}
    if arch == "standard":
        sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae, apply_b_dec_to_input=True))
    elif arch == "topk":
        sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=8))
    else:
        sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae))
        with torch.no_grad():
            sae.threshold.uniform_(0.0, 0.05)
    for k, v in meta.items():
        setattr(sae.cfg.metadata, k, v)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
    return sae


@pytest.mark.parametrize("arch", ["standard", "topk", "jumprelu"])
def test_folders_written_by_saelens_load_with_identical_encodings(tmp_path, arch):
    theirs = saelens_sae(arch, 16, 32, "blocks.1.hook_resid_post")
    theirs.save_model(str(tmp_path / arch))
    ours, cfg = h.load_sae(tmp_path / arch)
    assert ours.architecture == arch and h.hook_layer(cfg) == 1
    x = torch.randn(50, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(x), theirs.encode(x), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(ours.decode(ours.encode(x)), theirs.decode(theirs.encode(x)), atol=1e-6, rtol=1e-6)
    converted, _ = h.sae_from_saelens(theirs)  # the path a pretrained release takes
    torch.testing.assert_close(converted.encode(x), ours.encode(x))


def test_import_checks_width_and_layer(tmp_path, data_dir):
    spec = h.resolve_model("bundled")
    saelens_sae("standard", 384, 64, "blocks.2.hook_resid_post").save_model(str(tmp_path / "a"))
    saelens_sae("topk", 384, 64, "blocks.4.hook_resid_pre").save_model(str(tmp_path / "b"))  # = after block 3
    assert h.import_saes(spec, str(tmp_path), 384, 6) == [2, 3]
    assert h.load_sae(h.sae_folder(spec, 3, "external"))[0].architecture == "topk"
    saelens_sae("standard", 768, 64, "blocks.2.hook_resid_post").save_model(str(tmp_path / "wide"))
    with pytest.raises(h.MonosemError, match="d_in 768 but .* has d_model 384"):
        h.import_saes(spec, str(tmp_path / "wide"), 384, 6)
    saelens_sae("standard", 384, 64, "blocks.9.hook_resid_post").save_model(str(tmp_path / "deep"))
    with pytest.raises(h.MonosemError, match="layer 9, outside"):
        h.import_saes(spec, str(tmp_path / "deep"), 384, 6)
    saelens_sae("standard", 384, 64, "blocks.2.hook_mlp_out").save_model(str(tmp_path / "mlp"))
    with pytest.raises(h.MonosemError, match="not a residual-stream hook"):
        h.import_saes(spec, str(tmp_path / "mlp"), 384, 6)
    (tmp_path / "empty").mkdir()
    with pytest.raises(h.MonosemError, match="holds no SAE"):
        h.import_saes(spec, str(tmp_path / "empty"), 384, 6)


def run_notebook(name, env, out_dir):
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", "--output-dir", str(out_dir),
                    str(ROOT / "notebooks" / f"{name}.ipynb")], env=env, check=True, capture_output=True, timeout=900)
    return json.loads((out_dir / f"{name}.ipynb").read_text())


def test_notebooks_03_and_04_analyse_a_saelens_folder(tmp_path):
    env = {**os.environ, "MONOSEM_DATA_DIR": str(tmp_path / "data"), "MONOSEM_LAYERS": "1,2", "MONOSEM_PERMUTATIONS": "100",
           "MONOSEM_BOOTSTRAP": "100", "MONOSEM_BACKGROUND_TOKENS": "3000"}
    run_notebook("01_extract_activations", env, tmp_path / "out")
    source = tmp_path / "from_saelens"
    saelens_sae("jumprelu", 384, 96, "blocks.1.hook_resid_post", seed=1).save_model(str(source / "l1"))
    saelens_sae("topk", 384, 96, "blocks.2.hook_resid_post", seed=2).save_model(str(source / "l2"))
    env["MONOSEM_SAE_SOURCE"] = str(source)
    run_notebook("03_selectivity", env, tmp_path / "out")
    nb4 = run_notebook("04_word_level_exploration", env, tmp_path / "out")
    results = tmp_path / "data" / "results" / "sentence-transformers--all-MiniLM-L6-v2"
    summary = json.loads((results / "summary.json").read_text())
    assert summary["sae_preset"] == "external" and summary["layers"] == [1, 2]
    assert set(summary["baselines"]["1"]) >= {"SAE (external)", "residual ±", "MLP neurons", "untrained SAE (external)"}
    assert {p.name for p in results.iterdir()} >= {"selectivity_layer_1.csv", "selectivity_layer_2.csv"}
    exported = list((results / "features").glob("layer_2_feature_*.json"))
    assert exported and "top_contexts" in json.loads(exported[0].read_text())
    assert any("exported" in "".join(o.get("text", "")) for c in nb4["cells"] for o in c.get("outputs", []))


def test_dashboard_data_html_escaping_and_export(bundled, tmp_path, data_dir):
    spec, model, tok = bundled

    df = h.load_concepts()
    df = df[df.word.isin(["green", "red", "seven", "happy", "running", "dog"])].reset_index(drop=True)
    cache = h.load_or_extract(spec, df, [1], model_and_tokenizer=(model, tok))
    texts = ["Use <script>alert(1)</script> & see.", "Plain text about green paint and red doors."]
    bg = h.load_or_extract(spec, None, [1], model_and_tokenizer=(model, tok), texts=texts)
    sae, _, _ = h.train_sae(cache.tokens(1), "topk", steps=30, batch_size=32, progress=False, expansion=1, k=16)
    ex_acts = h.encode_all(sae, cache.word(1)).numpy()
    table = h.selectivity_table(ex_acts, df)
    feature = int(np.argmax(ex_acts.max(0)))
    sources = {1: [("concept sentences", cache, df.sentence.tolist()), ("background", bg, texts)]}
    boards = h.build_dashboards("m", {1: [feature]}, {1: sae}, sources, tok, df, {1: ex_acts}, {1: table})
    d = boards[1][feature]
    values = h.feature_token_acts(sae, [cache.token_array(1), bg.token_array(1)], [feature])[:, 0]
    full = h.encode_all(sae, torch.cat([cache.tokens(1), bg.tokens(1)]))[:, feature].numpy()
    np.testing.assert_allclose(values, full, atol=1e-5)
    assert d["density"] == pytest.approx((full > 0).mean()) and sum(d["histogram"]["counts"]) == (full > 0).sum()
    assert d["top_contexts"][0]["max_value"] == pytest.approx(full.max(), rel=1e-5)
    assert set(d["category_means"]) == {"numbers", "emotions", "actions", "colors", "animals"} and d["stats"]["score"] == pytest.approx(table.score[feature])
    # HTML: a context containing <script> shows as text
    html_page = h.dashboard_html({**d, "top_contexts": [{"source": "background", "text": texts[0], "tokens": ["<script>", "alert"], "values": [1.0, 0.5], "max_value": 1.0}]})
    assert "<script>" not in html_page and "&lt;script&gt;" in html_page
    # widget: switching feature/layer and the export button
    board = h.FeatureDashboard(boards, tmp_path / "features")
    path = board._on_export()
    saved = json.loads(path.read_text())
    assert path.name == f"layer_1_feature_{feature}.json" and saved["index"] == feature and saved["layer"] == 1
    assert {"top_contexts", "histogram", "density"} <= set(saved) and "saved" in board.status.value
    assert len(board.figure.data) == 2
