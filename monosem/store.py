"""The streaming activation store: the model runs once over the corpus and feeds every layer's SAEs from a shuffled buffer.

As in SAELens's ``ActivationsStore``, activations are mixed in a buffer before training sees them:
the buffer is filled with the residual stream of whole texts (in a seeded random text order),
shuffled, and the first half is served in training batches while the second half stays to be
mixed with the next fill. Every layer's buffer is shuffled with the same permutation, so the
tokens of a batch are the same tokens at every layer. Memory is bounded by the buffer
(``buffer_tokens`` x d_model x 4 bytes per layer), not by the corpus; nothing is written to disk.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Generator, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from monosem.activations import CORPUS_MAX_LENGTH, encode_examples, length_batches, pad_batch, run_layers
from monosem.config import MonosemError
from monosem.io import hash_json
from monosem.massive import massive_mask
from monosem.model import check_layers, get_blocks

log = logging.getLogger(__name__)


class ActivationStore:
    """Residual-stream activations of ``layers`` over ``texts``, served in shuffled batches of tokens {layer: [batch, d_model]}.

    Special tokens (BOS, [CLS], [SEP]) are left out, and with ``massive`` ({layer: norm}) every token whose
    norm exceeds it at any layer (``monosem.massive``). When training asks for more tokens than the
    corpus holds, the texts are run again in a new order (``epochs`` counts the passes started).
    """

    def __init__(self, model: nn.Module, tokenizer: Any, texts: Sequence[str], layers: Sequence[int], batch_size: int = 32,
                 buffer_tokens: int = 32768, seed: int = 0, device: torch.device | str = "cpu", max_length: int = CORPUS_MAX_LENGTH,
                 chunk_size: int = 512, massive: dict[int, float] | None = None):
        if not texts:
            raise MonosemError("the activation store got no texts; run notebooks/01_extract_activations.ipynb to build the corpus")
        self.model, self.tokenizer, self.texts = model, tokenizer, list(texts)
        self.layers = check_layers(layers, len(get_blocks(model)), type(model).__name__)
        self.batch_size, self.buffer_tokens, self.seed = batch_size, buffer_tokens, seed
        self.device, self.max_length, self.chunk_size = torch.device(device), max_length, chunk_size
        config: Any = model.config
        self.d_model = int(config.hidden_size)
        self.massive = massive  # {layer: norm}: tokens above it at any layer are left out (monosem.massive); None: keep all
        self.tokens_massive = 0  # tokens left out as massive activations
        self.epochs = 0  # passes over the texts started so far
        self.tokens_run = 0  # tokens the model has produced
        self.model_seconds = 0.0  # time spent tokenising and running the model
        self._texts_hash: str | None = None

    def key_inputs(self) -> dict[str, Any]:
        """What determines the batches this store serves (for the keys of the SAEs trained from it)."""
        if self._texts_hash is None:
            self._texts_hash = hash_json(self.texts)
        return {"texts": self._texts_hash, "seed": self.seed, "model_batch": self.batch_size, "buffer_tokens": self.buffer_tokens,
                "max_length": self.max_length, "chunk_size": self.chunk_size,
                "massive": {str(L): float(f"{v:.4g}") for L, v in self.massive.items()} if self.massive else None}

    def model_batches(self) -> Generator[dict[int, Tensor], None, None]:
        """Forever: each pass takes the texts in a new seeded order and yields, per forward batch, {layer: [n_tokens, d_model]}."""
        gen = torch.Generator().manual_seed(self.seed)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        while True:
            self.epochs += 1
            if self.epochs == 2:
                warnings.warn(f"the corpus ({len(self.texts)} texts, {self.tokens_run} tokens) is smaller than the training tokens asked for; "
                              "its texts are run again in a new order (more epochs). Use a larger corpus or fewer MONOSEM_SAE_TOKENS", stacklevel=2)
            order = torch.randperm(len(self.texts), generator=gen).tolist()
            for lo in range(0, len(order), self.chunk_size):
                t0 = time.perf_counter()
                encoded = encode_examples(self.tokenizer, [self.texts[i] for i in order[lo : lo + self.chunk_size]], None, max_length=self.max_length)
                self.model_seconds += time.perf_counter() - t0
                for batch in length_batches([len(e.ids) for e in encoded], self.batch_size):
                    t0 = time.perf_counter()
                    ids, attn, keep, _ = pad_batch(encoded, batch, pad_id)
                    resid, _ = run_layers(self.model, ids.to(self.device), attn.to(self.device), self.layers)
                    keep = keep.to(self.device)
                    if self.massive:
                        ordinary = keep & ~massive_mask({L: resid[L] for L in self.layers}, self.massive)
                        self.tokens_massive += int(keep.sum() - ordinary.sum())
                        keep = ordinary
                    acts = {L: resid[L][keep].float() for L in self.layers}
                    self.tokens_run += int(keep.sum())
                    self.model_seconds += time.perf_counter() - t0
                    yield acts

    def batches(self, batch_size: int, n_batches: int) -> Iterator[dict[int, Tensor]]:
        """``n_batches`` training batches {layer: [batch_size, d_model]} drawn through the shuffle buffer.

        The model runs only until it has produced ``n_batches * batch_size`` tokens; the buffer
        holds ``max(buffer_tokens, 2 * batch_size)`` tokens per layer (plus one forward batch).
        Each batch is a copy of rows gathered from the buffer.
        """
        needed = n_batches * batch_size
        capacity = max(self.buffer_tokens, 2 * batch_size)
        rows = capacity + self.batch_size * (self.max_length + 2)
        buffers = {L: torch.empty(rows, self.d_model, device=self.device) for L in self.layers}
        gen = torch.Generator().manual_seed(self.seed + 1)
        source = self.model_batches()
        n = produced = served = 0
        while served < needed:
            while n < capacity and produced < needed:  # fill
                acts = next(source)
                m = len(acts[self.layers[0]])
                for L in self.layers:
                    buffers[L][n : n + m] = acts[L]
                n += m
                produced += m
            # serve half the mixed buffer (n >= capacity >= 2 batches), or, once the model is done, all that is still needed
            perm = torch.randperm(n, generator=gen).to(self.device)
            serve = needed - served if produced >= needed else min(needed - served, (n // 2) // batch_size * batch_size)
            for i in range(0, serve, batch_size):
                idx = perm[i : i + batch_size]
                yield {L: buffers[L][idx] for L in self.layers}
            rest = perm[serve:n]
            for L in self.layers:
                buffers[L][: len(rest)] = buffers[L][rest]
            n = len(rest)
            served += serve
        source.close()
        log.info("activation store: %d tokens served per layer, %d produced by the model in %d pass(es)", served, produced, self.epochs)
