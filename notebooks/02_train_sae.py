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
# # 02 · Train sparse autoencoders per layer
#
# Trains SAEs on the token activations of each layer (concept sentences + background corpus) with
# three presets, and reports for every preset and layer how good they are:
#
# * `reference`: the reference study's setup: ReLU encoder, linear decoder, hidden size
#   `d_model // 2`, L1 weight 0.1 on the feature activations, Adam, fixed seed;
# * `l1`: expansion 8, inputs scaled to mean norm √d_in, `b_dec` at the data mean, L1 weighted by
#   decoder norms, learning-rate warm-up and decay, L1 warm-up (Anthropic, April 2024);
# * `topk`: TopK activation (k = 32), unit-norm decoder rows, AuxK loss on dead features (OpenAI, 2024).
#
# The metrics are MSE, fraction of variance explained, L0, dead and dense fractions, and a downstream
# fidelity check: the SAE reconstruction is spliced into layer L and the model's output compared.
# Each SAE is saved in the SAELens format under `data/saes/<model>/[<preset>/]layer_<L>/`; one
# already trained with the same data and settings is loaded instead of retrained.
#
# **Previous:** [01 · Extract activations](01_extract_activations.ipynb) · **Next:** [03 · Selectivity](03_selectivity.ipynb)

# %%
import pandas as pd

import helpers as h

# %% tags=["parameters"]
OVERRIDES: dict = {}  # e.g. {"sae_steps": 2000}; anything not set here comes from MONOSEM_* variables or the defaults
cfg = h.RunConfig.from_env(**OVERRIDES)
pd.DataFrame(cfg.settings("model", "layers", "sae_presets", "sae_steps", "sae_batch", "sae_expansion", "sae_k", "seed", "device"))

# %% [markdown]
# ## Inputs
# Notebook 01's run: the token activations of the concept sentences and of the background corpus, and the held-out texts.

# %%
run = h.open_run(cfg)
h.show_model_banner(run.spec)
device = h.pick_device(cfg.device)
print(f"seed = {h.set_seed(cfg.seed)}")
overrides = {p: h.preset_overrides(p, cfg.sae_expansion, cfg.sae_k) for p in cfg.sae_presets}
print(f"training tokens per layer: {run.concepts.n_tokens} (concept sentences) + {run.background.n_tokens} (background)")
pd.DataFrame([{"preset": p, **h.PRESETS[p], **overrides[p]} for p in cfg.sae_presets]).set_index("preset")

# %% [markdown]
# ## Train
# One SAE per preset and layer; the progress bar counts optimiser steps.

# %%
records = {}
for p in cfg.sae_presets:
    for L in run.layers:
        _, records[p, L] = h.train_or_load_sae(run.paths, run.spec, run.caches, L, p, cfg.sae_steps, cfg.sae_batch, cfg.seed, device, **overrides[p])

# %% [markdown]
# ## Loss per step
# The total loss should fall and flatten; the dotted line is the reconstruction part. Presets use different loss scales, so compare shapes, not heights.

# %%
for p in cfg.sae_presets:
    fig = h.fig_loss_curves({L: records[p, L]["history"] for L in run.layers}, f"{run.spec.used} ({p} preset)")
    h.save_figure(run.paths, fig, f"02_loss_curves_{p}", cfg.save_figures)
    fig.show()

# %% [markdown]
# ## Downstream fidelity
# Each SAE's reconstruction replaces layer L's residual stream (special tokens untouched) on the held-out
# background texts. For a causal LM: the CE loss recovered, `(CE_zero - CE_sae) / (CE_zero - CE_clean)` (and
# against mean ablation); for an encoder like the bundled model: the cosine similarity of the final-layer
# output with and without the splice (1 = unchanged; zero and mean ablation give the floor).

# %%
model, tokenizer = h.load_model(run.spec, device)
fidelity = {}
for L in run.layers:
    mean_act = h.TokenSource.from_caches(run.caches, L).mean_and_norm()[0]  # for mean ablation
    for p in cfg.sae_presets:
        sae, _ = h.load_sae(run.paths.sae(L, p))
        fidelity[p, L] = h.splice_fidelity(model, tokenizer, run.eval_texts, L, sae, mean_act)
pd.DataFrame(fidelity).T.rename_axis(["preset", "layer"])

# %% [markdown]
# ## How good is each SAE?
# `fve` is the fraction of variance explained, `1 - Σ‖x - x̂‖² / Σ‖x - mean(x)‖²` (SAELens's eval reports another
# formula); `l0` the mean number of active features per token; `dead_fraction` the share of features never
# active on the training tokens; `dense_fraction` the share active on more than 10% of them.

# %%
rows = [{"preset": p, "layer": L, **records[p, L]["metrics"], "fidelity": fidelity[p, L]["fidelity"],
         "train_tokens_per_s": records[p, L]["tokens_per_second"]} for p in cfg.sae_presets for L in run.layers]
metrics = pd.DataFrame(rows)
for r in metrics.itertuples():
    assert r.fve > 0, f"{r.preset}, layer {r.layer}: the SAE reconstructs worse than the mean vector; train longer (MONOSEM_SAE_STEPS)"
    assert 0 <= r.dead_fraction <= 1 and r.l0 <= r.d_sae, f"{r.preset}, layer {r.layer}: metrics out of range"
    if r.preset == "topk":  # TopK keeps k features, then (as in SAELens) a ReLU drops any of them that is not positive
        assert cfg.sae_k - 0.05 <= r.l0 <= cfg.sae_k, f"layer {r.layer}: a TopK SAE must have L0 = k = {cfg.sae_k}, got {r.l0}"
        print(f"topk, layer {r.layer}: L0 = {r.l0:.4f} ({'exactly k' if r.l0 == cfg.sae_k else 'a few tokens have fewer than k positive pre-activations'})")
metrics.style.format(precision=4).set_caption(f"{run.spec.used}: SAE metrics per preset and layer")

# %% [markdown]
# ## Sparsity vs. reconstruction
# Up and to the left is better: fewer active features per token for the same variance explained.

# %%
fig = h.fig_preset_comparison(metrics, run.spec.used)
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

# %%
per_preset = {p: {str(L): {**records[p, L]["metrics"], **fidelity[p, L], "seconds": records[p, L]["seconds"]} for L in run.layers}
              for p in cfg.sae_presets}
path = h.write_sae_metrics(run.paths, h.SaeMetricsFile(run.spec.asked, run.spec.used, cfg.sae_steps, cfg.sae_batch, cfg.seed, per_preset))
for p in cfg.sae_presets:
    print(f"{p}: {run.paths.sae(run.layers[0], p).parent}")
print(f"metrics: {path}")

# %% [markdown]
# Each SAE folder holds `cfg.json` and `sae_weights.safetensors` (loadable with SAELens's
# `SAE.load_from_disk`; the input scaling of `l1`/`topk` is folded into the weights) and `training.json`
# (settings, the loss at every step, metrics).
#
# **Next:** [03 · Selectivity](03_selectivity.ipynb)
