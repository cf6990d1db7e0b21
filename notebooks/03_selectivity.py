# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Which features are selective for one concept, and is it real?
#
# For every SAE feature, the mean activation over the word-level examples of each concept (numbers,
# emotions, actions, colors) gives the reference study's score `max concept mean / sum of concept means`
# (0 when the sum is 0). The reference study called a feature monosemantic when the score exceeds the
# threshold (default 0.6). Here a feature is called monosemantic only when, in addition, a permutation test
# (concept labels shuffled across *words*) gives a Benjamini–Hochberg q-value below α. Beside the score:
# the class-selectivity index, one-vs-rest AUROC against all other words (control categories included), a
# bootstrap CI over words, and held-out-word agreement. The same analysis runs on the other SAE presets and
# on three baselines (the residual stream, the MLP neurons, an untrained SAE).
#
# **Previous:** [02 · Train SAEs](02_train_sae.ipynb) · **Next:** [04 · Word-level exploration](04_word_level_exploration.ipynb)

# %%
import pandas as pd

import helpers as h

# %% tags=["parameters"]
OVERRIDES: dict = {}  # e.g. {"threshold": 0.8}; anything not set here comes from MONOSEM_* variables or the defaults
cfg = h.RunConfig.from_env(**OVERRIDES)
pd.DataFrame(cfg.settings("model", "layers", "threshold", "alpha", "pooling", "sae_preset", "sae_presets", "n_permutations", "n_bootstrap",
                          "n_splits", "seed", "sae_source"))

# %% [markdown]
# ## Inputs and statistics
# Activations from notebook 01, SAEs from notebook 02 (or, with `MONOSEM_SAE_SOURCE`, SAEs made elsewhere, whose
# hook names decide the layers). Every basis (each SAE preset and the baselines) gets the same statistics on the
# same words; q-values are computed over all units and layers of one basis.

# %%
run = h.open_run(cfg)
h.show_model_banner(run.spec)
layers, presets, preset = h.analysed_saes(run)
bases = h.standard_bases(run.paths, presets, run.caches, cfg.seed)
comparison = h.compare_bases(bases, run.df, run.concepts, layers, cfg.pooling, cfg.threshold, cfg.alpha, cfg.seed,
                             n_perm=cfg.n_permutations, n_boot=cfg.n_bootstrap, n_splits=cfg.n_splits)
tables = comparison.sae(preset)
for L in layers:
    assert tables[L]["score"].between(0, 1).all() and tables[L]["p"].between(0, 1).all(), f"layer {L}: scores and p-values must lie in [0, 1]"
    print(f"layer {L}: {len(tables[L])} {preset} features scored on {len(run.df)} word-level examples ({cfg.pooling} pooling)")

# %% [markdown]
# ## Figure 1: the distribution of selectivity scores
# With four concepts a feature that fires equally on all of them scores 0.25. Grey: all features; red: those
# with q < α. The dashed line is the threshold.

# %%
fig1 = h.fig_selectivity(tables, cfg.threshold, f"{run.spec.used} ({preset} SAE)", cfg.alpha)
h.save_figure(run.paths, fig1, "03_figure1_selectivity", cfg.save_figures)
fig1.show()

# %% [markdown]
# ## The monosemantic features per layer
# The reference count (score > threshold) against the significant count (and q < α); below, the best
# significant features with their statistics. A feature that fires on a single word can reach a high score
# by chance; the permutation test over words catches that.

# %%
summaries = {L: h.layer_summary(tables[L], cfg.threshold, cfg.alpha) for L in layers}
for L in layers:
    print(h.summary_line(L, summaries[L]))
cols = ["feature", "score", "top_concept", "selectivity_index", "auroc", "p", "q", "ci_low", "ci_high", "heldout_agreement"]
sig = pd.concat({L: h.significant(tables[L], cfg.threshold, cfg.alpha)[cols].head(8) for L in layers}, names=["layer"])
sig.style.format(precision=3).set_caption(f"{run.spec.used}: significantly monosemantic {preset} features (score > {cfg.threshold}, q < {cfg.alpha})")

# %% [markdown]
# ## Figure 3: mean activation per concept
# For up to 8 monosemantic features per layer (significant first, highest score first): a selective feature has one tall bar.

# %%
shown = {L: h.top_features(h.monosemantic(tables[L], cfg.threshold), cfg.top_k, cfg.alpha) for L in layers}
fig3 = h.fig_concept_means(tables, shown, f"{run.spec.used} ({preset} SAE)")
h.save_figure(run.paths, fig3, "03_figure3_concept_means", cfg.save_figures)
fig3.show()

# %% [markdown]
# ## Explorer
# Move `layer` and `threshold`: the histograms, both counts (reference and significant) and the list update in place; all values are precomputed.

# %%
explorer = h.SelectivityExplorer(tables, f"{run.spec.used} ({preset} SAE)", cfg.threshold, cfg.alpha)
explorer.widget

# %% [markdown]
# ## Is it real?
# Are SAE features more monosemantic than the model's own units? The same test on: each trained SAE preset;
# the residual stream (each dimension split into its positive and negative part, so every unit is
# non-negative); the MLP neurons of block L (post-activation, GELU's small negative part clipped); and an
# untrained SAE of each preset (its initialisation, never trained). The bar is the fraction of units that are
# significantly monosemantic; `n_reference` is what the reference criterion alone would have counted.

# %%
counts = comparison.counts
display(counts.pivot(index="basis", columns="layer", values="fraction_significant").style.format("{:.1%}")
        .set_caption(f"{run.spec.used}: fraction of units significantly monosemantic (score > {cfg.threshold}, q < {cfg.alpha})"))
fig_bases = h.fig_bases(counts, run.spec.used, cfg.threshold, cfg.alpha)
h.save_figure(run.paths, fig_bases, "03_is_it_real", cfg.save_figures)
fig_bases.show()
counts.style.format(precision=3).set_caption(f"{run.spec.used}: counts per layer and basis")

# %% [markdown]
# ## Results
# `summary.json` gathers, per layer, the counts and averages above (for the analysed preset), the SAE metrics of
# every preset from notebook 02 with their counts, and the baseline fractions; `<preset>/selectivity_layer_<L>.csv`
# has one row per feature of each preset's SAE.

# %%
sae_metrics = h.collect_sae_metrics(run.paths, run.spec, presets, layers, run.caches)
summary = h.build_summary(cfg, run.spec, layers, presets, comparison, sae_metrics)
path = h.write_summary(run.paths, summary)
for p in presets:
    h.write_selectivity_tables(run.paths, p, comparison.sae(p))
print(f"wrote {path} and the per-feature CSVs in {run.paths.results}")
for L in layers:
    print(h.summary_line(L, summaries[L]))

# %% [markdown]
# **Next:** [04 · Word-level exploration](04_word_level_exploration.ipynb)
