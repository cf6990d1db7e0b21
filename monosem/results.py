"""The result files under ``data/results/<model>/``: the only module that writes or reads them.

Typed records name the model (and, where it matters, the preset) they describe, and every reader
checks them against what the caller expects, so one preset's table is never paired with another
preset's SAE or another model's run:

- ``sae_metrics.json`` (notebook 02): ``SaeMetricsFile``
- ``summary.json`` (notebook 03): ``Summary``
- ``<preset>/selectivity_layer_<L>.csv`` (notebook 03): one row per unit of that preset's SAE
- ``features/layer_<L>_feature_<i>.json`` (notebook 04) and ``figures/*.html``

and the budget sweep's files (``bench/sweep.py``; committed under ``docs/``): ``sweep.csv``, ``sweep.json``, ``sweep.html``, ``sweep.png``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from monosem.bases import Comparison
from monosem.cache import ActivationCache
from monosem.config import AUTO_PRESET, MonosemError, RunConfig, analysed_preset
from monosem.criterion import Criterion
from monosem.io import atomic_write_text, read_json, slugify, write_json
from monosem.model import ModelSpec
from monosem.paths import ModelPaths
from monosem.reference_study import ReferenceResult
from monosem.sae.saelens import load_sae
from monosem.sae.train import TokenSource, sae_metrics
from monosem.selectivity import layer_summary

R = TypeVar("R", "SaeMetricsFile", "Summary")  # the typed records read from JSON
STILL_FALLING = -0.02  # a loss change over the last 10% of steps below this: training had not levelled off
TEXT_COLUMNS = ("top_category", "top_concept_reference", "top_concept", "concept")  # category names; '' for a silent unit
TIMING_KEYS = ("seconds", "tokens_per_second")  # vary run to run: kept in sae_metrics.json, left out of summary.json


def _read_record(cls: type[R], path: Path, spec: ModelSpec, notebook: str, fix: str) -> R:
    """The record ``cls`` stored as JSON at ``path``; checks that it has every field and describes ``spec``'s model."""
    raw = read_json(path, cls.__name__, fix)
    try:
        record = cls(**{f.name: raw[f.name] for f in dataclasses.fields(cls)})
    except (KeyError, TypeError) as exc:
        raise MonosemError(f"{path} lacks {exc}; rerun {notebook}") from None
    found = record.model_used
    if found != spec.used:
        raise MonosemError(f"{path} describes {found!r}, not {spec.used!r}; rerun {notebook} for this model")
    return record


@dataclass
class SaeMetricsFile:
    """``sae_metrics.json``: per preset and layer, the SAE's metrics on held-out tokens, its downstream fidelity and
    the evidence that training finished (``sae_metrics_entry``); it names the corpus the SAEs trained on."""

    model_asked: str
    model_used: str
    corpus: str
    train_tokens: int  # per SAE
    batch_size: int
    seed: int
    per_preset: dict[str, dict[str, dict[str, Any]]]  # preset -> str(layer) -> sae_metrics_entry

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "per_layer": self.per_preset.get("reference", {})}


def sae_metrics_entry(training: dict[str, Any], fidelity: dict[str, Any]) -> dict[str, Any]:
    """One preset and layer of ``sae_metrics.json`` from the SAE's ``training.json`` record and its fidelity check:
    ``train_tokens``, ``corpus``, ``fve_heldout`` (massive-activation tokens left out; ``fve_heldout_all_tokens`` with them), ``l0``, ``dead_fraction``, ``fidelity``, ``loss_change_last10pct``
    (all measured on held-out tokens, except the loss change), the other metrics and the timing."""
    m = training["metrics"]
    warnings = []  # quality problems worth reading, not errors: the reference recipe, say, may not beat the mean on a random model
    if not m["fve"] > 0:
        warnings.append(f"reconstructs held-out tokens worse than their mean vector (FVE {m['fve']:.3f}); train longer (MONOSEM_SAE_TOKENS)")
    if not training["loss_change_last10pct"] > STILL_FALLING:
        warnings.append(f"the loss still fell {-training['loss_change_last10pct']:.1%} over the last 10% of steps; more tokens would help")
    return {"train_tokens": training["train_tokens"], "corpus": training["corpus"], "epochs": training["epochs"], "fve_heldout": m["fve"],
            "mse_heldout": m["mse"], "l0": m["l0"], "dead_fraction": m["dead_fraction"], "dense_fraction": m["dense_fraction"], "n_dead": m["n_dead"],
            "d_sae": m["d_sae"], "heldout_tokens": m["n_tokens"], "fve_heldout_all_tokens": m.get("fve_all_tokens", m["fve"]),
            "heldout_massive_tokens": m.get("n_massive", 0), **fidelity, "loss_change_last10pct": training["loss_change_last10pct"],
            "warnings": warnings, **{k: training[k] for k in TIMING_KEYS}}


def write_sae_metrics(mp: ModelPaths, record: SaeMetricsFile) -> Path:
    """Write ``sae_metrics.json`` atomically."""
    return write_json(mp.results / "sae_metrics.json", record.to_json())


def read_sae_metrics(mp: ModelPaths, spec: ModelSpec) -> SaeMetricsFile | None:
    """``sae_metrics.json`` of this model, or None when notebook 02 has not written it (e.g. imported SAEs)."""
    path = mp.results / "sae_metrics.json"
    if not path.is_file():
        return None
    notebook = "notebooks/02_train_sae.ipynb"
    return _read_record(SaeMetricsFile, path, spec, notebook, f"rerun {notebook}")


@dataclass
class Summary:
    """``summary.json``: the run's settings, per-layer counts of the analysed preset, every preset, the scorecard of every basis."""

    model_asked: str
    model_used: str
    model_revision: str
    layers: list[int]
    threshold: float
    alpha: float
    pooling: str
    sae_preset: str
    n_permutations: int
    n_bootstrap: int
    n_splits: int
    seed: int
    criterion: dict[str, Any]  # the final label's settings (monosem.criterion.Criterion.describe)
    per_layer: dict[str, dict[str, Any]]
    presets: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    scorecard: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # basis -> layer -> SCORECARD_KEYS
    reference_study: dict[str, Any] = field(default_factory=dict)  # the reference study as it ran (notebook 03)
    logit_lens: list[dict[str, Any]] = field(default_factory=list)  # causal LMs: per top selective feature, layer, top tokens, concept AUROC
    logit_lens_words: dict[str, Any] = field(default_factory=dict)  # words that share their first token (monosem.causal.shared_first_tokens)
    specificity: dict[str, Any] = field(default_factory=dict)  # the label 'specific' (monosem.specificity.Specificity.describe)
    headline: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # word list -> rows of monosem.bases.headline
    replication: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # the second word list's scorecard, basis -> layer -> keys
    probes: list[dict[str, Any]] = field(default_factory=list)  # rows of monosem.probes.probe_table / natural_probe with basis and layer
    coverage: list[dict[str, Any]] = field(default_factory=list)  # rows of monosem.probes.coverage_table with basis and layer
    lexicon: dict[str, Any] = field(default_factory=dict)  # the natural-text concept lexicon: size and samples per category
    natural_text: dict[str, Any] = field(default_factory=dict)  # held-out texts and tokens of the natural-text metrics
    causal_readout: list[dict[str, Any]] = field(default_factory=list)  # rows of monosem.readout (concept readout of edits)
    causal_contrast: list[dict[str, Any]] = field(default_factory=list)  # monosem.readout.kind_contrast of those rows

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def write_summary(mp: ModelPaths, summary: Summary) -> Path:
    """Write ``summary.json`` atomically."""
    return write_json(mp.results / "summary.json", summary.to_json())


def read_summary(mp: ModelPaths, spec: ModelSpec, preset: str | None = None) -> Summary:
    """``summary.json`` of this model (and, if given, of ``preset``), or an error that says to run notebook 03."""
    path = mp.results / "summary.json"
    notebook = "notebooks/03_selectivity.ipynb"
    summary = _read_record(Summary, path, spec, notebook, f"run {notebook} first")
    if preset is not None and summary.sae_preset != preset:
        raise MonosemError(f"{path} describes the {summary.sae_preset!r} SAEs, not {preset!r}; rerun notebooks/03_selectivity.ipynb "
                           f"with MONOSEM_SAE_PRESET={preset}, or use MONOSEM_SAE_PRESET={summary.sae_preset} here")
    return summary


def metrics_without_timing(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` less the wall-clock fields, which differ run to run."""
    return {k: v for k, v in metrics.items() if k not in TIMING_KEYS}


def write_selectivity_tables(mp: ModelPaths, preset: str, tables: dict[int, pd.DataFrame]) -> list[Path]:
    """Write one CSV per layer to ``<results>/<preset>/selectivity_layer_<L>.csv`` (feature, score, top_concept, ...)."""
    return [atomic_write_text(mp.selectivity_csv(preset, L), t.to_csv(index=False, float_format="%.6g")) for L, t in tables.items()]


def read_selectivity_tables(mp: ModelPaths, preset: str, layers: Sequence[int]) -> dict[int, pd.DataFrame]:
    """The per-feature tables of ``preset`` that notebook 03 wrote, or say to run it."""
    out = {}
    for L in layers:
        path = mp.selectivity_csv(preset, L)
        if not path.is_file():
            raise MonosemError(f"{path} not found; run notebooks/03_selectivity.ipynb first (MONOSEM_SAE_PRESETS must include {preset!r}, same MONOSEM_LAYERS)")
        table = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={c: str for c in TEXT_COLUMNS})
        for c in TEXT_COLUMNS:
            if c in table:
                table[c] = table[c].fillna("")
        out[L] = table
    return out


def export_feature_json(mp: ModelPaths, data: dict) -> Path:
    """Write one feature's dashboard data to ``features/layer_<L>_feature_<i>.json`` (atomically)."""
    return write_json(mp.features / f"layer_{data['layer']}_feature_{data['index']}.json", data)


def export_feature_page(mp: ModelPaths, data: dict, page: str) -> Path:
    """Write one feature's standalone HTML page (``monosem.viz.dashboard.feature_page_html``) next to its JSON file."""
    return atomic_write_text(mp.features / f"layer_{data['layer']}_feature_{data['index']}.html", page)


FIGURE_SPEC = ".plotly.json"  # beside each saved figure: its plotly JSON, from which render_figure_images draws PNG and SVG
IMAGE_FORMATS = ("png", "svg")


def save_figure(mp: ModelPaths, fig: Any, name: str, enabled: bool) -> Path | None:
    """Write ``fig`` as an offline HTML file under ``figures/`` when ``enabled`` (MONOSEM_SAVE_FIGURES); every figure
    there loads the one ``plotly.min.js`` beside it (written once), not 4.8 MB of plotly.js each. Its plotly JSON goes
    beside it (``<name>.plotly.json``), for the PNG and SVG files of ``render_figure_images`` (``make run`` draws them)."""
    if not enabled:
        return None
    js = mp.figures / "plotly.min.js"
    if not js.exists():
        from plotly.offline import get_plotlyjs

        atomic_write_text(js, get_plotlyjs())
    atomic_write_text(mp.figures / f"{slugify(name)}{FIGURE_SPEC}", fig.to_json())
    return atomic_write_text(mp.figures / f"{slugify(name)}.html", fig.to_html(include_plotlyjs="directory", full_html=True))


def figures_to_render(folder: Path, formats: Sequence[str] = IMAGE_FORMATS) -> list[tuple[Path, Path]]:
    """(plotly JSON, image) pairs of the saved figures in ``folder`` whose image is missing or older than the JSON."""
    pairs = []
    for spec in sorted(folder.glob(f"*{FIGURE_SPEC}")):
        stem = spec.name[: -len(FIGURE_SPEC)]
        for fmt in formats:
            image = folder / f"{stem}.{fmt}"
            if not image.exists() or image.stat().st_mtime < spec.stat().st_mtime:
                pairs.append((spec, image))
    return pairs


def render_figure_images(folder: Path, formats: Sequence[str] = IMAGE_FORMATS, scale: float = 2.0) -> list[Path]:
    """Draw every saved figure in ``folder`` as PNG and SVG (those missing or older than their plotly JSON) in one
    kaleido session (see ``write_images``)."""
    todo = figures_to_render(folder, formats)
    cache: dict[Path, dict] = {}
    return write_images([(cache.setdefault(spec, json.loads(spec.read_text(encoding="utf-8"))), image) for spec, image in todo], scale)


def write_images(figures: Sequence[tuple[dict, Path]], scale: float = 2.0) -> list[Path]:
    """Write each (plotly figure dict, image path) as the image its suffix names (png, svg, pdf) in one kaleido session,
    with the plotly.js that plotly ships (no network: MathJax off); each image is drawn in a temporary folder beside it
    and moved into place. Needs kaleido (``make setup`` installs it) and Chrome or Chromium."""
    if not figures:
        return []
    try:
        import kaleido
    except ImportError as exc:
        raise MonosemError("PNG/SVG export needs kaleido: run `make setup` (or pip install 'kaleido>=1'); the HTML figures are written already") from exc
    folders = {image.parent for _, image in figures}
    with ExitStack() as stack:
        tmp = {folder: Path(stack.enter_context(tempfile.TemporaryDirectory(dir=folder, prefix=".render-"))) for folder in folders}
        specs = []
        for fig, image in figures:
            layout = fig.get("layout", {})
            specs.append({"fig": fig, "path": str(tmp[image.parent] / image.name),
                          "opts": {"format": image.suffix[1:], "width": layout.get("width") or 1000, "height": layout.get("height") or 520, "scale": scale}})
        try:
            kaleido.write_fig_from_object_sync(specs, kopts={"mathjax": False}, cancel_on_error=True)  # a figure that fails raises
        except Exception as exc:
            if "chrome" in f"{type(exc).__name__} {exc}".lower():
                raise MonosemError("PNG/SVG export needs Chrome or Chromium: on Debian `sudo apt-get install chromium`, or `plotly_get_chrome` "
                                   f"(a download); the HTML figures are written already ({type(exc).__name__}: {exc})") from exc
            raise
        missing = [spec["path"] for spec in specs if not Path(spec["path"]).is_file()]
        if missing:
            raise MonosemError(f"kaleido wrote {len(specs) - len(missing)} of {len(specs)} images (missing: {missing[:3]}); nothing was moved into place")
        for (_, image), spec in zip(figures, specs):
            os.replace(spec["path"], image)
    return [image for _, image in figures]


def collect_sae_metrics(mp: ModelPaths, spec: ModelSpec, presets: Sequence[str], layers: Sequence[int],
                        caches: Sequence[ActivationCache]) -> dict[str, dict[str, dict[str, Any]]]:
    """{preset: {layer: metrics}}: notebook 02's metrics (with fidelity) where it wrote them, else computed here on ``caches``' tokens."""
    record = read_sae_metrics(mp, spec)
    written = record.per_preset if record is not None else {}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for p in presets:
        out[p] = {}
        for L in layers:
            if str(L) in written.get(p, {}):
                out[p][str(L)] = written[p][str(L)]
            else:
                sae, _ = load_sae(mp.sae(L, p))
                out[p][str(L)] = sae_metrics(sae, TokenSource.from_caches(caches, L))
    return out


def build_summary(cfg: RunConfig, spec: ModelSpec, layers: Sequence[int], presets: Sequence[str], comparison: Comparison,
                  sae_metrics_by_preset: dict[str, dict[str, dict[str, Any]]], criterion: Criterion,
                  reference_study: dict[str, Any] | None = None, preset: str | None = None,
                  logit_lens: Sequence[dict[str, Any]] = (), logit_lens_words: dict[str, Any] | None = None, **extra: Any) -> Summary:
    """The ``summary.json`` record of notebook 03: settings, the analysed ``preset`` per layer (default: the configured
    one, or the imported SAEs), every preset, the scorecard, and (a causal LM) the logit lens of the top selective features
    (rows: layer, feature, concept, top_tokens, concept_auroc); ``extra``: the fields of issue 19's metrics (specificity,
    headline, replication, probes, coverage, lexicon, natural_text, causal_readout), JSON-ready."""
    presets_summary = {p: {str(L): {**metrics_without_timing(sae_metrics_by_preset[p][str(L)]),
                                    **layer_summary(comparison.sae(p)[L], cfg.threshold)} for L in layers} for p in presets}
    preset = preset or (presets[0] if cfg.sae_source else cfg.sae_preset)
    if preset == AUTO_PRESET:
        preset = analysed_preset(list(presets))
    return Summary(spec.asked, spec.used, spec.revision, list(layers), cfg.threshold, cfg.alpha, cfg.pooling, preset, cfg.n_permutations,
                   cfg.n_bootstrap, cfg.n_splits, cfg.seed, criterion.describe(), presets_summary[preset], presets_summary,
                   _jsonable(comparison.scorecard_json()), reference_study or {}, [dict(r) for r in logit_lens], dict(logit_lens_words or {}),
                   **{k: _jsonable(v) for k, v in extra.items()})


def _jsonable(value: Any) -> Any:
    """DataFrames as lists of records (NaN as None), numpy scalars as Python numbers, recursively."""
    if isinstance(value, pd.DataFrame):
        return _jsonable(value.to_dict(orient="records"))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def reference_study_json(result: ReferenceResult) -> dict[str, Any]:
    """The reference study's record for summary.json: its sentences, keyword rows found and lost, and summary lines."""
    return {"sentences": list(result.sentences), "found": list(result.found), "lost": dict(result.lost), "threshold": result.threshold,
            "lines": result.lines, "n_monosemantic": {str(L): int(r.summary["n_monosemantic"]) for L, r in result.layers.items()}}


SWEEP_FILES = ("sweep.csv", "sweep.json", "sweep.html", "sweep.png")


def write_sweep(folder: Path, table: pd.DataFrame, meta: dict[str, Any], fig: Any) -> list[Path]:
    """The budget sweep's table (CSV), its record (the command, commit, plan and times: JSON) and its figure (HTML, and PNG
    when Chromium is there), each written atomically; the JSON last, so a sweep.json always describes the CSV beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [atomic_write_text(folder / "sweep.csv", table.to_csv(index=False, float_format="%.6g"))]
    paths.append(atomic_write_text(folder / "sweep.html", fig.to_html(include_plotlyjs="cdn", full_html=True)))
    try:
        paths += write_images([(fig.to_plotly_json(), folder / "sweep.png")], scale=1.5)
    except MonosemError as exc:
        import warnings

        warnings.warn(f"sweep.png not written: {exc}", stacklevel=2)
    paths.append(write_json(folder / "sweep.json", _jsonable(meta)))
    return paths


def read_sweep(folder: Path) -> tuple[pd.DataFrame, dict[str, Any]] | None:
    """The sweep's table and record from ``folder``, or None when ``bench/sweep.py`` has not written them there."""
    if not (folder / "sweep.csv").is_file() or not (folder / "sweep.json").is_file():
        return None
    meta = read_json(folder / "sweep.json", "the sweep record", "rerun make sweep")
    return pd.read_csv(folder / "sweep.csv"), meta
