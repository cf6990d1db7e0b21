"""The per-feature table in <preset>/selectivity_layer_<L>.csv can be recomputed from concepts.csv, the model and the
saved SAE with plain transformers + safetensors, without monosem's extraction or scoring code: the reference score
(4 concepts, all sentences), the 8 category means on the neutral frames, and that no unit labelled selective has a
control category at or above its concept's mean."""

import csv
import json
import re

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file

from monosem.bases import trained_sae_basis
from monosem.cache import load_or_extract_concepts
from monosem.criterion import Criterion
from monosem.dataset import CATEGORIES, CONCEPTS, load_concepts
from monosem.paths import model_paths
from monosem.results import write_selectivity_tables
from monosem.sae.saelens import save_sae
from monosem.sae.train import train_sae
from monosem.scorecard import unit_table


def independent_word_features(csv_path, model, tok, sae_dir, layer):
    """{row: SAE features of the word-token mean at ``layer``} with the CSV rows, by plain transformers + safetensors."""
    rows = list(csv.DictReader(open(csv_path, encoding="utf-8")))
    w = load_file(sae_dir / "sae_weights.safetensors")
    apply_b_dec = json.loads((sae_dir / "cfg.json").read_text())["apply_b_dec_to_input"]
    feats = []
    for r in rows:
        start = re.search(rf"(?<!\w){re.escape(r['word'])}(?!\w)", r["sentence"]).start()
        end = start + len(r["word"])
        enc = tok(r["sentence"], return_offsets_mapping=True, return_tensors="pt")
        with torch.no_grad():
            hs = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], output_hidden_states=True).hidden_states[layer + 1][0]
        offs = enc["offset_mapping"][0].tolist()
        pos = [i for i, (a, b) in enumerate(offs) if b > a and a < end and b > start]
        tokens = hs[pos]  # encode each of the word's tokens, then pool (the project's choice for SAE features)
        feats.append(torch.relu((tokens - w["b_dec"] * apply_b_dec) @ w["W_enc"] + w["b_enc"]).mean(0).double().numpy())
    return pd.DataFrame(rows), np.stack(feats)


def test_csv_table_matches_an_independent_recomputation(bundled, concepts, data_dir, tmp_path):
    spec, model, tok = bundled
    mp = model_paths(data_dir, spec.used)
    words = concepts.drop_duplicates("word").groupby("concept").head(10).word
    subset = concepts[concepts.word.isin(words)][["concept", "word", "sentence", "frame", "frame_kind"]]
    csv_path = tmp_path / "concepts.csv"
    subset.to_csv(csv_path, index=False)
    df = load_concepts(csv_path)
    layer = 2
    cache = load_or_extract_concepts(mp, spec, df, [layer], model_and_tokenizer=(model, tok))
    sae, _, _ = train_sae(cache.tokens(layer), "reference", steps=300, batch_size=64, progress=False)
    save_sae(sae, mp.sae(layer), spec.used, layer)
    acts, live = trained_sae_basis(mp, "reference").activations(cache, layer)
    table, _ = unit_table(acts, df, live, Criterion(n_splits=10), n_boot=100)
    (out,) = write_selectivity_tables(mp, "reference", {layer: table})
    assert out == mp.selectivity_csv("reference", layer)
    saved = pd.read_csv(out, keep_default_na=False, na_values=[""])

    rows, feats = independent_word_features(csv_path, model, tok, mp.sae(layer), layer)
    # the reference score: 4 concepts, every sentence, mean over sentences
    concept_means = np.stack([feats[(rows.concept == c).to_numpy()].mean(0) for c in CONCEPTS])
    total = concept_means.sum(0)
    score = np.where(total > 0, concept_means.max(0) / np.where(total > 0, total, 1), 0.0)
    np.testing.assert_allclose(saved["score_reference"], score, atol=1e-4)
    # the final label's category means: neutral frames, mean over words of each word's mean
    neutral = (rows.frame_kind == "neutral").to_numpy()
    word_means = pd.DataFrame(feats[neutral]).groupby(rows.word[neutral].to_numpy()).mean()
    category_of = rows.drop_duplicates("word").set_index("word").concept
    by_category = word_means.groupby(category_of.loc[word_means.index].to_numpy()).mean()
    for c in CATEGORIES:
        np.testing.assert_allclose(saved[f"mean_{c}"], by_category.loc[c].to_numpy(), rtol=1e-4, atol=1e-5)
    # no unit labelled selective (nor any unit whose top category is a concept) has a control category at or above its
    # concept's mean, recomputed independently
    concept_top = saved[saved.top_category.isin(CONCEPTS)]
    assert len(concept_top) >= 10, "the check needs units whose top category is a concept"
    assert set(saved[saved.selective.astype(bool)].top_category) <= set(CONCEPTS)
    for rows in (concept_top, saved[saved.selective.astype(bool)]):
        recomputed = by_category.loc[list(CATEGORIES)].to_numpy()[:, rows.feature.to_numpy()]
        assert (recomputed[: len(CONCEPTS)].max(0) > recomputed[len(CONCEPTS):].max(0)).all(), rows[["feature", "top_category"]]
