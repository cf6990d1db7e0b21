"""SAELens interop: the on-disk format (cfg.json + sae_weights.safetensors), imports from folders and releases, round-trip check."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from monosem.config import MonosemError
from monosem.io import atomic_dir, read_json, sha256_file
from monosem.model import ModelSpec, hub_reachable
from monosem.paths import ModelPaths
from monosem.sae.base import SAE
from monosem.sae.registry import sae_class_for_cfg

SAELENS_FORMAT_VERSION = "6.0.0"
CHECKSUMS = "checksums.json"  # SHA-256 of every other file of a folder this project wrote; SAELens ignores it
WEIGHT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
RETRAIN = "retrain it with notebooks/02_train_sae.ipynb (or fix the MONOSEM_SAE_SOURCE folder)"


def save_sae(sae: SAE, folder: Path, model_name: str, layer: int, extra_metadata: dict | None = None, training: dict | None = None) -> None:
    """Write ``cfg.json`` + ``sae_weights.safetensors`` in the SAELens (>= 6) on-disk format, atomically.

    ``training`` (history, metrics, key) goes to ``training.json`` beside them, and the SHA-256 of every
    file to ``checksums.json``; SAELens ignores both. Weights with NaN or Inf are refused before anything is written.
    """
    top_extra, meta_extra = sae.saelens_extra()  # the architecture's own keys (topk: k, rescale_acts_by_decoder_norm)
    cfg = {
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": bool(sae.apply_b_dec_to_input),
        "normalize_activations": "none",
        "reshape_activations": "none",
        "architecture": sae.saelens_architecture or sae.architecture,
        "metadata": {
            "sae_lens_version": SAELENS_FORMAT_VERSION,
            "model_name": model_name,
            "hook_name": f"blocks.{int(layer)}.hook_resid_post",
            "hook_head_index": None,
            "prepend_bos": True,
            "context_size": None,
            **meta_extra,
            **(extra_metadata or {}),
        },
        **top_extra,
    }
    weights = {k: getattr(sae, k).detach().float().cpu().contiguous() for k in sae.tensor_shapes(sae.d_in, sae.d_sae)}
    bad = [k for k, w in weights.items() if not torch.isfinite(w).all()]
    if bad:
        raise MonosemError(f"the SAE for {folder} has NaN or Inf in {bad} (training diverged); nothing was written. "
                           "Lower the learning rate or check the activations, then retrain")
    with atomic_dir(Path(folder)) as tmp:
        save_file(weights, tmp / "sae_weights.safetensors")
        (tmp / "cfg.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
        if training is not None:
            (tmp / "training.json").write_text(json.dumps(training, indent=2), encoding="utf-8")
        (tmp / CHECKSUMS).write_text(json.dumps({p.name: sha256_file(p) for p in sorted(tmp.iterdir())}, indent=2), encoding="utf-8")


def _verify_checksums(folder: Path) -> None:
    """Check every file listed in ``checksums.json`` (folders this project wrote); a mismatch names the file and the fix."""
    listed = read_json(folder / CHECKSUMS, "SAE checksums", RETRAIN)
    if not isinstance(listed, dict) or not {"cfg.json", "sae_weights.safetensors"} <= set(listed):
        raise MonosemError(f"{folder / CHECKSUMS} does not list cfg.json and sae_weights.safetensors; {RETRAIN}")
    for name, digest in listed.items():
        p = folder / str(name)
        if not p.is_file() or sha256_file(p) != digest:
            raise MonosemError(f"{p} is missing or corrupted (its SHA-256 does not match {CHECKSUMS}); {RETRAIN}")


def load_sae(folder: Path | str) -> tuple[SAE, dict]:
    """Load an SAE saved in the SAELens format (standard, topk, jumprelu, or matryoshka_batchtopk, saved as jumprelu).

    Checks the files' SHA-256 (when the folder has ``checksums.json``, as every folder this project
    writes does), tensor names and shapes, the dtype (floating, as ``cfg.json`` says) and that no
    weight is NaN or Inf.
    """
    folder = Path(folder)
    cfg_path, w_path = folder / "cfg.json", folder / "sae_weights.safetensors"
    if not cfg_path.is_file() or not w_path.is_file():
        raise MonosemError(f"{folder} is not an SAE folder (needs cfg.json and sae_weights.safetensors); run notebooks/02_train_sae.ipynb")
    if (folder / CHECKSUMS).is_file():
        _verify_checksums(folder)
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    except (ValueError, KeyError, TypeError) as exc:
        raise MonosemError(f"{cfg_path} is not a valid SAELens cfg.json ({exc}); retrain with notebooks/02_train_sae.ipynb") from None
    cls = sae_class_for_cfg(cfg)
    if cfg.get("normalize_activations", "none") not in ("none", None):
        raise MonosemError(f"{folder}: normalize_activations={cfg['normalize_activations']!r} is not supported; fold the normalisation into the weights")
    try:
        cls.check_cfg(cfg)
    except MonosemError as exc:
        raise MonosemError(f"{folder}: {exc}") from None
    try:
        weights = load_file(w_path)
    except Exception as exc:  # safetensors raises its own error types for a damaged header
        raise MonosemError(f"{w_path} is not a readable safetensors file ({exc}); {RETRAIN}") from None
    try:
        weights = cls.from_saelens_weights(cfg, weights)
    except MonosemError as exc:
        raise MonosemError(f"{w_path}: {exc}") from None
    shapes = cls.tensor_shapes(d_in, d_sae)
    if set(weights) != set(shapes):
        raise MonosemError(f"{w_path} holds tensors {sorted(weights)}, expected exactly {sorted(shapes)} for a {cls.architecture} SAE")
    for name, want in shapes.items():
        if tuple(weights[name].shape) != want:
            raise MonosemError(f"{w_path}: {name} has shape {tuple(weights[name].shape)}, expected {want} from cfg.json")
    want_dtype = WEIGHT_DTYPES.get(str(cfg.get("dtype", "float32")))
    wrong = {k: str(w.dtype) for k, w in weights.items() if w.dtype != want_dtype}
    if want_dtype is None or wrong:
        raise MonosemError(f"{w_path}: tensors {wrong or sorted(weights)} do not have the dtype {cfg.get('dtype', 'float32')!r} that cfg.json states "
                           f"(supported: {', '.join(WEIGHT_DTYPES)}); {RETRAIN}")
    bad = [k for k, w in weights.items() if not torch.isfinite(w).all()]
    if bad:
        raise MonosemError(f"{w_path}: {bad} contain NaN or Inf; {RETRAIN}")
    sae = cls.from_cfg(cfg)
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


def sae_from_saelens(obj: Any) -> tuple[SAE, dict]:
    """Convert an SAE object of the sae_lens package (standard, topk, jumprelu; a Matryoshka BatchTopK training SAE as its
    inference folder would hold it) into this package's SAE."""
    cfg = obj.cfg.to_dict() if hasattr(obj.cfg, "to_dict") else dict(vars(obj.cfg))
    cfg["architecture"] = obj.cfg.architecture() if callable(getattr(obj.cfg, "architecture", None)) else cfg.get("architecture", "standard")
    meta = cfg.get("metadata")
    cfg["metadata"] = meta if isinstance(meta, dict) else (meta.__dict__ if meta is not None else {})
    cfg["dtype"] = "float32"
    state = {k: v.detach().float().cpu() for k, v in obj.state_dict().items()}
    cls = sae_class_for_cfg(cfg)
    state = cls.from_saelens_weights(cfg, state)  # a training SAE's tensors as its inference folder holds them
    names = cls.tensor_shapes(int(cfg["d_in"]), int(cfg["d_sae"]))
    with tempfile.TemporaryDirectory() as tmp:
        save_file({k: state[k].contiguous() for k in names if k in state}, Path(tmp) / "sae_weights.safetensors")
        (Path(tmp) / "cfg.json").write_text(json.dumps(cfg, default=str), encoding="utf-8")
        return load_sae(tmp)


def import_saes(mp: ModelPaths, spec: ModelSpec, source: str, d_model: int, n_layers: int, offline: bool = False) -> list[int]:
    """Bring SAEs made elsewhere into ``data/saes/<model>/external/layer_<L>/`` and return their layers.

    ``source``: a folder in the SAELens format (one SAE: cfg.json inside; several: one subfolder each),
    or 'release:sae_id' for ``sae_lens.SAE.from_pretrained`` (needs the hub). The hook name in each
    cfg.json decides the layer; an SAE whose width or layer does not fit the model is an error.
    """
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
        if not hub_reachable(offline):
            raise MonosemError(f"cannot download SAE release {release!r}: the Hugging Face hub is not reachable; save it to a folder and pass that instead")
        obj = SAELensSAE.from_pretrained(release, sae_id, device="cpu")
        obj = obj[0] if isinstance(obj, tuple) else obj
        found = [(*sae_from_saelens(obj), source)]
    else:
        raise MonosemError(f"SAE source {source!r} is neither a folder nor 'release:sae_id'")
    layers: list[int] = []
    for sae, cfg, origin in found:
        L = hook_layer(cfg)
        if sae.d_in != d_model:
            raise MonosemError(f"SAE {origin} has d_in {sae.d_in} but {spec.used} has d_model {d_model}: it belongs to "
                               f"another model ({(cfg.get('metadata') or {}).get('model_name', 'unknown')})")
        if not 0 <= L < n_layers:
            raise MonosemError(f"SAE {origin} reads layer {L}, outside {spec.used} (layers 0..{n_layers - 1})")
        if L in layers:
            raise MonosemError(f"two SAEs in {source} read layer {L}; keep one per layer")
        save_sae(sae, mp.sae(L, "external"), spec.used, L, {"source": origin})
        layers.append(L)
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
