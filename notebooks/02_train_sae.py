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
# # 02 · Train sparse autoencoders per layer
#
# Trains SAEs on the residual stream of each layer with several presets, on the general-English corpus
# of notebook 01 (the concept sentences are never training data), and reports for every preset and
# layer how good they are:
#
# * `reference`: the reference study's setup: ReLU encoder, linear decoder, hidden size
#   `d_model // 2`, L1 weight 0.1 on the feature activations, Adam, fixed seed;
# * `l1`: d_sae = `MONOSEM_SAE_EXPANSION` × d_model (default 4), inputs scaled to mean norm √d_in, `b_dec` at
#   the data mean, L1 weighted by decoder norms, learning-rate warm-up and decay, L1 warm-up (Anthropic, April 2024);
# * `topk`: the same width, TopK activation (k = 32), unit-norm decoder rows, AuxK loss on dead features (OpenAI, 2024);
# * `matryoshka`: the same width, BatchTopK (k = 32 on average) with the reconstruction loss summed over nested
#   prefixes of the dictionary (Bussmann et al., 2025).
#
# **One pass for all layers:** the model runs once over the corpus; a streaming activation store mixes
# the residual stream of every layer in a shuffled buffer (as SAELens's `ActivationsStore` does) and
# each batch trains every preset of that layer. Training length is set in tokens per SAE.
# The metrics (FVE, L0, dead and dense fractions) are measured on **held-out** corpus texts, the
# downstream fidelity check splices each SAE into layer L on held-out texts, and the loss change over
# the last 10% of steps says whether training levelled off. Each SAE is saved in the SAELens format
# under `data/saes/<model>/[<preset>/]layer_<L>/`; one already trained with the same data and settings
# is loaded instead of retrained.
#
# **Previous:** [01 · Extract activations](01_extract_activations.ipynb) · **Next:** [03 · Selectivity](03_selectivity.ipynb)

# %%
import pandas as pd

import helpers as h

# %% tags=["parameters"]
OVERRIDES: dict = {}  # e.g. {"sae_train_tokens": 2_000_000}; anything not set here comes from MONOSEM_* variables or the defaults
cfg = h.RunConfig.from_env(**OVERRIDES)
pd.DataFrame(cfg.settings("model", "layers", "massive_factor", "sae_presets", "sae_train_tokens", "sae_batch", "sae_workers", "sae_buffer_tokens", "sae_expansion", "sae_k", "seed", "n_seeds",
                          "device", "n_fidelity_texts"))

# %% [markdown]
# ## Inputs
# Notebook 01's run: the model, the corpus (its training texts are streamed through the model here), the
# activations of a corpus sample (they initialise every SAE) and of the held-out texts. The plan resolves
# unset settings to the defaults for this model size and device.

# %%
run = h.open_run(cfg)
h.show_model_banner(run.spec)
h.show_corpus_banner(run.corpus.spec)
device = h.pick_device(cfg.device)
print(f"seed = {h.set_seed(cfg.seed)}")
model, tokenizer = h.load_model(run.spec, device)
plan = h.training_plan(cfg.sae_train_tokens, cfg.sae_batch, cfg.sae_buffer_tokens, model.config.hidden_size, device, cfg.sae_workers)
corpus = run.corpus_title
title = f"{run.spec.used} · trained on {corpus}"  # every figure title names the model and the corpus
print(f"plan ({plan.why}): {plan.tokens_per_sae:,} tokens per SAE = {plan.steps} steps x {plan.batch_size} tokens; "
      f"corpus: {corpus}, {run.corpus_tokens:,} training tokens ({plan.tokens_per_sae / run.corpus_tokens:.2f} passes); "
      f"shuffle buffer: {plan.buffer_tokens:,} tokens per layer; {plan.workers} thread(s) step the SAEs")
overrides = {p: h.preset_overrides(p, cfg.sae_expansion, cfg.sae_k) for p in cfg.sae_presets}
jobs = [h.SAEJob(p, L, overrides[p]) for p in cfg.sae_presets for L in run.layers]
analysed = cfg.analysed()  # the preset notebook 03 analyses: it also trains with seeds seed+1 .. seed+n_seeds-1, for the headline's spread
replicates = [h.SAEJob(analysed, L, overrides[analysed], k) for k in range(1, cfg.n_seeds) for L in run.layers if analysed in overrides]
print(f"analysed preset {analysed}: {cfg.n_seeds} seed(s), saved as {[h.seed_variant(analysed, k) for k in range(cfg.n_seeds)]}")
pd.DataFrame([{"preset": p, **h.PRESETS[p], **overrides[p]} for p in cfg.sae_presets]).set_index("preset")

# %% [markdown]
# ## Train
# One pass of the model over the corpus trains every SAE that is not saved yet; the progress bar counts
# optimiser steps (each step trains every SAE on one batch of its layer).

# %%
massive = run.massive_norms()  # tokens above these norms (any layer) are massive activations: left out of training (notebook 01 shows them)
store = h.ActivationStore(model, tokenizer, run.corpus.train_texts(), run.layers, cfg.batch_size, plan.buffer_tokens, cfg.seed, device, massive=massive)
trained = h.train_or_load_saes(run.paths, run.spec, jobs + replicates, plan, store, run.caches, run.heldout, corpus, cfg.seed, device)
records = {jk: record for jk, (_, record) in trained.items()}
if store.tokens_run:
    print(f"the model ran once for all {len(jobs) + len(replicates)} SAEs: {store.tokens_run:,} corpus tokens in {store.model_seconds:.0f} s ({store.epochs} pass(es) over the corpus); "
          f"{store.tokens_massive:,} massive-activation tokens left out ({store.tokens_massive / max(store.tokens_run + store.tokens_massive, 1):.1%})")
else:
    print("every SAE was loaded: trained earlier with these settings")

# %% [markdown]
# ## Loss per step
# The total loss should fall and flatten; the dotted line is the reconstruction part. Presets use different loss scales, so compare shapes, not heights.

# %%
for p in cfg.sae_presets:
    fig = h.fig_loss_curves({L: records[p, L]["history"] for L in run.layers}, f"{title} ({p} preset)")
    h.save_figure(run.paths, fig, f"02_loss_curves_{p}", cfg.save_figures)
    fig.show()

# %% [markdown]
# ## Did training finish?
# `loss_change_last10pct` compares the mean loss over the last 5% of steps with the mean over the 5% of steps
# just before the last 10%: near 0, the loss has levelled off; clearly negative, it is still falling and more
# tokens (`MONOSEM_SAE_TOKENS`) would help. Part of the late fall is the learning-rate decay of the
# `l1` and `topk` presets. A still-falling loss is reported, not an error.

# %%
finish = pd.DataFrame([{"preset": p, "layer": L, "train_tokens": records[p, L]["train_tokens"], "steps": len(records[p, L]["history"]),
                        "loss_change_last10pct": records[p, L]["loss_change_last10pct"]} for p in cfg.sae_presets for L in run.layers])
finish["levelled off (> -2%)"] = finish["loss_change_last10pct"] > -0.02
finish.style.format({"loss_change_last10pct": "{:+.2%}"}).set_caption(f"{title}: loss change over the last 10% of steps")

# %% [markdown]
# ## Downstream fidelity
# Each SAE's reconstruction replaces layer L's residual stream (special tokens untouched) on held-out corpus
# texts. For a causal LM: the CE loss recovered, `(CE_zero - CE_sae) / (CE_zero - CE_clean)` (and against mean
# ablation); for an encoder like the bundled model: the cosine similarity of the final-layer output with and
# without the splice (1 = unchanged; zero and mean ablation give the floor).

# %%
fidelity = {}
for L in run.layers:
    mean_act = h.TokenSource.from_caches(run.caches, L).mean_and_norm()[0]  # for mean ablation
    per_sae = h.splice_fidelity_many(model, tokenizer, run.fidelity_texts(), L, {p: trained[p, L][0] for p in cfg.sae_presets}, mean_act)
    fidelity.update({(p, L): per_sae[p] for p in cfg.sae_presets})
fid = pd.DataFrame(fidelity).T.rename_axis(["preset", "layer"])
kind = fid.pop("kind").iloc[0] if "kind" in fid else "fidelity"
fid.style.format(precision=3).set_caption(f"{title}: downstream fidelity ({kind}) on {len(run.fidelity_texts())} held-out texts")

# %% [markdown]
# ## How good is each SAE?
# On the held-out tokens: `fve_heldout` is the fraction of variance explained, `1 - Σ‖x - x̂‖² / Σ‖x - mean(x)‖²`
# (SAELens's eval reports another formula), on the tokens that are not massive activations (the SAEs never trained
# on those; notebook 01 shows which they are), and `fve_heldout_all_tokens` the same with them; `l0` the mean number of active features per token; `dead_fraction`
# the share of features never active on them; `dense_fraction` the share active on more than 10% of them.
# The table is saved to `sae_metrics.json` before the checks below run, so a failed check never loses the training.
# `fidelity` is the CE loss recovered for a causal LM and the output cosine for an encoder (see above).

# %%
per_preset = {p: {str(L): h.sae_metrics_entry(records[p, L], fidelity[p, L]) for L in run.layers} for p in cfg.sae_presets}
path = h.write_sae_metrics(run.paths, h.SaeMetricsFile(run.spec.asked, run.spec.used, corpus, plan.tokens_per_sae, plan.batch_size, cfg.seed, per_preset))
metrics = pd.DataFrame([{"preset": p, "layer": L, **per_preset[p][str(L)]} for p in cfg.sae_presets for L in run.layers])
print(f"metrics: {path}")
shown = ["preset", "layer", "d_sae", "train_tokens", "fve_heldout", "fve_heldout_all_tokens", "l0", "dead_fraction", "dense_fraction", "fidelity", "loss_change_last10pct", "tokens_per_second"]
metrics[shown].set_index(["preset", "layer"]).style.format(
    {"d_sae": "{:,}", "train_tokens": "{:,}", "fve_heldout": "{:.3f}", "fve_heldout_all_tokens": "{:.3f}", "l0": "{:.1f}", "dead_fraction": "{:.1%}", "dense_fraction": "{:.1%}",
     "fidelity": "{:.3f}", "loss_change_last10pct": "{:+.2%}", "tokens_per_second": "{:,.0f}"}).set_caption(f"{title}: SAE metrics per preset and layer on {int(metrics['heldout_tokens'].iloc[0]):,} held-out tokens")

# %% [markdown]
# The checks. Errors stop the notebook (after the saving above): metrics out of range, or an L0 the architecture
# cannot produce (a TopK SAE keeps *at most* k features per token: the ReLU drops chosen pre-activations that are
# not positive, so L0 < k is legitimate). Warnings are findings, listed here and in `sae_metrics.json`: an SAE
# that reconstructs held-out tokens worse than their mean vector (the reference recipe can, on a random-weight
# model), or a loss still falling by more than 2% over the last 10% of steps.

# %%
problems = []
for r in metrics.itertuples():
    sae = trained[r.preset, r.layer][0]
    if not (0 <= r.dead_fraction <= 1 and 0 <= r.l0 <= r.d_sae and r.train_tokens == plan.tokens_per_sae):
        problems.append(f"{r.preset}, layer {r.layer}: metrics out of range (l0 {r.l0}, dead fraction {r.dead_fraction}, train tokens {r.train_tokens})")
    if (why := sae.l0_problem(r.l0)) is not None:
        problems.append(f"{r.preset}, layer {r.layer}: {why}")
assert not problems, "checks failed (the SAEs and sae_metrics.json are saved):\n" + "\n".join(problems)
warned = [{"preset": r.preset, "layer": r.layer, "warning": w} for r in metrics.itertuples() for w in r.warnings]
print(f"all {len(metrics)} SAEs pass the checks; {len(warned)} warning(s). L0 of the k-sparse presets: "
      + ", ".join(f"{r.preset} L{r.layer} {r.l0:.2f}" for r in metrics.itertuples() if "k" in overrides[r.preset]))
pd.DataFrame(warned, columns=["preset", "layer", "warning"])

# %% [markdown]
# ## Sparsity vs. reconstruction
# Up and to the left is better: fewer active features per token for the same variance explained on held-out tokens.

# %%
fig = h.fig_preset_comparison(metrics, title)
h.save_figure(run.paths, fig, "02_preset_comparison", cfg.save_figures)
fig.show()

# %% [markdown]
# ## Do the saved SAEs load in SAELens?
# Each saved folder is loaded with SAELens's `SAE.load_from_disk` and must give the same feature activations
# and reconstructions as this project's code (to 1e-5), on the layer's concept-sentence tokens.

# %%
for p in cfg.sae_presets:
    for L in run.layers:
        result = h.check_saelens_roundtrip(run.paths.sae(L, p), run.concepts.tokens(L)[:2000])
        print(f"{p}, layer {L}: {result}")

# %% [markdown]
# ## Saved
# Each SAE folder holds `cfg.json` and `sae_weights.safetensors` (loadable with SAELens's
# `SAE.load_from_disk`; the input scaling of `l1`/`topk` is folded into the weights) and `training.json`
# (settings, corpus, training tokens, the loss at every step, held-out metrics, the loss change over the
# last 10% of steps). `sae_metrics.json` collects them with the fidelity per preset and layer.

# %%
for p in cfg.sae_presets:
    print(f"{p}: {run.paths.sae(run.layers[0], p).parent}")
print(f"metrics: {path}")

# %% [markdown]
# ## What we found
# The ranges run over the layers; every number is measured on held-out corpus texts.

# %%
print(f"{len(jobs)} SAEs of {run.spec.used}, trained on {plan.tokens_per_sae:,} tokens each of {corpus} ({len(run.layers)} layers, one model pass).")
for p in cfg.sae_presets:
    m = metrics[metrics.preset == p]
    print(f"{p}: d_sae {int(m.d_sae.iloc[0]):,}; FVE {m.fve_heldout.min():.3f}-{m.fve_heldout.max():.3f}; L0 {m.l0.min():.1f}-{m.l0.max():.1f}; "
          f"dead {m.dead_fraction.max():.1%} at most; fidelity {m.fidelity.min():.3f}-{m.fidelity.max():.3f}; "
          f"loss change over the last 10% of steps {m.loss_change_last10pct.min():+.1%} to {m.loss_change_last10pct.max():+.1%}.")
print(f"{len(warned)} warning(s)" + (": " + "; ".join(f"{w['preset']} layer {w['layer']}: {w['warning']}" for w in warned) if warned else "."))

# %% [markdown]
# **Next:** [03 · Selectivity](03_selectivity.ipynb)
