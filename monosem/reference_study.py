"""The reference study as it ran: its 12 sentences, sentence means, 10-step SAE, score, summary lines and keyword heatmap.

The reference study (issue 9, item 7) ran on GPT-2 Medium:

- 12 sentences, 3 per concept (numbers, emotions, actions, colors);
- a sentence's representation is the mean of the residual stream over *all* its token positions
  with the tokenizer's defaults: no BOS for GPT-2, so position 0 (GPT-2's large-norm first token)
  is included; for a BERT-style tokenizer [CLS] and [SEP] are included;
- an SAE of hidden size d_model/2, loss = MSE + 0.1 * mean|f| (the ``reference`` preset), trained
  with Adam (lr 1e-3) for 10 full-batch steps on the 12 sentence means;
- a score per feature = max concept mean / sum of concept means over the 12 sentences,
  "monosemantic" when the score is above 0.6, and one summary line per layer;
- a heatmap of its top features (highest variance across the 12 sentences) x keyword rows, the
  keywords matched with ``text.split()``. That leaves the full stop on the last word of a sentence,
  so a keyword that ends a sentence ("blue.", "red.", "angry.") never matches: the heatmap got 9 of
  its 13 rows and "green" was its only colour row, hence "green in every layer".

The original 12 sentences are not in this repository. ``SENTENCES`` is a *reconstruction* that
matches every reported fact: 3 sentences per concept that together contain the 13 keywords, with
"2024", "angry", "blue" and "red" at the end of a sentence, so ``text.split()`` matching finds 9
rows and "green" is the only colour row.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from monosem.activations import run_layers
from monosem.config import MonosemError
from monosem.dataset import CONCEPTS
from monosem.model import check_layers, get_blocks
from monosem.sae.base import SAE, TrainState
from monosem.sae.train import TokenSource, init_sae
from monosem.selectivity import layer_summary, reference_pick, selectivity_table

# A reconstruction (see the module docstring): 3 sentences per concept, in CONCEPTS order.
SENTENCES: tuple[str, ...] = (
    "There were seven apples and 100 grapes on the table.",
    "My little sister turns 13 next week.",
    "The festival was first held in 2024.",
    "She felt happy when her old friend arrived.",
    "He was worried about the exam tomorrow.",
    "The long delay made every passenger angry.",
    "The boy is running across the wet field.",
    "A small bird was flying over the lake.",
    "She walks to school every morning.",
    "The green leaves moved in the wind.",
    "He painted the old garden fence blue.",
    "Her new winter coat is bright red.",
)
SENTENCE_CONCEPTS: tuple[str, ...] = tuple(c for c in CONCEPTS for _ in range(3))  # concept of each sentence
KEYWORDS: tuple[str, ...] = ("seven", "100", "13", "2024", "happy", "angry", "worried", "running", "flying", "walks", "blue", "red", "green")
THRESHOLD = 0.6  # "monosemantic" when score > THRESHOLD
STEPS = 10  # Adam steps of the reference SAE
TOP_K = 8  # features in the heatmap (highest variance across the sentences)


def keyword_rows(sentences: Sequence[str], keywords: Sequence[str], strip_punctuation: bool = False) -> tuple[dict[str, list[int]], dict[str, str]]:
    """The heatmap rows the reference's ``keyword in text.split()`` matching finds, and the ones it loses.

    Returns ``found`` {keyword: indices of the sentences it matched}, in ``keywords`` order, and
    ``lost`` {keyword: the first token that holds it but did not match, e.g. 'blue.'}. With
    ``strip_punctuation`` every token is stripped of punctuation first: the rows the study would
    have had. Matching is case-sensitive, as ``text.split()`` is; a keyword that appears in no
    sentence in any form is in neither dict.
    """
    tokens = [[t.strip(string.punctuation) if strip_punctuation else t for t in s.split()] for s in sentences]
    found: dict[str, list[int]] = {}
    lost: dict[str, str] = {}
    for keyword in keywords:
        hits = [i for i, toks in enumerate(tokens) if keyword in toks]
        if hits:
            found[keyword] = hits
            continue
        near = [t for s in sentences for t in s.split() if t != keyword and t.strip(string.punctuation) == keyword]
        if near:
            lost[keyword] = near[0]
    return found, lost


@torch.inference_mode()
def sentence_means(model: nn.Module, tokenizer: Any, sentences: Sequence[str], layers: Sequence[int]) -> dict[int, Tensor]:
    """The reference's sentence representation: {L: [n_sentences, d_model]}, the mean of the residual stream after
    block L over *every* position of each sentence, tokenised with the tokenizer's defaults.

    No BOS is prepended (GPT-2 adds none, so position 0 is the first word, with its large norm);
    special tokens a tokenizer adds by default ([CLS], [SEP]) are kept. Each sentence runs on its
    own, so there is no padding (GPT-2's tokenizer has no pad token).
    """
    layers = check_layers(layers, len(get_blocks(model)), type(model).__name__)
    device = next(model.parameters()).device
    rows: dict[int, list[Tensor]] = {L: [] for L in layers}
    for sentence in sentences:
        ids = torch.tensor([tokenizer(sentence)["input_ids"]], device=device)  # [1, seq], the tokenizer's defaults
        resid, _ = run_layers(model, ids, torch.ones_like(ids), layers)
        for L in layers:
            rows[L].append(resid[L][0].float().mean(0).cpu())  # [d_model], every position
    return {L: torch.stack(r) for L, r in rows.items()}


def train_reference_sae(means: Tensor, seed: int = 0, steps: int = STEPS) -> tuple[SAE, list[dict]]:
    """The reference SAE trained on ``means`` [n_sentences, d_model]: the ``reference`` preset (d_model/2 ReLU features,
    loss = MSE + 0.1 * mean|f|, Adam lr 1e-3), ``steps`` Adam steps, each on the full batch of all rows.

    ``monosem.sae.train.train_sae`` draws its batches with replacement, so this is its own loop
    (same initialisation, loss and optimiser, one step per full batch). Returns the SAE and the
    loss, MSE and L1 of every step (one entry per optimiser step).
    """
    if steps < 1:
        raise MonosemError(f"the reference SAE needs steps >= 1, got {steps}")
    x = means.detach().clone().float().cpu()  # [n, d_model]; a normal tensor even if ``means`` came from inference mode
    sae, cfg = init_sae(TokenSource.of(x), "reference", torch.Generator().manual_seed(seed), seed)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg["lr"])
    state = TrainState(0, steps, cfg, torch.zeros(sae.d_sae))
    history = []
    for step in range(steps):
        state.step = step
        parts = sae.training_loss(x, state)
        opt.zero_grad(set_to_none=True)
        parts.loss.backward()
        opt.step()
        with torch.no_grad():
            sae.after_step()
        history.append({"step": step + 1, "loss": parts.loss.item(), "mse": parts.reconstruction.item(), sae.sparsity_name: parts.sparsity.item()})
    return sae.eval(), history


def reference_line(layer: int, summary: dict) -> str:
    """'Layer 0: found N monosemantic features, indices [...], average selectivity X' in the reference's own format
    (every index; the average over all features), from a ``selectivity.layer_summary`` dict."""
    return (f"Layer {layer}: found {summary['n_monosemantic']} monosemantic features, indices {summary['monosemantic_indices']}, "
            f"average selectivity {summary['mean_selectivity']:.3f}")


def keyword_heatmap(feats: Tensor | np.ndarray, rows: dict[str, list[int]], features: Sequence[int]) -> pd.DataFrame:
    """Heatmap matrix [n_rows, len(features)]: per keyword row, the mean activation of ``features`` over the
    sentences it matched; ``feats`` [n_sentences, d_sae]."""
    feats = np.asarray(feats, dtype=np.float64)
    data = np.array([feats[idx][:, list(features)].mean(0) for idx in rows.values()]).reshape(len(rows), len(features))
    return pd.DataFrame(data, index=pd.Index(list(rows), name="keyword"), columns=pd.Index(list(features), name="feature"))


@dataclass
class ReferenceLayer:
    """One layer of the reference run: its SAE, feature activations, scores, summary and heatmap."""

    layer: int
    means: Tensor  # [n_sentences, d_model] sentence means
    sae: SAE
    history: list[dict]  # one entry per Adam step
    feats: Tensor  # [n_sentences, d_sae] feature activations of the sentence means
    table: pd.DataFrame  # selectivity_table: feature, score, top_concept, mean_<concept>, live
    summary: dict  # selectivity.layer_summary at THRESHOLD
    line: str  # the reference's summary line
    top_features: list[int]  # the reference's pick: highest variance across the sentences
    heatmap: pd.DataFrame  # [rows text.split() finds, top_features]
    heatmap_stripped: pd.DataFrame  # [all keyword rows with punctuation stripped, top_features]

    @property
    def scores(self) -> np.ndarray:
        """Score per feature [d_sae] (0 where a feature never fires)."""
        return self.table["score"].to_numpy()


@dataclass
class ReferenceResult:
    """The reference study on one model: its sentences, keyword rows (found and lost) and one ``ReferenceLayer`` per layer."""

    sentences: tuple[str, ...]
    keywords: tuple[str, ...]
    found: dict[str, list[int]]  # rows the text.split() matching finds
    lost: dict[str, str]  # keyword -> the token that failed to match ('blue.')
    found_stripped: dict[str, list[int]]  # rows with punctuation stripped
    threshold: float
    seed: int
    layers: dict[int, ReferenceLayer] = field(default_factory=dict)

    @property
    def lines(self) -> list[str]:
        """The reference's summary lines, one per layer."""
        return [r.line for r in self.layers.values()]


def reference_run(model: nn.Module, tokenizer: Any, layers: Sequence[int], seed: int = 0, *, steps: int = STEPS, top_k: int = TOP_K,
                  threshold: float = THRESHOLD, sentences: Sequence[str] = SENTENCES, concepts: Sequence[str] = SENTENCE_CONCEPTS,
                  keywords: Sequence[str] = KEYWORDS) -> ReferenceResult:
    """The reference study as it ran, on ``model``: sentence means, a 10-step SAE per layer, scores, summary lines,
    the top features by variance and their keyword heatmap (with the rows ``text.split()`` loses)."""
    if len(sentences) != len(concepts):
        raise MonosemError(f"{len(sentences)} sentences but {len(concepts)} concept labels; give one concept per sentence")
    df = pd.DataFrame({"sentence": list(sentences), "concept": list(concepts), "is_concept": True})
    found, lost = keyword_rows(sentences, keywords)
    found_stripped, _ = keyword_rows(sentences, keywords, strip_punctuation=True)
    result = ReferenceResult(tuple(sentences), tuple(keywords), found, lost, found_stripped, threshold, seed)
    for L, means in sentence_means(model, tokenizer, sentences, layers).items():
        sae, history = train_reference_sae(means, seed, steps)
        with torch.no_grad():
            feats = sae.encode(means.clone())  # [n_sentences, d_sae]
        table = selectivity_table(feats, df)
        summary = layer_summary(table, threshold)
        top = reference_pick(feats, top_k)
        result.layers[L] = ReferenceLayer(L, means, sae, history, feats, table, summary, reference_line(L, summary), top,
                                          keyword_heatmap(feats, found, top), keyword_heatmap(feats, found_stripped, top))
    return result
