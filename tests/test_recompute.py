"""The per-feature scores in selectivity_layer_<L>.csv can be recomputed from concepts.csv, the model
and the saved SAE with plain transformers + safetensors, without monosem's extraction or scoring code."""

import csv
import json
import re

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file

from monosem.bases import trained_sae_basis
from monosem.cache import load_or_extract_concepts
from monosem.dataset import CONCEPTS, load_concepts
from monosem.paths import model_paths
from monosem.results import write_selectivity_tables
from monosem.sae.train import train_or_load_sae
from monosem.selectivity import selectivity_table


def independent_scores(csv_path, model, tok, sae_dir, layer):
    rows = list(csv.DictReader(open(csv_path, encoding="utf-8")))
    w = load_file(sae_dir / "sae_weights.safetensors")
    apply_b_dec = json.loads((sae_dir / "cfg.json").read_text())["apply_b_dec_to_input"]
    sums = {c: 0.0 for c in CONCEPTS}
    counts = {c: 0 for c in CONCEPTS}
    for r in rows:
        if r["concept"] not in CONCEPTS:
            continue
        start = re.search(rf"(?<!\w){re.escape(r['word'])}(?!\w)", r["sentence"]).start()
        end = start + len(r["word"])
        enc = tok(r["sentence"], return_offsets_mapping=True, return_tensors="pt")
        with torch.no_grad():
            hs = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], output_hidden_states=True).hidden_states[layer + 1][0]
        offs = enc["offset_mapping"][0].tolist()
        pos = [i for i, (a, b) in enumerate(offs) if b > a and a < end and b > start]
        x = hs[pos].mean(0)
        f = torch.relu((x - w["b_dec"] * apply_b_dec) @ w["W_enc"] + w["b_enc"]).double().numpy()
        sums[r["concept"]] = sums[r["concept"]] + f
        counts[r["concept"]] += 1
    means = np.stack([sums[c] / counts[c] for c in CONCEPTS])
    total = means.sum(0)
    return np.where(total > 0, means.max(0) / np.where(total > 0, total, 1), 0.0), means


def test_csv_scores_match_an_independent_recomputation(bundled, concepts, data_dir, tmp_path):
    spec, model, tok = bundled
    mp = model_paths(data_dir, spec.used)
    words = concepts.drop_duplicates("word").groupby("concept").head(4).word
    subset = concepts[concepts.word.isin(words)][["concept", "word", "sentence"]]
    csv_path = tmp_path / "concepts.csv"
    subset.to_csv(csv_path, index=False)
    df = load_concepts(csv_path)
    layer = 2
    cache = load_or_extract_concepts(mp, spec, df, [layer], model_and_tokenizer=(model, tok))
    train_or_load_sae(mp, spec, [cache], layer, steps=200, batch_size=64)
    acts, live = trained_sae_basis(mp, "reference").activations(cache, layer)
    (out,) = write_selectivity_tables(mp, "reference", {layer: selectivity_table(acts, df, live)})
    assert out == mp.selectivity_csv("reference", layer)

    saved = pd.read_csv(out)
    score, means = independent_scores(csv_path, model, tok, mp.sae(layer), layer)
    np.testing.assert_allclose(saved["score"], score, atol=1e-4)
    for i, c in enumerate(CONCEPTS):
        np.testing.assert_allclose(saved[f"mean_{c}"], means[i], rtol=1e-4, atol=1e-5)
    assert (saved["score"] > 0).any(), "a trained SAE should have some concept-active features"
