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
# # 03 · Which features are specific to one concept, and are SAE features more so than the model's neurons?
#
# Monosemanticity is measured the way the SAE literature measures it, with specificity and sensitivity apart:
#
# * **specificity** — when a unit fires (≥ 5% of its maximum over the words), is the word its category? On the
#   template words (neutral frames, every frame used by all 8 categories) and on held-out natural text (the share
#   of the unit's top-20 tokens that are words of its concept in a WordNet lexicon);
# * **sensitivity** — on how much of its category does it fire? Jensen–Shannon **separability** and the unit's
#   **density** (share of words / tokens it fires on) stand beside, because a dense unit wins any label that rewards
#   firing often;
# * the label **`specific`** — a concept on top, specificity ≥ 0.8 on all words and on held-out words, a
#   hypergeometric p < α;
# * **density-matched nulls** — an untrained SAE of the same architecture and L0, the residual stream in a random
#   rotation and the MLP neurons, each thresholded to fire on the SAE's share of words, shuffled categories, and the
#   model's architecture with random weights;
# * **the headline** — SAE against MLP neurons at the same density, paired over words, per metric, with CIs and the
#   spread over training seeds, on this word list and on a second one drawn from WordNet.
#
# The reference study's criterion stays beside, as it asked the question: its score per feature, `max concept mean /
# sum of concept means` over the 4 concepts on all sentences, "monosemantic" above the threshold (default 0.6); and the
# earlier label `selective` (a concept reliably on top of the 8 category means), which rewards firing often.
# Then the causal effect of the top specific features on the model's next-token mass for their concept, and the
# reference study as it ran.
#
# **Previous:** [02 · Train SAEs](02_train_sae.ipynb) · **Next:** [04 · Word-level exploration](04_word_level_exploration.ipynb)

# %%
import pandas as pd

import helpers as h

# %% tags=["parameters"]
OVERRIDES: dict = {}  # e.g. {"threshold": 0.8}; anything not set here comes from MONOSEM_* variables or the defaults
cfg = h.RunConfig.from_env(**OVERRIDES)
pd.DataFrame(cfg.settings("model", "layers", "threshold", "alpha", "min_replication", "n_splits", "pooling", "sae_preset", "sae_presets", "n_seeds",
                          "n_bootstrap", "n_bootstrap_paired", "n_probe_draws", "n_natural_texts", "replication_words", "n_permutations", "random_control",
                          "control_steps", "top_k", "seed", "sae_source"))

# %% [markdown]
# ## Inputs and statistics
# Activations from notebook 01, SAEs from notebook 02 (or, with `MONOSEM_SAE_SOURCE`, SAEs made elsewhere, whose
# hook names decide the layers). Every basis gets the same unit table on the same words; the progress bar counts bases.

# %%
run = h.open_run(cfg)
h.show_model_banner(run.spec)
device = h.pick_device(cfg.device)
layers, presets, preset = h.analysed_saes(run)  # the analysed preset is fixed in advance (auto: topk when trained), never chosen by its outcome
criterion = h.Criterion.from_config(cfg)
specificity = h.Specificity(alpha=cfg.alpha, seed=cfg.seed)
model, tokenizer = h.load_model(run.spec, device)
lexicon = h.load_lexicon()  # concept lexicons from WordNet's hyponym hierarchy (not the evaluation words)
natural = h.natural_tokens(model, tokenizer, run.corpus.heldout_texts()[: cfg.n_natural_texts], layers, h.lexicon_labeller(lexicon), run.massive_norms())
print(f"natural text: {natural.n_tokens:,} held-out corpus tokens, {(natural.label >= 0).sum():,} of them words of a category's lexicon")
overrides = {p: h.preset_overrides(p, cfg.sae_expansion, cfg.sae_k) for p in presets if p in h.PRESETS}
bases = h.standard_bases(run.paths, presets, run.caches, cfg.seed, overrides, mlp_signed=h.mlp_signed(run.spec),  # a gated MLP's neurons are signed: ± units
                         massive=run.massive_norms(), untrained=[preset])  # the untrained SAE: same architecture and L0 (external: a fresh one of its shape)
replicates = [h.trained_sae_basis(run.paths, h.seed_variant(preset, k)) for k in range(1, cfg.n_seeds) if preset in h.PRESETS]
seed_bases = [b for b in bases if isinstance(b, h.SAEBasis) and b.trained and b.preset == preset] + replicates  # the analysed preset, seed 0 first
comparison = h.compare_bases(bases, run.df, run.concepts, layers, cfg.pooling, cfg.threshold, criterion, cfg.n_bootstrap,
                             specificity=specificity, natural=natural)
nulls = dict(specificity=specificity, natural=natural, selective_label=False)  # seeds and nulls: the new metrics only (the earlier label takes time)
comparison = comparison.merged(h.compare_bases(replicates, run.df, run.concepts, layers, cfg.pooling, cfg.threshold, criterion, cfg.n_bootstrap, **nulls))
rates = h.basis_rates(comparison.sae(preset))  # per layer: the share of words / corpus tokens each of the analysed SAE's units fires on
mlp_basis = next(b for b in bases if isinstance(b, h.MLPBasis))
matched = [h.RateMatched(mlp_basis, rates, f"SAE ({preset})"), h.RateMatched(h.ResidualBasis(rotation_seed=cfg.seed), rates, f"SAE ({preset})")]
comparison = comparison.merged(h.compare_bases(matched, run.df, run.concepts, layers, cfg.pooling, cfg.threshold, criterion, cfg.n_bootstrap, **nulls))
if cfg.random_control:  # the same preset as analysed (or, for SAEs made elsewhere, the modern L1 recipe), on a reduced budget
    control_preset = preset if preset in h.PRESETS else "l1"
    control = h.random_control_bases(cfg.data_path, run.spec, run.df, layers, run.background.texts(), control_preset, cfg.control_steps, 256,
                                     cfg.seed, device, **h.preset_overrides(control_preset, cfg.sae_expansion, cfg.sae_k))
    comparison = comparison.merged(h.compare_bases(control, run.df, run.concepts, layers, cfg.pooling, cfg.threshold, criterion, cfg.n_bootstrap,
                                                   specificity=specificity, selective_label=False))  # its own tokens are not natural-text tokens
tables = comparison.sae(preset)
for L in layers:
    t = tables[L]
    assert t["score_reference"].between(0, 1).all() and t["replication"].between(0, 1).all(), f"layer {L}: scores and replication must lie in [0, 1]"
    means = t[[f"mean_{c}" for c in h.CATEGORIES]].to_numpy()
    top = means.argmax(1)
    assert (top[t["selective"].to_numpy()] < len(h.CONCEPTS)).all(), f"layer {L}: a selective unit has a control category on top; the criterion is broken"
    assert t.loc[t["specific"], "concept"].isin(h.CONCEPTS).all(), f"layer {L}: a specific unit's category is a control; the label is broken"
    print(f"layer {L}: {len(t)} {preset} features scored on {run.df.word.nunique()} words ({cfg.pooling} pooling of features encoded per token)")

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
# ## Per layer: the reference criterion, the earlier label and the label `specific`
# The reference's summary line with the earlier label's counts; below, the top specific features (most sensitive first)
# with both labels' statistics: `specificity_templates` (when it fires, the share of its concept), `sensitivity`
# (the share of its concept it fires on), `density_words`, `specificity_corpus` (top-20 natural-text tokens that are
# words of its concept), and the earlier label's `replication` and `auroc_heldout`. `surface_form_balance`: numbers
# are written in digits or spelled out, some emotion words end in *-ed* and most action words in *-ing*; the balance is
# the unit's mean activation on the words of one form divided by that on the other (smaller over larger): a specific
# unit with a balance near 0 is a feature of the form (digits), which its low sensitivity also shows.

# %%
summaries = {L: h.layer_summary(tables[L], cfg.threshold) for L in layers}
for L in layers:
    print(h.summary_line(L, summaries[L]) + f"; {int(tables[L]['specific'].sum())} specific")
cols = ["feature", "concept", "specificity_templates", "specificity_heldout", "sensitivity", "density_words", "density_tokens", "specificity_corpus",
        "separability", "score_reference", "selective", "replication", "auroc_heldout", "surface_form_balance"]
best = pd.concat({L: tables[L].set_index("feature").loc[h.top_features(tables[L].loc[tables[L]["specific"]], cfg.top_k)].reset_index()[cols]
                  for L in layers}, names=["layer", "rank"])
best.style.format(precision=3).set_caption(f"{run.spec.used}: specific {preset} features, most sensitive first")

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
# ## Specificity and sensitivity, apart
# Monosemanticity is first *specificity*: when a unit fires, is it one concept? A unit **fires** on a word at ≥ 5% of its
# maximum over the words (a dense basis marked "@ … density" instead fires on its top share of words, the share the analysed
# SAE's units fire on: the density-matched null). Per basis and layer, medians over the units that fire on ≥ 3 words:
# `specificity_median` (P(its top category | it fires); beside it, the same with the words' categories shuffled),
# `fraction_specific` (the label `specific`: a concept on top, specificity ≥ 0.8 on all words and on held-out words,
# a hypergeometric p < α; beside it, what shuffled categories give), `sensitivity_median_specific` (P(fires | a word of
# its concept) of the specific units), `separability_median` (Jensen–Shannon distance of the 8 per-category
# activation histograms), the densities, and on held-out natural text `specificity_corpus_median_specific` (the share
# of a specific unit's top-20 tokens that are words of its concept in the WordNet lexicon) against units of the same
# basis with the same corpus firing rate (`specificity_corpus_random_matched`). Density stands beside every metric:
# a dense basis fires on everything, which no specificity survives.

# %%
print("concept lexicon (WordNet hyponyms of each category's root synsets; natural text only): "
      + "; ".join(f"{c}: {d['size']:,} words, e.g. {', '.join(d['samples'][:5])}" for c, d in lexicon.describe(n_samples=5, seed=cfg.seed).items()))
spec_cols = ["density_words_median", "density_tokens_median", "specificity_median", "specificity_median_shuffle", "fraction_specific",
             "fraction_specific_shuffle", "n_specific", "sensitivity_median_specific", "separability_median", "specificity_corpus_median_specific",
             "specificity_corpus_random_matched"]
scorecard.set_index(["basis", "layer"])[spec_cols].style.format(precision=3).format("{:,}", subset=["n_specific"]) \
    .format("{:.1%}", subset=["density_words_median", "density_tokens_median", "fraction_specific", "fraction_specific_shuffle"]) \
    .set_caption(f"{run.spec.used}: specificity and sensitivity per basis and layer (the reference preset is a dense autoencoder)")

# %% [markdown]
# ## The headline: are SAE features more monosemantic than the model's own neurons?
# Paired on the same words: the analysed SAE (seed 0) against the MLP neurons, each thresholded so that the neurons'
# firing rates have the SAE's distribution (the densest neuron gets the densest feature's rate), and against the
# untrained SAE of the same architecture and L0 (is it training, or the TopK encoder, that makes units specific?), per metric and layer, with a 95% CI over words (a lemma's forms drawn together; the label's metrics by
# half-sampling, coverage and the probe by the bootstrap; `monosem.paired` says why) and the range of the difference over
# the SAE's training seeds. `coverage_k5`: held-out recall of the union of a concept's 5 most sensitive specific units
# (a concept split into several features is covered by its family); `probe_k1`: held-out AUROC of the single best unit.
# A difference whose CI contains 0 is no answer either way.

# %%
untrained = next((b for b in bases if isinstance(b, h.SAEBasis) and not b.trained), None)  # same architecture and L0, never trained
answer = h.headline(seed_bases, mlp_basis, run.df, run.concepts, layers, rates, cfg.pooling, specificity, cfg.n_bootstrap_paired, cfg.seed, untrained)
fig_answer = h.fig_headline(answer, f"{run.spec.used} ({preset} SAE)")
h.save_figure(run.paths, fig_answer, "03_headline", cfg.save_figures)
fig_answer.show()
answer.style.format(precision=3).set_caption(f"{run.spec.used}: SAE ({preset}) − MLP neurons at the SAE's density, and − the untrained SAE, "
                                             f"paired over words; seed_min/seed_max over {len(seed_bases)} training seed(s)")

# %% [markdown]
# ## Probes and coverage
# The k = 1 probe is the primary probe score: the single unit with the largest mean difference on half of the words,
# scored by its held-out AUROC, in four settings (all other words as negatives; only 5 training words per category;
# only the other concepts as negatives; fitted on the templates and scored on held-out natural text), with 95% bootstrap
# CIs over words (texts for natural text); k = 5 (a logistic probe on 5 units) is a sanity row, near its ceiling for every
# basis. Coverage allows feature splitting: per concept, the held-out recall and precision of the union of its k = 1, 2, 5
# most sensitive specific units (a family such as "red", "blue", "green" features covers *colors* together).

# %%
neutral_rows = h.frame_rows(run.df, "neutral")
probe_bases = [seed_bases[0]] + [b for b in bases if isinstance(b, (h.ResidualBasis, h.MLPBasis)) or (isinstance(b, h.SAEBasis) and not b.trained)]
probe_rows, coverage_rows = [], []
for basis in probe_bases:
    for L in layers:
        words = h.word_data(basis.activations(run.concepts, L, cfg.pooling)[0][neutral_rows], run.df.loc[neutral_rows])
        groups = h.lemma_groups(words.words, words.category)
        table = h.probe_table(words.means(), words.category, groups, len(h.CONCEPTS), cfg.n_probe_draws, cfg.seed)
        tokens = basis.token_activations(natural, L)
        if tokens is not None:
            table = pd.concat([table, pd.DataFrame([h.natural_probe(words.means(), words.category, len(h.CONCEPTS), tokens.numpy(), natural.label,
                                                                    natural.text, cfg.n_probe_draws, cfg.seed)])])
        probe_rows.append(table.assign(basis=basis.name, layer=L))
probes = pd.concat(probe_rows, ignore_index=True)
display(probes.pivot_table(index=["basis", "setting", "k"], columns="layer", values="auroc").style.format("{:.3f}")
        .set_caption(f"{run.spec.used}: held-out AUROC of k-sparse probes (CIs in the long table below and in summary.json)"))
for basis, rate in [(seed_bases[0], None), (mlp_basis, rates)]:
    for L in layers:
        words = h.word_data(basis.activations(run.concepts, L, cfg.pooling)[0][neutral_rows], run.df.loc[neutral_rows])
        word_rate = h.density_matched(words.means(), rate[L][0], specificity.fire_fraction) if rate else None  # the SAE's density distribution
        coverage_rows.append(h.coverage_table(words.means(), words.category, h.lemma_groups(words.words, words.category), list(h.CONCEPTS),
                                              len(h.CATEGORIES), specificity, word_rate)
                             .assign(basis=basis.name + (" @ SAE density" if rate else ""), layer=L))
coverage = pd.concat(coverage_rows, ignore_index=True)
display(coverage.pivot_table(index=["basis", "concept"], columns=["k", "layer"], values="recall").style.format("{:.2f}")
        .set_caption(f"{run.spec.used}: held-out recall of each concept's family of its k best specific units"))
probes.style.format(precision=3).set_caption(f"{run.spec.used}: k-sparse probes with 95% bootstrap CIs")

# %% [markdown]
# ## Replication on a second word list
# A second list, written independently of the first (`scripts/make_wordlist2.py`): 64 words per category drawn from
# WordNet's hyponym hierarchy, none of them in the first list, matched across categories for frequency and tokens per
# word, words with a sense in another category left out, in the same 4 neutral frames. Its words are rarer than the first
# list's (WordNet's common words went to the first list). The same bases, label and paired comparison; the analysed
# SAE's density on these words sets the neurons' threshold.

# %%
df2 = h.load_concepts(cfg.replication_path)
cache2 = h.load_or_extract_concepts(run.paths, run.spec, df2, layers, cfg.batch_size, device, model_and_tokenizer=(model, tokenizer))
print(f"second list: {df2.word.nunique()} words ({df2.groupby('concept').word.nunique().min()}+ per category), {len(df2):,} sentences; "
      f"e.g. " + "; ".join(f"{c}: {', '.join(g.word.unique()[:4])}" for c, g in df2.groupby("concept")))
replication_bases = [seed_bases[0], mlp_basis] + [b for b in bases if isinstance(b, h.SAEBasis) and not b.trained]  # analysed SAE, neurons, untrained SAE
comparison2 = h.compare_bases(replication_bases, df2, cache2, layers, cfg.pooling, cfg.threshold, criterion, cfg.n_bootstrap, **nulls)
rates2 = h.basis_rates(comparison2.sae(preset))
comparison2 = comparison2.merged(h.compare_bases([h.RateMatched(mlp_basis, rates2, f"SAE ({preset})")], df2, cache2, layers, cfg.pooling,
                                                 cfg.threshold, criterion, cfg.n_bootstrap, **nulls))
answer2 = h.headline(seed_bases, mlp_basis, df2, cache2, layers, rates2, cfg.pooling, specificity, cfg.n_bootstrap_paired, cfg.seed, untrained)
fig_answer2 = h.fig_headline(answer2, f"{run.spec.used} ({preset} SAE), second word list")
h.save_figure(run.paths, fig_answer2, "03_headline_list2", cfg.save_figures)
fig_answer2.show()
display(comparison2.scorecard.set_index(["basis", "layer"])[spec_cols].style.format(precision=3).format("{:,}", subset=["n_specific"])
        .format("{:.1%}", subset=["density_words_median", "density_tokens_median", "fraction_specific", "fraction_specific_shuffle"])
        .set_caption(f"{run.spec.used}: specificity and sensitivity on the second word list"))
answer2.style.format(precision=3).set_caption(f"{run.spec.used}: SAE ({preset}) − MLP neurons at the SAE's density on the second word list")

# %% [markdown]
# ## Causal test with a concept readout
# Does a specific feature's direction carry its concept *into the model's predictions*? At its layer, on held-out corpus
# texts, each of the top specific features is **ablated** (its decoder contribution removed where it fires) and
# **steered** along (its unit decoder direction added at every position, one norm for all edits of the layer), and the
# change of the next-token log-probability mass on its concept's words (WordNet lexicon words that are one token) is read
# out: ablation should lower it, steering raise it, more than for the other concepts. Beside each feature: the most
# specific MLP neuron of the same concept at the SAE's density (its positive part: zeroed, or steered along its output
# weights) and a random direction with the same per-position edit norms as the feature's ablation. The feature and the
# neuron act at different positions and norms, so read the per-norm comparison as a rough one. `specificity_effect` is the own-concept change minus the other concepts' mean, per unit
# of edit norm; the kinds are compared by the mean over units with a bootstrap CI and a permutation p.

# %%
readout_rows = []
if h.is_causal_lm(model):
    ids = h.concept_token_ids(tokenizer, {c: sorted(lexicon.words[c]) for c in h.CONCEPTS})
    readout_texts = run.corpus.heldout_texts()[: cfg.n_readout_texts]
    clean = h.clean_readout(model, tokenizer, readout_texts, layers, ids)
    matched_tables = comparison.of(matched[0].name)
    for L in layers:
        picked = h.pick_by_concept(tables[L], cfg.n_readout_features, h.CONCEPTS)  # in turn from each concept, most sensitive first
        if not picked:
            continue
        features, concepts = [f for f, _ in picked], [c for _, c in picked]
        d_mlp = h.mlp_output_weight(model, L).shape[1]
        neuron_of = {c: [u for u, _ in h.pick_by_concept(matched_tables[L], 10**6, [c], specific_only=False) if u < d_mlp] for c in set(concepts)}
        neurons = []
        for c in concepts:  # the most specific neuron of the concept not taken yet, its positive part only (steering adds +w_n)
            neurons.append(next(n for n in neuron_of[c] if n not in neurons))
        readout_rows.append(h.concept_edit_effects(model, tokenizer, L, readout_texts, comparison.sae_of(preset, L), features, concepts, neurons, concepts,
                                                   ids, n_random=len(features), seed=cfg.seed, clean=clean))
readout = pd.concat(readout_rows, ignore_index=True) if readout_rows else pd.DataFrame()
if len(readout):
    display(h.kind_contrast(readout, seed=cfg.seed).style.format(precision=4)
            .set_caption(f"{run.spec.used}: specificity_effect (own concept − others, nats per unit of edit norm), kinds compared over units"))
    display(readout.style.format(precision=4).set_caption(f"{run.spec.used}: concept readout of each edit"))
else:
    print("concept readout: the model is an encoder (no next-token probabilities), or no feature is specific")

# %% [markdown]
# ## Logit lens
# Each top specific feature's decoder direction read through the final norm and unembedding: which tokens it writes directly.

# %%
lens_rows, lens_words = [], {}
neutral = run.df[h.frame_rows(run.df, "neutral")].drop_duplicates("word").reset_index(drop=True)  # one neutral sentence per word
if h.is_causal_lm(model):
    for L in layers:
        t = tables[L]
        features = h.top_features(t.loc[t["specific"]], cfg.top_k)
        if not features:
            continue
        concepts = t.set_index("feature").loc[features, "concept"].to_numpy()
        lens = h.logit_lens(model, comparison.sae_of(preset, L), features, tokenizer, k=8)
        ranks = h.concept_token_rank(model, comparison.sae_of(preset, L), features, tokenizer, neutral, concepts)
        lens_rows += [{"layer": L, "feature": f, "concept": c, "top_tokens": d["top_tokens"], "concept_auroc": float(r)}
                      for f, c, d, r in zip(features, concepts, lens, ranks)]
    lens_words = h.shared_first_tokens(tokenizer, run.df["word"].tolist())  # a word is scored by its first token: shared ones tie
if lens_rows:
    lens_table = pd.DataFrame(lens_rows)
    display(lens_table.assign(top_tokens=lens_table["top_tokens"].map(", ".join)).style.format({"concept_auroc": "{:.2f}"})
            .set_caption(f"{run.spec.used}: logit lens of the top specific {preset} features (concept_auroc: its concept's words against all others)"))
    print(f"median concept AUROC {lens_table['concept_auroc'].median():.2f}; {(lens_table['concept_auroc'] > 0.75).sum()} of {len(lens_table)} above 0.75. "
          f"Layers {layers} of {len(h.get_blocks(model))}: an early direction reaches the logits only through every later block, so noise-like "
          "top tokens and AUROCs near 0.5 are what to expect; they say the direction does not write its concept's tokens directly. "
          f"{lens_words['n_sharing']} of the {lens_words['n_words']} words share their first token with another word, e.g. {'; '.join(lens_words['examples'][:2])}.")
else:
    print("logit lens: the model has no unembedding (an encoder), or no feature is specific")

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
summary = h.build_summary(cfg, run.spec, layers, presets, comparison, sae_metrics, criterion, h.reference_study_json(reference), preset, lens_rows, lens_words,
                          specificity=specificity.describe(), headline={"first word list": answer, "second word list": answer2},
                          replication=comparison2.scorecard_json(), probes=probes, coverage=coverage, lexicon=lexicon.describe(n_samples=8, seed=cfg.seed),
                          natural_text={"texts": cfg.n_natural_texts, "tokens": natural.n_tokens, "lexicon_tokens": int((natural.label >= 0).sum())},
                          causal_readout=readout, causal_contrast=h.kind_contrast(readout, seed=cfg.seed) if len(readout) else [])
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
