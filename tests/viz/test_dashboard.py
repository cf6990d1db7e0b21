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
