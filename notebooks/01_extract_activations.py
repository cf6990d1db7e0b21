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
# # 01 · Extract residual-stream activations
#
# This notebook loads the model (GPT-2 Medium, or the bundled all-MiniLM-L6-v2 when GPT-2 Medium
# cannot be loaded, with a banner saying so), reads and validates the concept dataset
# `data/concepts.csv`, checks that every marked word maps to the right tokens, and extracts the
# residual stream after blocks 0–3 for every sentence: word-level activations (mean over the
# word's tokens; `last` token and the reference study's sentence mean are stored too) and every
# non-special token (the SAE training set). Everything is cached under
# `data/activations/<model>/<key>/`, keyed by a hash of model, revision, layers, dataset and code,
# and the run manifest `data/runs/<model>.json` records what notebooks 02–04 open.
#
# **Next:** [02 · Train one SAE per layer](02_train_sae.ipynb)

# %%
import pandas as pd

import helpers as h

# %% tags=["parameters"]
OVERRIDES: dict = {}  # e.g. {"layers": (0, 1)}; anything not set here comes from MONOSEM_* variables or the defaults
cfg = h.RunConfig.from_env(**OVERRIDES)
pd.DataFrame(cfg.settings("model", "layers", "batch_size", "device", "dtype", "background", "background_tokens", "n_eval_texts"))

# %% [markdown]
# ## The model
# The banner names the model asked for and the one actually analysed; every later title and folder uses the latter.

# %%
spec = h.resolve_model(cfg.model, cfg.hf_hub_offline)
h.show_model_banner(spec)
device = h.pick_device(cfg.device)
model, tokenizer = h.load_model(spec, device)
n_layers = len(h.get_blocks(model))
layers = h.check_layers(cfg.layers, n_layers, spec.used)
paths = h.model_paths(cfg.data_path, spec.used)
print(f"{spec.used}: {n_layers} blocks, d_model = {model.config.hidden_size}, layers analysed: {layers}, device: {device}")

# %% [markdown]
# ## The concept dataset
# Four concepts (numbers, emotions, actions, colors) and four control categories, each with at least 40
# words in at least 5 sentences; 2 of each word's sentences use neutral frames shared by every category.

# %%
df = h.load_concepts(cfg.concepts_path)
overview = df.groupby("concept").agg(words=("word", "nunique"), sentences=("sentence", "size"), concept=("is_concept", "first"))
display(overview)
assert (overview["words"] >= 40).all(), "every category needs at least 40 distinct words: regenerate with scripts/make_concepts.py"
assert df.groupby("word").size().min() >= 5, "every word needs at least 5 sentences"
df.groupby("concept").head(1)[["concept", "word", "sentence"]]

# %% [markdown]
# ## Do the word spans map to the right tokens?
# For every example, the tokens that overlap the word's character span are decoded again; they must spell the word.
# A few examples are shown.

# %%
check = h.word_token_check(tokenizer, df)
display(check.sample(8, random_state=0)[["sentence", "word", "word_tokens", "decoded"]])
assert check["ok"].all(), f"word spans map to the wrong tokens, e.g.\n{check[~check.ok].head()}"
print(f"all {len(check)} word spans decode back to their word")

# %% [markdown]
# ## Extract and cache
# Loads the cache if it exists and its checksums match; otherwise runs the model (only up to the deepest requested block) and writes it atomically.

# %%
cache = h.load_or_extract_concepts(paths, spec, df, layers, cfg.batch_size, device, (model, tokenizer))
print(f"cache: {cache.folder}")
for L in layers:
    print(f"layer {L}: word-level {tuple(cache.word(L).shape)}, tokens {tuple(cache.tokens(L).shape)}")
assert cache.word(layers[0]).shape[0] == len(df), "one word-level vector per dataset row"

# %% [markdown]
# ## The background corpus
# The SAE should learn from general text, not only from 1,680 template sentences. Offline, the prose
# paragraphs of Python's documentation (`pydoc_data.topics`, shipped with CPython) serve; the last
# texts are held out for notebook 02's fidelity check. The run manifest records the split.

# %%
train_texts, eval_texts = h.background_split(cfg.background_tokens, cfg.background, cfg.n_eval_texts)
print(f"{len(train_texts)} training texts, {len(eval_texts)} held out; e.g.: {train_texts[0][:160]}...")
background = h.load_or_extract_corpus(paths, spec, train_texts, layers, cfg.batch_size, device, (model, tokenizer), cfg.dtype)
print(f"background: {background.n_tokens} tokens; concept sentences: {cache.n_tokens} tokens")
manifest = h.write_manifest(cfg, spec, layers, df, cache, background, eval_texts)
print(f"run manifest: {manifest}")

# %% [markdown]
# ## The first-position artefact
# In GPT-2, whatever token sits at position 0 gets a residual norm tens of times larger than the rest
# (an "attention sink"). The project therefore prepends a BOS token and leaves it (and every other
# special token, such as BERT's [CLS]/[SEP]) out of SAE training and analysis. The table compares the norm at
# position 0 with the median elsewhere, with and without a prepended BOS (BERT always starts with [CLS]).

# %%
sample = df["sentence"].iloc[:: max(1, len(df) // 64)].tolist()
artefact = pd.concat([h.position_norms(model, tokenizer, sample, layers, prepend_bos=b) for b in (True, False)]).drop_duplicates(["layer", "position 0 is"])
artefact.style.format(precision=2).set_caption(f"{spec.used}: residual norm at position 0 vs. elsewhere")

# %% [markdown]
# ## Activation norms per layer
# Look at how the typical token norm changes with depth, and at the outliers: a few tokens with a much
# larger norm dominate any analysis that ranks by raw activation size (special tokens are already excluded here).

# %%
norms = {L: cache.tokens(L).norm(dim=1).numpy() for L in layers}
fig = h.fig_norms(norms, spec.used)
h.save_figure(paths, fig, "01_activation_norms", cfg.save_figures)
fig.show()

# %% [markdown]
# ## Saved
# The activations are in the folders printed above (`data/activations/<model>/<key>/`, one for the
# concept sentences and one for the background corpus): `tokens_L<L>.npy` (every non-special token,
# memory-mappable), `pooled.safetensors` (word-level poolings, MLP neurons and the token index),
# `texts.json` (the background texts) and `meta.json` with the key, its inputs and SHA-256 checksums.
# The run manifest names both caches and the held-out texts.
#
# **Next:** [02 · Train one SAE per layer](02_train_sae.ipynb)
