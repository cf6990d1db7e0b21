# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Word-level exploration
#
# Which words do the most selective features fire on? Figure 2 is a heatmap of the top 8 features
# (selective first, by held-out AUROC; then by reference score) × words, per layer. Beside it, the reference study's own pick
# (the features with the highest variance across examples) shows what went wrong there: its top features
# fired most on the same word in every layer. Then the top activating words per feature, with values, and an
# explorer with a `layer` slider and a `feature` selector.
#
# **Previous:** [03 · Selectivity](03_selectivity.ipynb)

# %%
import pandas as pd
from scipy.stats import spearmanr

import helpers as h

# %% tags=["parameters"]
OVERRIDES: dict = {}  # e.g. {"top_k": 12}; anything not set here comes from MONOSEM_* variables or the defaults
cfg = h.RunConfig.from_env(**OVERRIDES)
REFERENCE_WORDS = ["seven", "100", "13", "2024", "happy", "angry", "worried", "running", "flying", "walks", "blue", "red", "green"]  # Figure 2's columns
pd.DataFrame(cfg.settings("model", "layers", "threshold", "alpha", "pooling", "sae_preset", "top_k", "sae_source"))

# %% [markdown]
# ## Inputs
# Notebook 03's per-feature tables of the analysed preset (the summary must describe the same preset), and the
# same SAE features averaged per word over the word's sentences.

# %%
run = h.open_run(cfg)
h.show_model_banner(run.spec)
layers, _, preset = h.analysed_saes(run)
summary = h.read_summary(run.paths, run.spec, None if preset == "auto" else preset)  # notebook 03 ran for this model (and preset)
preset = summary.sae_preset
tables = h.read_selectivity_tables(run.paths, preset, layers)
basis = h.trained_sae_basis(run.paths, preset)
feats = {L: basis.activations(run.concepts, L, cfg.pooling)[0] for L in layers}
wms = {L: h.word_means(feats[L], run.df) for L in layers}
top = {L: h.top_features(tables[L], cfg.top_k) for L in layers}
print({L: top[L] for L in layers})

# %% [markdown]
# ## Figure 2: top features × words
# Columns are the reference study's 13 words, grouped by category; rows are each layer's top features, best first
# (the menu picks the layer). A selective feature lights up one block of columns.

# %%
missing = [w for w in REFERENCE_WORDS if w not in wms[layers[0]].index]
assert not missing, f"reference words {missing} are not in data/concepts.csv"
concept_of = run.df.drop_duplicates("word").set_index("word")["concept"]
fig2 = h.fig_word_heatmap(wms, top, REFERENCE_WORDS, concept_of, f"{run.spec.used} ({preset} SAE)")
h.save_figure(run.paths, fig2, "04_figure2", cfg.save_figures)
fig2.show()

# %% [markdown]
# ## The reference study's pick, and why it follows the activation norm
# The reference chose features by their variance across examples. Variance grows with the *square* of a
# feature's activation size, so this pick favours features that fire strongly, and a feature fires strongly on
# inputs with a large residual norm, whatever their concept. The table shows each picked feature's top word
# and score; the correlations below measure, over all features, how closely variance follows the mean
# activation, and, over words, how closely the picked features' total activation follows the word's residual norm.

# %%
rows = []
for L in layers:
    for f in h.reference_pick(feats[L], cfg.top_k):
        best = h.top_words(wms[L], f, 1)
        rows.append({"layer": L, "feature": f, "top word": best.index[0], "activation": best.iloc[0], "score_reference": tables[L].loc[f, "score_reference"],
                     "selective": tables[L].loc[f, "selective"], "top category (8)": tables[L].loc[f, "top_category"]})
ref = pd.DataFrame(rows)
display(ref.groupby("layer")["top word"].agg(lambda s: s.value_counts().head(3).to_dict()).rename("most frequent top words"))
for L in layers:
    rho_var = spearmanr(feats[L].var(0), feats[L].mean(0)).statistic
    norms = h.word_means(run.concepts.word(L, cfg.pooling).norm(dim=1, keepdim=True).numpy(), run.df)[0]
    picked = wms[L][h.reference_pick(feats[L], cfg.top_k)].sum(axis=1)
    print(f"layer {L}: Spearman(variance, mean activation) over features = {rho_var:.2f}; "
          f"Spearman(picked features' activation, residual norm) over words = {spearmanr(picked, norms.loc[picked.index]).statistic:.2f}")
ref.style.format(precision=3).set_caption(f"{run.spec.used}: the reference study's pick (highest variance) per layer")

# %% [markdown]
# ## Top activating words per top feature
# For each layer's top features: the 5 words with the highest mean activation, and their category.

# %%
rows = []
for L in layers:
    for f in top[L]:
        words = h.top_words(wms[L], f, 5)
        rows.append({"layer": L, "feature": f, "score_reference": round(tables[L].loc[f, "score_reference"], 3), "selective": tables[L].loc[f, "selective"],
                     "replication": tables[L].loc[f, "replication"], "top category (8)": tables[L].loc[f, "top_category"],
                     "top words": ", ".join(f"{w} ({concept_of[w]}, {v:.2f})" for w, v in words.items())})
pd.DataFrame(rows).style.format(precision=3).set_caption(f"{run.spec.used}: top words of the {cfg.top_k} most selective {preset} features per layer")

# %% [markdown]
# ## Feature families
# A concept can be split over several features ("red", "blue", "digits", "tens"): per layer and concept, its 5 most
# sensitive units labelled *specific* (notebook 03: when the unit fires, ≥ 80% of the words are this concept, on held-out
# words too), with the words each fires on (neutral frames, ≥ 5% of its maximum). Together they are the concept's
# family, whose held-out recall notebook 03's coverage table reports; `specificity_corpus` is the share of the unit's
# top-20 tokens in held-out natural text that are words of the concept.

# %%
neutral = h.frame_rows(run.df, "neutral")
neutral_wms = {L: h.word_means(feats[L][neutral], run.df[neutral]) for L in layers}
families = pd.concat([h.concept_families(tables[L], neutral_wms[L], c).assign(layer=L) for L in layers for c in h.CONCEPTS], ignore_index=True)
families.set_index(["layer", "concept", "feature"]).style.format(precision=2).set_caption(
    f"{run.spec.used}: the families of specific {preset} features per concept (most sensitive first)")

# %% [markdown]
# ## Explorer
# Pick a layer and one of its top features to see its top words, their categories and a sentence for each.

# %%
word_explorer = h.WordExplorer(wms, run.df, top, f"{run.spec.used} ({preset} SAE)")
word_explorer.widget

# %% [markdown]
# ## Feature dashboard
# A page per feature, as sae_vis and Neuronpedia show it: the top contexts from the concept sentences and the
# background corpus, each text once, shown as written (word pieces join into words) with each token shaded by its
# activation (hover for the value); contexts sampled from four intervals of the activation range; the activation
# histogram (log scale) and density, with a *dense* flag above 10% of tokens; the mean activation per concept and
# control category with standard errors over words; notebook 03's statistics as a table; and, for a causal LM, the
# tokens the decoder row promotes and suppresses through the unembedding (top and bottom logits). The menu offers the top
# features; "feature #" + "show" opens any feature. "export JSON + HTML" writes the feature's data and a standalone
# page that opens offline to `data/results/<model>/features/`.

# %%
model, tokenizer = h.load_model(run.spec, h.pick_device(cfg.device))  # the model only for a causal LM's logits (none for an encoder)
sources = {L: [("concept sentences", run.concepts, run.df["sentence"].tolist()), ("background", run.background, run.background.texts())] for L in layers}
saes = {L: basis.sae(L) for L in layers}
dashboards = h.build_dashboards(f"{run.spec.used} ({preset} SAE)", top, saes, sources, tokenizer, run.df, feats, tables, model=model)


def any_feature(layer: int, feature: int) -> dict:
    """The dashboard of any feature index (the "feature #" box), computed on demand."""
    if not 0 <= feature < saes[layer].d_sae:
        raise IndexError(f"feature {feature} is out of range: layer {layer}'s SAE has {saes[layer].d_sae} features")
    return h.build_dashboards(f"{run.spec.used} ({preset} SAE)", {layer: [feature]}, saes, sources, tokenizer, run.df, feats, tables, model=model)[layer][feature]


dashboard = h.FeatureDashboard(dashboards, run.paths, compute=any_feature)
dashboard.widget

# %% [markdown]
# The same data for every feature shown, exported as one JSON file each (Neuronpedia-like fields: layer, index,
# top contexts with per-token values, histogram, density, category means, statistics).

# %%
exported = [h.export_feature_json(run.paths, d) for L in layers for d in dashboards[L].values()]
pages = [h.export_feature_page(run.paths, d, h.feature_page_html(d)) for L in layers for d in dashboards[L].values()]
print(f"exported {len(exported)} feature files (JSON) and {len(pages)} standalone pages (HTML) to {run.paths.features}")

# %% [markdown]
# ## Summary
# The reference study's summary line, per layer, for the threshold of notebook 03, with the final label's counts.

# %%
for L in layers:
    print(h.summary_line(L, h.layer_summary(tables[L], cfg.threshold)))
print(f"figures (with MONOSEM_SAVE_FIGURES=1): {run.paths.figures}")

# %% [markdown]
# ## What we found
# Computed from the tables above: how often the reference study's pick lands on the same word, and how many of the
# top features are selective or read one category in their top 5 words, and how many units of the layer are bound to
# one surface form.

# %%
for L in layers:
    words = ref.loc[ref.layer == L, "top word"]
    t = tables[L].loc[top[L]]
    one_category = sum(len({concept_of[w] for w in h.top_words(wms[L], f, 5).index}) == 1 for f in top[L])
    form_bound = int(tables[L]["form_bound"].sum()) if "form_bound" in tables[L] else 0
    print(f"layer {L}: the reference pick's most frequent top word is '{words.value_counts().index[0]}' ({words.value_counts().iloc[0]} of {len(words)}); "
          f"of the {len(top[L])} top {preset} features, {int(t['selective'].sum())} are selective, {one_category} have all 5 top words in one "
          f"category; in the whole layer, {form_bound} units respond to one surface form of their concept's words only (not selective).")

# %% [markdown]
# This notebook writes the feature files under `data/results/<model>/features/` (and, with `MONOSEM_SAVE_FIGURES=1`, the figures); `data/results/<model>/` holds notebook 03's summary and CSVs.
#
# **Back to the start:** [01 · Extract activations](01_extract_activations.ipynb)
