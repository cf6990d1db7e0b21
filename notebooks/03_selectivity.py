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
# # 03 · Which features are selective for one concept, and is it real?
#
# Two criteria, named the same way everywhere:
#
# * **the reference criterion** — the reference study's score per feature, `max concept mean / sum of
#   concept means` over the 4 concepts (numbers, emotions, actions, colors) on all sentences; a feature
#   is "monosemantic" when `score_reference` exceeds the threshold (default 0.6). Controls play no part.
# * **the final label `selective`** — on the *neutral* frames only (every neutral frame is used by all 8
#   categories, so no frame can carry a category), a unit's top category among all 8 (controls included)
#   must be a concept, and in at least 90% of 20 random halvings of each category's words the top category
#   chosen on one half must be the top again on the other half with a one-sided Mann–Whitney p < α there.
#
# The same analysis runs on every SAE preset and on baselines (the residual stream, the MLP neurons,
# untrained SAEs) and, as a negative control, on the model's architecture with random weights. A
# scorecard compares them; then the causal effect of the top selective features, and the reference
# study as it ran.
#
# **Previous:** [02 · Train SAEs](02_train_sae.ipynb) · **Next:** [04 · Word-level exploration](04_word_level_exploration.ipynb)

# %%
import pandas as pd

import helpers as h

# %% tags=["parameters"]
OVERRIDES: dict = {}  # e.g. {"threshold": 0.8}; anything not set here comes from MONOSEM_* variables or the defaults
cfg = h.RunConfig.from_env(**OVERRIDES)
pd.DataFrame(cfg.settings("model", "layers", "threshold", "alpha", "min_replication", "n_splits", "pooling", "sae_preset", "sae_presets",
                          "n_bootstrap", "n_permutations", "random_control", "control_steps", "top_k", "seed", "sae_source"))

# %% [markdown]
# ## Inputs and statistics
# Activations from notebook 01, SAEs from notebook 02 (or, with `MONOSEM_SAE_SOURCE`, SAEs made elsewhere, whose
# hook names decide the layers). Every basis gets the same unit table on the same words; the progress bar counts bases.

# %%
run = h.open_run(cfg)
h.show_model_banner(run.spec)
device = h.pick_device(cfg.device)
layers, presets, preset = h.analysed_saes(run)
criterion = h.Criterion.from_config(cfg)
overrides = {p: h.preset_overrides(p, cfg.sae_expansion, cfg.sae_k) for p in presets if p in h.PRESETS}
bases = h.standard_bases(run.paths, presets, run.caches, cfg.seed, overrides, mlp_signed=h.mlp_signed(run.spec),  # a gated MLP's neurons are signed: ± units
                         massive=run.massive_norms())  # untrained SAEs are initialised without the massive activations, as the trained ones
comparison = h.compare_bases(bases, run.df, run.concepts, layers, cfg.pooling, cfg.threshold, criterion, cfg.n_bootstrap)
if preset == "auto":  # the default: the trained modern preset with the most selective units among active units
    preset = h.best_preset(comparison.scorecard, presets)
    print(f"analysed preset (auto): {preset}")
if cfg.random_control:  # the same preset as analysed (or, for SAEs made elsewhere, the modern L1 recipe), on a reduced budget
    control_preset = preset if preset in h.PRESETS else "l1"
    control = h.random_control_bases(cfg.data_path, run.spec, run.df, layers, run.background.texts(), control_preset, cfg.control_steps, 256,
                                     cfg.seed, device, **h.preset_overrides(control_preset, cfg.sae_expansion, cfg.sae_k))
    comparison = comparison.merged(h.compare_bases(control, run.df, run.concepts, layers, cfg.pooling, cfg.threshold, criterion, cfg.n_bootstrap))
tables = comparison.sae(preset)
for L in layers:
    t = tables[L]
    assert t["score_reference"].between(0, 1).all() and t["replication"].between(0, 1).all(), f"layer {L}: scores and replication must lie in [0, 1]"
    means = t[[f"mean_{c}" for c in h.CATEGORIES]].to_numpy()
    top = means.argmax(1)
    assert (top[t["selective"].to_numpy()] < len(h.CONCEPTS)).all(), f"layer {L}: a selective unit has a control category on top; the criterion is broken"
    print(f"layer {L}: {len(t)} {preset} features scored on {run.df.word.nunique()} words ({cfg.pooling} pooling)")

# %% [markdown]
# ## Figure 1: the distribution of the reference score
# With four concepts a feature that fires equally on all of them scores 0.25. Grey: all features; red: those
# with the final label. The dashed line is the threshold: the two criteria disagree wherever grey sits right of
# it (above threshold but not selective) or red sits left of it.

# %%
fig1 = h.fig_selectivity(tables, cfg.threshold, f"{run.spec.used} ({preset} SAE)")
h.save_figure(run.paths, fig1, "03_figure1_selectivity", cfg.save_figures)
fig1.show()

# %% [markdown]
# ## Per layer: the reference criterion and the final label
# The reference's summary line, then the final label's counts; below, the top selective features with their statistics,
# ranked by held-out AUROC (the effect size on words never used to pick them).
#
# Two columns qualify the label. `surface_form_balance`: numbers are written in digits or spelled out, some emotion
# words end in *-ed* and most action words in *-ing*; the balance is the unit's mean activation on the words of one
# form divided by that on the other (smaller over larger). A unit below 0.1 responds to the form (digits, an ending),
# not to the concept: it is counted as *bound to one surface form* and not as selective. (The dataset has no *-ing*
# words outside actions, so the runner-up test alone could not catch such a unit.) `top_share`: the top category's
# share of the unit's summed category means (1/8 = fires alike on all 8), so a selective unit that also fires on
# everything else reads as such; "selective" means reliably on top, not "fires on nothing else".

# %%
summaries = {L: h.layer_summary(tables[L], cfg.threshold) for L in layers}
for L in layers:
    print(h.summary_line(L, summaries[L]))
cols = ["feature", "score_reference", "ci_low", "ci_high", "top_category", "replication", "auroc_heldout", "n_active_words", "selective_category_frames",
        "surface_form_balance", "top_share"]
best = pd.concat({L: tables[L].set_index("feature").loc[h.top_features(tables[L].loc[tables[L]["selective"]], cfg.top_k)].reset_index()[cols]
                  for L in layers}, names=["layer", "rank"])
best.style.format(precision=3).set_caption(f"{run.spec.used}: selective {preset} features (final label), best first")

# %% [markdown]
# ## Figure 3: mean activation per category
# For the top features of each layer (selective first): a concept feature has one tall coloured bar and short grey ones.

# %%
shown = {L: h.top_features(tables[L], cfg.top_k) for L in layers}
fig3 = h.fig_concept_means(tables, shown, f"{run.spec.used} ({preset} SAE)")
h.save_figure(run.paths, fig3, "03_figure3_concept_means", cfg.save_figures)
fig3.show()

# %% [markdown]
# ## Explorer
# Move `layer` and `threshold`: the histogram, both counts (reference criterion and final label) and the list update in place.

# %%
explorer = h.SelectivityExplorer(tables, f"{run.spec.used} ({preset} SAE)", cfg.threshold)
explorer.widget

# %% [markdown]
# ## Is it real? The scorecard
# One row per basis and layer. `fraction_selective_active` divides by the units active on at least 5 words, so bases of
# any width compare; `replication_rate` is the share of (split, unit) discoveries that the held-out half confirms;
# `pure_units` counts units with ≥ 90% of their activation mass in one category (beside it what shuffled labels give);
# `probe_k1_auroc` / `probe_k5_auroc` are SAEBench-style k-sparse probes on held-out words, controls as negatives.

# %%
scorecard = comparison.scorecard
display(scorecard.pivot(index="basis", columns="layer", values="fraction_selective_active").style.format("{:.1%}")
        .set_caption(f"{run.spec.used}: selective units / active units (final label)"))
fig_card = h.fig_scorecard(scorecard, run.spec.used)
h.save_figure(run.paths, fig_card, "03_scorecard", cfg.save_figures)
fig_card.show()
ints = [c for c in scorecard.columns if c.startswith("n_") or c == "pure_units"]
scorecard.set_index(["basis", "layer"]).style.format(precision=3).format("{:,}", subset=ints).format("{:.1%}", subset=["fraction_selective_active"]) \
    .set_caption(f"{run.spec.used}: scorecard per basis and layer")

# %% [markdown]
# ## The negative control
# A network that never learned a concept cannot have concept features. The model's architecture with random weights
# went through the same extraction, an SAE of the analysed preset on a reduced budget, and the same criterion. Each
# control basis is set beside the real model's basis of the same kind. (On a null, the criterion labels about 0 units
# selective, so α is a loose upper bound here, not the null rate.)

# %%
for line in h.control_lines(scorecard, cfg.alpha, cfg.control_steps * 256):
    print(line)

# %% [markdown]
# ## Causal effect of the top selective features
# Each feature's decoder contribution is removed at its layer, and the change of the model's output (KL of the
# next-token distribution for a causal LM, 1 - cosine of the final hidden state for an encoder) is compared between
# its concept's words and all other words, with a permutation test over words. One neutral-frame sentence per word.

# %%
model, tokenizer = h.load_model(run.spec, device)
neutral = run.df[h.frame_rows(run.df, "neutral")].drop_duplicates("word").reset_index(drop=True)  # one neutral sentence per word
causal_rows = []
for L in layers:
    t = tables[L]
    features = h.top_features(t.loc[t["selective"]], cfg.top_k)
    if not features:
        continue
    sae = comparison.sae_of(preset, L)
    change = h.ablation_output_change(model, tokenizer, sae, L, neutral["sentence"].tolist(), features)
    effects = h.causal_effects(change, neutral, t.set_index("feature").loc[features, "top_category"].to_numpy(), n_perm=cfg.n_permutations,
                               seed=cfg.seed, features=features)
    h.set_causal_columns(t, effects)
    causal_rows.append(effects.assign(layer=L))
causal = pd.concat(causal_rows) if causal_rows else pd.DataFrame(columns=["layer", "feature", "causal_effect", "causal_p"])
display(causal.style.format(precision=4).set_caption(f"{run.spec.used}: causal effect of the top selective {preset} features (neutral frames)"))
lens_rows, lens_words = [], {}
if h.is_causal_lm(model) and causal_rows:  # the decoder direction read through the final norm and unembedding: does it promote its concept's words?
    for L in sorted(set(causal["layer"])):
        features = causal.loc[causal["layer"] == L, "feature"].tolist()
        concepts = tables[L].set_index("feature").loc[features, "top_category"].to_numpy()
        lens = h.logit_lens(model, comparison.sae_of(preset, L), features, tokenizer, k=8)
        ranks = h.concept_token_rank(model, comparison.sae_of(preset, L), features, tokenizer, neutral, concepts)
        lens_rows += [{"layer": L, "feature": f, "concept": c, "top_tokens": d["top_tokens"], "concept_auroc": float(r)}
                      for f, c, d, r in zip(features, concepts, lens, ranks)]
    lens_words = h.shared_first_tokens(tokenizer, run.df["word"].tolist())  # a word is scored by its first token: shared ones tie
    lens_table = pd.DataFrame(lens_rows)
    display(lens_table.assign(top_tokens=lens_table["top_tokens"].map(", ".join)).style.format({"concept_auroc": "{:.2f}"})
            .set_caption(f"{run.spec.used}: logit lens of the top selective {preset} features (concept_auroc: its concept's words against all others)"))
    print(f"median concept AUROC {lens_table['concept_auroc'].median():.2f}; {(lens_table['concept_auroc'] > 0.75).sum()} of {len(lens_table)} above 0.75. "
          f"Layers {layers} of {len(h.get_blocks(model))}: an early direction reaches the logits only through every later block, so noise-like "
          "top tokens and AUROCs near 0.5 are what to expect; they say the direction does not write its concept's tokens directly. "
          f"{lens_words['n_sharing']} of the {lens_words['n_words']} words share their first token with another word, e.g. {'; '.join(lens_words['examples'][:2])}.")
else:
    print("logit lens: the model has no unembedding (an encoder), so the decoder directions cannot be read as tokens")

# %% [markdown]
# ## The reference study as it ran
# Its 12 sentences (a reconstruction matching every reported fact), its sentence mean over all positions without
# BOS, its SAE (d/2, L1 0.1, 10 Adam steps on the 12 means), its summary lines, and its keyword heatmap rows. Its
# keyword matching used `text.split()`, which keeps the full stop on the last word of a sentence: the rows it loses are named.

# %%
reference = h.reference_run(model, tokenizer, layers, cfg.seed)
for line in reference.lines:
    print(line)
print(f"heatmap rows found by text.split(): {list(reference.found)}")
print("rows lost to punctuation: " + ", ".join(f"{k} (the token was {v!r})" for k, v in reference.lost.items()))
for L in layers:
    s = summaries[L]
    print(f"same model, layer {L}, crossed frames and controls: {s['n_selective']} selective {preset} features (final label), "
          f"{s['n_monosemantic']} above the reference threshold")
reference.layers[layers[0]].heatmap.style.format(precision=3).set_caption(
    f"{run.spec.used}, layer {layers[0]}: the reference heatmap (rows that text.split() finds x its top features)")

# %% [markdown]
# ## Results
# `summary.json` gathers the settings, per layer the counts above for the analysed preset, every preset's SAE metrics
# and counts, the scorecard of every basis, and the reference study's lines; `<preset>/selectivity_layer_<L>.csv` has
# one row per feature of each preset's SAE.

# %%
sae_metrics = h.collect_sae_metrics(run.paths, run.spec, presets, layers, run.caches)
summary = h.build_summary(cfg, run.spec, layers, presets, comparison, sae_metrics, criterion, h.reference_study_json(reference), preset, lens_rows, lens_words)
path = h.write_summary(run.paths, summary)
for p in presets:
    h.write_selectivity_tables(run.paths, p, comparison.sae(p))
print(f"wrote {path} and the per-feature CSVs in {run.paths.results}")

# %% [markdown]
# ## What we found

# %%
for sentence in h.findings(summary):
    print(sentence)

# %% [markdown]
# **Next:** [04 · Word-level exploration](04_word_level_exploration.ipynb)
