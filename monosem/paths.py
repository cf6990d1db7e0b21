"""Every on-disk location of a run: caches, SAEs, results, figures and the run manifest, under one data folder.

Layout (``<data>`` is ``RunConfig.data_path``, ``<model>`` the slug of the model actually used)::

    <data>/corpus/<key>/                     the background corpus's texts, training and held out (notebook 01)
    <data>/activations/<model>/<key>/        activation caches (notebook 01)
    <data>/runs/<asked>.json                 run manifest (notebook 01), keyed by the model asked for
    <data>/saes/<model>/[<preset>/]layer_<L>/ SAEs in the SAELens format (notebook 02)
    <data>/results/<model>/                  summary.json, sae_metrics.json, <preset>/selectivity_layer_<L>.csv,
                                             figures/, features/ (notebooks 02-04)

No name can escape ``<data>``: every part is slugified and checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from monosem.io import ensure_writable_dir, safe_child, slugify

REFERENCE_PRESET = "reference"  # its SAEs sit directly in saes/<model>/layer_<L>/ (the original layout)


@dataclass(frozen=True)
class ModelPaths:
    """The folders of one model under one data folder."""

    data: Path
    slug: str

    @property
    def activations(self) -> Path:
        """``<data>/activations/<model>/``: one subfolder per cache key."""
        return safe_child(self.data / "activations", self.slug)

    def sae(self, layer: int, preset: str = REFERENCE_PRESET) -> Path:
        """``<data>/saes/<model>/layer_<L>/`` for the reference preset, ``.../<preset>/layer_<L>/`` for others."""
        parts = [self.slug] + ([] if preset == REFERENCE_PRESET else [slugify(preset)]) + [f"layer_{int(layer)}"]
        return safe_child(self.data / "saes", *parts)

    @property
    def results(self) -> Path:
        """``<data>/results/<model>/``."""
        return safe_child(self.data / "results", self.slug)

    def selectivity_csv(self, preset: str, layer: int) -> Path:
        """``<results>/<preset>/selectivity_layer_<L>.csv``: the folder names the preset the table describes."""
        return safe_child(self.results, slugify(preset), f"selectivity_layer_{int(layer)}.csv")

    @property
    def figures(self) -> Path:
        return self.results / "figures"

    @property
    def features(self) -> Path:
        return self.results / "features"


def model_paths(data: Path, model_name: str) -> ModelPaths:
    """The folders of the model called ``model_name`` (its slug cannot escape ``data``); ``data`` is created and must be
    writable, else a MonosemError names MONOSEM_DATA_DIR."""
    return ModelPaths(ensure_writable_dir(Path(data)).resolve(), slugify(model_name))


def manifest_path(data: Path, model_asked: str) -> Path:
    """``<data>/runs/<asked>.json``: the run manifest of notebook 01 for the model asked for."""
    return safe_child(Path(data).resolve() / "runs", slugify(model_asked) + ".json")


def corpus_path(data: Path, key: str) -> Path:
    """``<data>/corpus/<key>/``: one background corpus (training and held-out texts), shared by every model."""
    return safe_child(Path(data).resolve() / "corpus", slugify(key))
