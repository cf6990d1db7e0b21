"""Feature dashboards: data computed from the SAE on every token, HTML escaping, the widget and its JSON export."""

import json

import numpy as np
import pytest
import torch

from monosem.cache import load_or_extract_concepts, load_or_extract_corpus
from monosem.criterion import Criterion
from monosem.paths import model_paths
from monosem.sae.train import encode_all, train_sae
from monosem.scorecard import unit_table
from monosem.viz.dashboard import FeatureDashboard, build_dashboards, dashboard_html, feature_token_acts


def test_dashboard_data_html_escaping_and_export(bundled, concepts, data_dir):
    spec, model, tok = bundled
    mp = model_paths(data_dir, spec.used)
    df = concepts[concepts.word.isin(["green", "red", "seven", "happy", "running", "dog"])].reset_index(drop=True)
    cache = load_or_extract_concepts(mp, spec, df, [1], model_and_tokenizer=(model, tok))
    texts = ["Use <script>alert(1)</script> & see.", "Plain text about green paint and red doors."]
    bg = load_or_extract_corpus(mp, spec, texts, [1], model_and_tokenizer=(model, tok))
    sae, _, _ = train_sae(cache.tokens(1), "topk", steps=30, batch_size=32, progress=False, expansion=1, k=16)
    ex_acts = encode_all(sae, cache.word(1)).numpy()
    table, _ = unit_table(ex_acts, df, criterion=Criterion(n_splits=10), n_boot=50)
    feature = int(np.argmax(ex_acts.max(0)))
    sources = {1: [("concept sentences", cache, df.sentence.tolist()), ("background", bg, texts)]}
    boards = build_dashboards("m", {1: [feature]}, {1: sae}, sources, tok, df, {1: ex_acts}, {1: table})
    d = boards[1][feature]
    values = feature_token_acts(sae, [cache.token_array(1), bg.token_array(1)], [feature])[:, 0]
    full = encode_all(sae, torch.cat([cache.tokens(1), bg.tokens(1)]))[:, feature].numpy()
    np.testing.assert_allclose(values, full, atol=1e-5)
    assert d["density"] == pytest.approx((full > 0).mean()) and sum(d["histogram"]["counts"]) == (full > 0).sum()
    assert d["top_contexts"][0]["max_value"] == pytest.approx(full.max(), rel=1e-5)
    assert set(d["category_means"]) == {"numbers", "emotions", "actions", "colors", "animals"} and d["stats"]["score_reference"] == pytest.approx(table.score_reference[feature])
    assert d["stats"]["top_category"] == table.top_category[feature] and set(d["stats"]) >= {"selective", "replication", "auroc_heldout"}
    # HTML: a context containing <script> shows as text
    html_page = dashboard_html({**d, "top_contexts": [{"source": "background", "text": texts[0], "tokens": ["<script>", "alert"], "values": [1.0, 0.5], "max_value": 1.0}]})
    assert "<script>" not in html_page and "&lt;script&gt;" in html_page
    # widget: switching feature/layer and the export button
    board = FeatureDashboard(boards, mp)
    path = board._on_export()
    saved = json.loads(path.read_text())
    assert path.name == f"layer_1_feature_{feature}.json" and path.parent == mp.features and saved["index"] == feature and saved["layer"] == 1
    assert {"top_contexts", "histogram", "density"} <= set(saved) and "saved" in board.status.value
    assert len(board.figure.data) == 2
    assert len(board.figure._widget_data) == 2 and board.figure._widget_layout["title"] == board.figure.layout.title.to_plotly_json()  # saved state: this figure
    # the standalone page was written beside the JSON and opens on its own (plotly.js inlined, no network)
    page = path.with_suffix(".html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "plotly" in page and "cdn.plot.ly" not in page.split("<body")[0]
    # contexts read as the original text, each text once; contexts across activation intervals
    for c in d["top_contexts"]:
        assert "".join(c["tokens"]).strip() == c["text"].strip(), c
    assert len({c["text"] for c in d["top_contexts"]}) == len(d["top_contexts"])
    assert len(d["quantile_contexts"]) == 4 and all(q["interval"][0] < q["interval"][1] for q in d["quantile_contexts"])
    # any feature index: computed on demand and selected
    other = (feature + 1) % sae.d_sae
    board = FeatureDashboard(boards, mp, compute=lambda L, f: build_dashboards("m", {L: [f]}, {1: sae}, sources, tok, df, {1: ex_acts}, {1: table})[L][f])
    shown = board.show_feature(1, other)
    assert shown["index"] == other and board.feature.value == other and other in board.feature.options


def test_text_pieces_read_as_words_with_a_word_piece_tokenizer(bundled):
    from monosem.viz.dashboard import text_pieces

    _, _, tok = bundled
    text = "There were ninety chairs in the unfathomable room."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    pieces = text_pieces(tok, text, ids)
    assert len(pieces) == len(ids) > len(text.split())  # "unfathomable" is several word pieces
    assert "".join(pieces) == text and pieces[0] == "There" and pieces[1] == " were"


def test_dense_features_are_flagged_and_statistics_are_a_table():
    base = {"model": "m", "layer": 0, "index": 3, "n_tokens": 1000, "top_contexts": [], "quantile_contexts": [],
            "stats": {"score_reference": 0.71234, "selective": True, "causal_p": float("nan"), "n_active_words": 40000.0}}
    dense, sparse = dashboard_html({**base, "density": 0.75}), dashboard_html({**base, "density": 0.01})
    assert ">dense</span>" in dense and ">dense</span>" not in sparse
    assert "<th style='text-align:left;padding-right:12px'>score_reference</th><td>0.712</td>" in dense
    assert "<td>40,000</td>" in dense and "<td>–</td>" in dense and "k = v" not in dense


def test_a_causal_lm_dashboard_shows_the_decoder_rows_top_and_bottom_logits(gpt2_tiny, concepts, data_dir, tmp_path):
    from monosem.causal import logit_lens
    from monosem.model import resolve_model

    model, tok = gpt2_tiny
    model.save_pretrained(tmp_path / "gpt2", safe_serialization=True)
    tok.save_pretrained(tmp_path / "gpt2")
    spec = resolve_model(str(tmp_path / "gpt2"))
    from monosem.testing import small_concepts

    df = small_concepts(concepts, 2)
    cache = load_or_extract_concepts(model_paths(data_dir, spec.used), spec, df, [1], model_and_tokenizer=(model, tok))
    sae, _, _ = train_sae(cache.tokens(1), "topk", steps=10, batch_size=32, progress=False, expansion=2, k=8)
    ex_acts = encode_all(sae, cache.word(1)).numpy()
    table, _ = unit_table(ex_acts, df, criterion=Criterion(n_splits=10), n_boot=20)
    boards = build_dashboards("tiny", {1: [0, 3]}, {1: sae}, {1: [("concept sentences", cache, df.sentence.tolist())]}, tok, df, {1: ex_acts},
                              {1: table}, model=model)
    want = logit_lens(model, sae, [3], tok, k=10)[0]
    got = boards[1][3]["logits"]
    assert got["top_tokens"] == want["top_tokens"] and got["bottom_tokens"] == want["bottom_tokens"] and len(got["top_tokens"]) == 10
    page = dashboard_html(boards[1][3])
    assert "promoted" in page and "suppressed" in page
    assert "logits" not in build_dashboards("tiny", {1: [0]}, {1: sae}, {1: [("concept sentences", cache, df.sentence.tolist())]}, tok, df,
                                            {1: ex_acts}, {1: table})[1][0]  # no model: no logits


def test_boolean_statistics_stay_booleans():
    import pandas as pd

    from monosem.viz.dashboard import dashboard_data

    df = pd.DataFrame({"concept": ["numbers", "colors"], "word": ["7", "red"], "is_concept": [True, True]})
    d = dashboard_data("m", 0, 1, np.zeros(0), [], None, df, np.array([1.0, 0.0]), {"selective": np.bool_(True), "replication": np.float32(0.5)})
    assert d["stats"] == {"selective": True, "replication": 0.5} and isinstance(d["stats"]["selective"], bool)
