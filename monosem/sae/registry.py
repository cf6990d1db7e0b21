"""The SAE architectures by their SAELens ``architecture`` name; the one place that maps a name to a class."""

from __future__ import annotations

from typing import Any

from monosem.config import MonosemError
from monosem.sae.base import SAE
from monosem.sae.jumprelu import JumpReLUSAE
from monosem.sae.matryoshka import MatryoshkaBatchTopKSAE
from monosem.sae.standard import StandardSAE
from monosem.sae.topk import TopKSAE

ARCHITECTURES: dict[str, type[SAE]] = {cls.architecture: cls for cls in (StandardSAE, TopKSAE, JumpReLUSAE, MatryoshkaBatchTopKSAE)}


def sae_class(architecture: str) -> type[SAE]:
    """The class of a SAELens architecture name, or a MonosemError listing the supported ones."""
    try:
        return ARCHITECTURES[architecture]
    except KeyError:
        raise MonosemError(f"SAE architecture {architecture!r} is not supported; supported: {tuple(ARCHITECTURES)}") from None


def sae_class_for_cfg(cfg: dict[str, Any]) -> type[SAE]:
    """The class of a SAELens ``cfg.json``: its ``metadata.training_architecture`` when that class saves its folders
    under this ``architecture`` (a Matryoshka BatchTopK SAE is saved as 'jumprelu'), else its ``architecture``."""
    architecture = cfg.get("architecture", "standard")
    metadata = cfg.get("metadata")
    trained_as = metadata.get("training_architecture") if isinstance(metadata, dict) else None
    cls = ARCHITECTURES.get(trained_as) if isinstance(trained_as, str) else None
    if cls is not None and (cls.saelens_architecture or cls.architecture) == architecture:
        return cls
    return sae_class(architecture)


def make_sae(architecture: str, d_in: int, d_sae: int, apply_b_dec_to_input: bool = False, seed: int | None = None, **kwargs: Any) -> SAE:
    """A freshly initialised SAE of ``architecture`` (kwargs: the architecture's own, e.g. ``k`` for topk)."""
    return sae_class(architecture).from_cfg({"d_in": d_in, "d_sae": d_sae, "apply_b_dec_to_input": apply_b_dec_to_input, **kwargs}, seed)
