"""Activation extraction: tokenising with word spans, running the model up to the deepest layer, pooling per word.

"Layer L" is the residual stream at the output of block L (``hidden_states[L+1]`` of a full
forward pass, TransformerLens's ``blocks.L.hook_resid_post``). Special tokens (BOS, [CLS], [SEP])
are kept out of every output.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from monosem.config import POOLINGS, TOKEN_DTYPES, MonosemError
from monosem.layouts import first_token_id, mlp_out_projection
from monosem.model import check_layers, get_blocks


@dataclass
class Encoded:
    """One tokenised text: ids, a mask of special tokens and a mask of the marked word's tokens."""

    ids: list[int]
    special: list[bool]
    in_word: list[bool]
    offsets: list[tuple[int, int]] = field(default_factory=list)  # character span of each token ((0, 0) for a prepended one)


def encode_examples(tokenizer: Any, sentences: Sequence[str], spans: Sequence[tuple[int, int]] | None = None, prepend_bos: bool = True,
                    max_length: int | None = None) -> list[Encoded]:
    """Tokenise texts and mark the tokens that overlap each word's character span (``spans`` None: no word).

    When the tokenizer adds no special token at the start (GPT-2, SmolLM2) and ``prepend_bos``, the
    document separator is prepended (``monosem.layouts.first_token_id``: ``<|endoftext|>`` where the
    vocabulary has it, else the BOS token); special tokens are left out of training and analysis.
    """
    bos = first_token_id(tokenizer) if prepend_bos else None
    room = None if max_length is None else max_length - (bos is not None)  # the prepended token counts towards max_length
    enc = tokenizer(list(sentences), return_offsets_mapping=True, return_special_tokens_mask=True, add_special_tokens=True,
                    truncation=max_length is not None, max_length=room)
    out = []
    for i in range(len(sentences)):
        ids, offs, special = enc["input_ids"][i], enc["offset_mapping"][i], enc["special_tokens_mask"][i]
        if spans is None:
            in_word = [False] * len(ids)
        else:
            start, end = spans[i]
            in_word = [bool(not s and a < end and b > start) for (a, b), s in zip(offs, special)]
            if not any(in_word):
                raise MonosemError(f"no token of {sentences[i]!r} covers characters {start}..{end}; the tokenizer's offsets look wrong")
        offsets = [(int(a), int(b)) for a, b in offs]
        if prepend_bos and bos is not None and not special[0]:
            ids, special, in_word, offsets = [bos] + list(ids), [1] + list(special), [False] + in_word, [(0, 0)] + offsets
        out.append(Encoded(list(ids), [bool(s) for s in special], in_word, offsets))
    return out


def normalise_text(text: str) -> str:
    """``text`` as an uncased tokenizer sees it: accents stripped (NFKD), case folded, spaces removed."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch) and not ch.isspace()).casefold()


def check_lengths(tokenizer: Any, df: pd.DataFrame, max_positions: int) -> None:
    """Raise a MonosemError naming the dataset line of every sentence longer than the model's ``max_positions`` tokens."""
    too_long = [(line, n) for line, n in zip(df["line"] if "line" in df else range(2, len(df) + 2),
                                             (len(e.ids) for e in encode_examples(tokenizer, df["sentence"].tolist())))
                if n > max_positions]
    if too_long:
        shown = ", ".join(f"line {line} ({n} tokens)" for line, n in too_long[:5])
        raise MonosemError(f"{len(too_long)} sentence(s) are longer than the model's limit of {max_positions} tokens: {shown}; "
                           "shorten them in the concept dataset (a sentence of a few words is enough)")


def word_token_check(tokenizer: Any, df: pd.DataFrame) -> pd.DataFrame:
    """Per example: the tokens marked as the word, their decoded text, and whether it spells the word
    (compared as normalised text, so an uncased tokenizer's 'cafe' matches 'Café')."""
    enc = encode_examples(tokenizer, df["sentence"].tolist(), list(zip(df["word_start"], df["word_end"])))
    rows = []
    for e, word, sentence in zip(enc, df["word"], df["sentence"]):
        ids = [i for i, w in zip(e.ids, e.in_word) if w]
        decoded = tokenizer.decode(ids).strip()
        rows.append({"word": word, "sentence": sentence, "word_tokens": tokenizer.convert_ids_to_tokens(ids),
                     "decoded": decoded, "ok": normalise_text(decoded) == normalise_text(word)})
    return pd.DataFrame(rows)


class _StopForward(Exception):
    """Raised by a hook after the deepest requested block, so later blocks never run."""


@torch.inference_mode()
def run_layers(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, layers: Sequence[int], mlp: bool = False) -> tuple[dict[int, Tensor], dict[int, Tensor]]:
    """Residual stream after each block in ``layers`` ({L: [batch, seq, d_model]}) and, with ``mlp``, the
    MLP neurons of those blocks, the input of each MLP's output projection ({L: [batch, seq, d_mlp]}; a gated
    MLP's ``act(gate) * up``); the forward stops after the deepest block."""
    blocks = get_blocks(model)
    deepest = max(layers)
    resid: dict[int, Tensor] = {}
    neurons: dict[int, Tensor] = {}

    def block_hook(layer: int):
        def fn(module, args, output):
            resid[layer] = output[0] if isinstance(output, tuple) else output
            if layer == deepest:
                raise _StopForward

        return fn

    def mlp_hook(layer: int):
        def fn(module, args):
            neurons[layer] = args[0]

        return fn

    handles = [blocks[L].register_forward_hook(block_hook(L)) for L in layers]
    if mlp:
        handles += [mlp_out_projection(model, blocks[L]).register_forward_pre_hook(mlp_hook(L)) for L in layers]
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    return resid, neurons


def residual_at_layers(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, layers: Sequence[int]) -> dict[int, Tensor]:
    """Residual stream after each block in ``layers`` -> {L: [batch, seq, d_model]}; stops after the deepest."""
    return run_layers(model, input_ids, attention_mask, layers)[0]


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (sorted), so padding stays small."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]


def pad_batch(encoded: Sequence[Encoded], batch: Sequence[int], pad_id: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Right-padded ids, attention mask, keep mask (non-special tokens) and word mask, each [b, t]."""
    width = max(len(encoded[i].ids) for i in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(batch), width), dtype=torch.long)
    keep = torch.zeros((len(batch), width), dtype=torch.bool)
    word = torch.zeros((len(batch), width), dtype=torch.bool)
    for r, i in enumerate(batch):
        e = encoded[i]
        n = len(e.ids)
        ids[r, :n] = torch.tensor(e.ids)
        attn[r, :n] = 1
        keep[r, :n] = ~torch.tensor(e.special)
        word[r, :n] = torch.tensor(e.in_word)
    return ids, attn, keep, word


NUMPY_DTYPES = {name: np.dtype(name) for name in TOKEN_DTYPES}  # storage of token activations


class NpyRowWriter:
    """Writes rows of a [n, d] array into a ``.npy`` file at given row offsets with plain file writes.

    Unlike a writable memory map, the written pages live in the OS page cache, not in the process's
    memory, so extraction memory stays flat however large the corpus. ``np.load(path, mmap_mode='r')``
    reads the result.
    """

    def __init__(self, path: Path, shape: tuple[int, int], dtype: Any):
        self.dtype = np.dtype(dtype)
        self.file = open(path, "wb")
        np.lib.format.write_array_header_2_0(self.file, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape})
        self.start = self.file.tell()
        self.row_bytes = shape[1] * self.dtype.itemsize
        self.file.truncate(self.start + shape[0] * self.row_bytes)

    def write(self, row: int, values: np.ndarray) -> None:
        self.file.seek(self.start + row * self.row_bytes)
        self.file.write(np.ascontiguousarray(values, dtype=self.dtype).tobytes())

    def close(self) -> None:
        self.file.close()


def extract_concept_activations(model: nn.Module, tokenizer: Any, df: pd.DataFrame, layers: Sequence[int], batch_size: int = 32,
                                device: torch.device | str = "cpu", progress: bool = True, token_dir: Path | None = None, mlp: bool = True,
                                dtype: str = "float32", chunk_size: int = 512) -> dict[str, Any]:
    """Activations of the concept dataset ``df``: word-level poolings and every token (see ``_extract``).

    Pooled word-level tensors ``L{L}.{mean|last|sentence}`` [n_examples, d_model] (word-token mean,
    word last token, mean over the sentence's non-special tokens) and, with ``mlp``, the same
    poolings of the MLP post-activations ``L{L}.mlp.{pooling}`` [n_examples, d_mlp].
    """
    config: Any = model.config
    check_lengths(tokenizer, df, int(getattr(config, "max_position_embeddings", None) or 1 << 30))
    spans = list(zip(df["word_start"], df["word_end"]))
    return _extract(model, tokenizer, df["sentence"].tolist(), spans, layers, batch_size, device, progress, token_dir, mlp, dtype, None, chunk_size)


CORPUS_MAX_LENGTH = 128  # tokens per corpus text (special tokens included); longer texts are cut


def count_tokens(tokenizer: Any, texts: Sequence[str], max_length: int = CORPUS_MAX_LENGTH, chunk_size: int = 4096) -> np.ndarray:
    """Non-special tokens of each text [n_texts] as the extraction sees them (cut at ``max_length`` tokens)."""
    counts = [len(e.ids) - sum(e.special) for i in range(0, len(texts), chunk_size)
              for e in encode_examples(tokenizer, list(texts[i : i + chunk_size]), None, max_length=max_length)]
    return np.asarray(counts, dtype=np.int64)


def extract_corpus_activations(model: nn.Module, tokenizer: Any, texts: Sequence[str], layers: Sequence[int], batch_size: int = 32,
                               device: torch.device | str = "cpu", progress: bool = True, token_dir: Path | None = None,
                               dtype: str = "float32", max_length: int = CORPUS_MAX_LENGTH, chunk_size: int = 512) -> dict[str, Any]:
    """Activations of every token of a text corpus (texts cut at ``max_length`` tokens), no pooling (see ``_extract``)."""
    return _extract(model, tokenizer, list(texts), None, layers, batch_size, device, progress, token_dir, False, dtype, max_length, chunk_size)


def _extract(model: nn.Module, tokenizer: Any, all_texts: list[str], spans: list[tuple[int, int]] | None, layers: Sequence[int], batch_size: int,
             device: torch.device | str, progress: bool, token_dir: Path | None, mlp: bool, dtype: str, max_length: int | None,
             chunk_size: int) -> dict[str, Any]:
    """Run the model once over every text and collect per-layer activations.

    Always: every non-special token ``L{L}.tokens`` [n_tokens, d_model] and the token index
    ``token_example``, ``token_position``, ``token_id``, ``token_in_word`` [n_tokens]; with word
    ``spans``: the word-level poolings (``extract_concept_activations``).

    With ``token_dir`` the token activations are streamed batch by batch into
    ``token_dir/tokens_L{L}.npy`` (returned as read-only memory maps), and texts are tokenised
    ``chunk_size`` at a time (a first pass only counts tokens), so memory does not grow with the corpus.
    """
    from monosem.progress import Progress

    if dtype not in NUMPY_DTYPES:
        raise MonosemError(f"unknown activation dtype {dtype!r}; use one of {list(NUMPY_DTYPES)}")
    layers = check_layers(layers, len(get_blocks(model)), type(model).__name__)
    n = len(all_texts)
    chunks = [(i, min(i + chunk_size, n)) for i in range(0, n, chunk_size)]

    def encode(lo: int, hi: int) -> list[Encoded]:
        return encode_examples(tokenizer, all_texts[lo:hi], spans[lo:hi] if spans else None, max_length=max_length)

    counts = np.concatenate([[len(e.ids) - sum(e.special) for e in encode(lo, hi)] for lo, hi in chunks]).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    n_tok = int(offsets[-1])
    config: Any = model.config
    d_model = int(config.hidden_size)
    sinks: dict[int, Any] = {}
    for L in layers:
        if token_dir is not None:
            sinks[L] = NpyRowWriter(Path(token_dir) / f"tokens_L{L}.npy", (n_tok, d_model), NUMPY_DTYPES[dtype])
        else:
            sinks[L] = np.empty((n_tok, d_model), dtype=NUMPY_DTYPES[dtype])
    index = np.zeros((n_tok, 4), dtype=np.int32)
    pooled: dict[str, Tensor] = {}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    bar = Progress(total=n, desc="extract", unit="text", disable=not progress)
    for lo, hi in chunks:
        encoded = encode(lo, hi)
        for local in length_batches([len(e.ids) for e in encoded], batch_size):
            batch = [lo + i for i in local]
            ids, attn, keep, word = pad_batch(encoded, local, pad_id)
            resid, neurons = run_layers(model, ids.to(device), attn.to(device), layers, mlp=mlp)
            for L in layers:
                a = resid[L].float().cpu()  # [b, t, d]
                for r, i in enumerate(batch):
                    if token_dir is not None:
                        sinks[L].write(offsets[i], a[r][keep[r]].numpy())
                    else:
                        sinks[L][offsets[i] : offsets[i + 1]] = a[r][keep[r]].numpy()
                if spans is None:
                    continue
                rows = torch.tensor(batch)
                sources = [("", a)] + ([("mlp.", neurons[L].float().cpu())] if mlp else [])
                last_pos = torch.tensor([max(j for j, w in enumerate(encoded[i].in_word) if w) for i in local])
                for prefix, x in sources:
                    for p in POOLINGS:
                        if f"L{L}.{prefix}{p}" not in pooled:  # allocated once (setdefault would build a zero tensor every batch)
                            pooled[f"L{L}.{prefix}{p}"] = torch.zeros((n, x.shape[-1]))
                    pooled[f"L{L}.{prefix}mean"][rows] = (x * word[..., None]).sum(1) / word.sum(1, keepdim=True)
                    pooled[f"L{L}.{prefix}last"][rows] = x[torch.arange(len(batch)), last_pos]
                    pooled[f"L{L}.{prefix}sentence"][rows] = (x * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)
            for r, i in enumerate(batch):
                pos = torch.nonzero(keep[r]).squeeze(1)
                index[offsets[i] : offsets[i + 1]] = np.stack([np.full(len(pos), i), pos.numpy(), ids[r, pos].numpy(), word[r, pos].numpy()], 1)
            bar.update(len(batch))
    bar.close()
    out: dict[str, Any] = dict(pooled)
    for L in layers:
        if token_dir is not None:
            sinks[L].close()
            sinks[L] = np.load(Path(token_dir) / f"tokens_L{L}.npy", mmap_mode="r")
        out[f"L{L}.tokens"] = sinks[L]
    for j, name in enumerate(("token_example", "token_position", "token_id")):
        out[name] = torch.from_numpy(index[:, j].astype(np.int64))
    out["token_in_word"] = torch.from_numpy(index[:, 3].astype(bool))
    return out


@torch.inference_mode()
def position_norms(model: nn.Module, tokenizer: Any, texts: Sequence[str], layers: Sequence[int], prepend_bos: bool) -> pd.DataFrame:
    """Mean residual norm of the first position vs. the rest, per layer, with or without a prepended BOS.

    Shows the first-position artefact: whatever sits at position 0 gets a much larger norm.
    """
    enc = encode_examples(tokenizer, texts, None, prepend_bos=prepend_bos)
    ids, attn, keep, _ = pad_batch(enc, list(range(len(enc))), tokenizer.pad_token_id or 0)
    device = next(model.parameters()).device
    resid, _ = run_layers(model, ids.to(device), attn.to(device), layers)
    resid = {L: r.cpu() for L, r in resid.items()}
    rows = []
    first_special = bool(enc[0].special[0])
    for L in layers:
        norms = resid[L].float().norm(dim=-1)  # [b, t]
        rest = attn.bool().clone()
        rest[:, 0] = False
        rest &= keep  # ordinary tokens after position 0
        rows.append({"layer": L, "BOS prepended": prepend_bos, "position 0 is": "special token" if first_special else "first word token",
                     "norm at position 0": norms[:, 0].mean().item(), "median norm elsewhere": norms[rest].median().item()})
    df = pd.DataFrame(rows)
    df["ratio"] = df["norm at position 0"] / df["median norm elsewhere"]
    return df
