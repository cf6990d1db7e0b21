"""results.py: the typed result files round-trip, readers refuse another model's or preset's files, and summary.json has no timings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monosem.bases import Basis, Comparison, SAEBasis, compare_bases
from monosem.config import MonosemError, RunConfig
from monosem.criterion import Criterion
from monosem.model import ModelSpec
from monosem.paths import model_paths
from monosem.results import (
    TIMING_KEYS,
    SaeMetricsFile,
    Summary,
    build_summary,
    metrics_without_timing,
    read_sae_metrics,
    read_selectivity_tables,
    read_summary,
    write_sae_metrics,
    write_selectivity_tables,
    write_summary,
)
from monosem.scorecard import SCORECARD_KEYS, unit_table
from monosem.testing import synthetic_activations

SPEC = ModelSpec("bundled", "sentence-transformers/all-MiniLM-L6-v2", "/nowhere", "sha256:0123456789abcdef")
OTHER = ModelSpec("gpt2-medium", "gpt2-medium", "gpt2-medium", "abc")


class FakeSAEBasis(SAEBasis):
    """A trained-SAE basis whose activations are fixed arrays per layer (no SAE, no cache)."""

    def __init__(self, preset: str, acts: dict[int, np.ndarray]):
        super().__init__(f"SAE ({preset})", lambda layer: None, preset)  # type: ignore[arg-type, return-value]
        self.acts = acts

    def activations(self, cache, layer, pooling="mean"):
        a = self.acts[layer]
        return a, (a > 0).any(0)


class FakeBasis(Basis):
    name = "residual ±"

    def __init__(self, acts: dict[int, np.ndarray]):
        self.acts = acts

    def activations(self, cache, layer, pooling="mean"):
        a = self.acts[layer]
        return a, (a > 0).any(0)


def synthetic_comparison(seed: int = 0) -> tuple[pd.DataFrame, Comparison]:
    df, a = synthetic_activations(n_words=5, n_sent=3, n_units=12, selective=3, seed=1)
    _, b = synthetic_activations(n_words=5, n_sent=3, n_units=12, selective=0, seed=2)
    bases = [FakeSAEBasis("reference", {0: a, 2: b}), FakeSAEBasis("l1", {0: b, 2: a}), FakeBasis({0: a, 2: b})]
    return df, compare_bases(bases, df, None, [0, 2], progress=False, criterion=Criterion(n_splits=10, seed=seed), n_boot=40)  # type: ignore[arg-type]


def metrics(mse: float) -> dict:
    """One preset/layer entry of sae_metrics.json as notebook 02 writes it: training metrics, fidelity, wall-clock time."""
    return {"mse": mse, "fve": 0.9, "l0": 3.0, "dead_fraction": 0.0, "kind": "output_cosine", "cos_sae": 0.95, "fidelity": 0.95,
            "seconds": 1.25, "tokens_per_second": 1234.5}


SAE_METRICS = {p: {str(L): metrics(0.1 * (L + 1)) for L in (0, 2)} for p in ("reference", "l1")}


def make_summary(spec: ModelSpec = SPEC, preset: str = "reference") -> Summary:
    return Summary(spec.asked, spec.used, spec.revision, [0, 2], 0.6, 0.05, "mean", preset, 100, 100, 5, 0, Criterion().describe(),
                   {"0": {"n_features": 12, "n_monosemantic": 1}}, {preset: {"0": {"n_features": 12}}}, {"residual ±": {"0": {"n_units": 24}}},
                   {"lines": ["Layer 0: found 1 monosemantic features"]})


@pytest.fixture
def mp(tmp_path):
    return model_paths(tmp_path, SPEC.used)


# -- round trips --------------------------------------------------------------------------------------


def test_summary_round_trip(mp):
    summary = make_summary()
    path = write_summary(mp, summary)
    assert path == mp.results / "summary.json"
    assert read_summary(mp, SPEC) == summary
    assert read_summary(mp, SPEC, preset="reference") == summary
    assert json.loads(path.read_text())["model_used"] == SPEC.used


def test_sae_metrics_round_trip(mp):
    record = SaeMetricsFile(SPEC.asked, SPEC.used, "wordnet", 200 * 64, 64, 3, SAE_METRICS)
    path = write_sae_metrics(mp, record)
    assert path == mp.results / "sae_metrics.json"
    assert read_sae_metrics(mp, SPEC) == record
    assert json.loads(path.read_text())["per_layer"] == SAE_METRICS["reference"]  # the reference preset, as before presets existed


def test_read_sae_metrics_when_missing_is_none(mp):
    assert read_sae_metrics(mp, SPEC) is None


def test_read_sae_metrics_of_another_model_raises(tmp_path):
    mp = model_paths(tmp_path, SPEC.used)
    write_sae_metrics(mp, SaeMetricsFile(OTHER.asked, OTHER.used, "wordnet", 200 * 64, 64, 0, SAE_METRICS))
    with pytest.raises(MonosemError, match="gpt2-medium"):
        read_sae_metrics(mp, SPEC)


# -- readers refuse the wrong preset or model ----------------------------------------------------------


def test_read_summary_of_another_preset_names_both(mp):
    write_summary(mp, make_summary(preset="reference"))
    with pytest.raises(MonosemError) as err:
        read_summary(mp, SPEC, preset="l1")
    msg = str(err.value)
    assert "'reference'" in msg and "'l1'" in msg and "03_selectivity" in msg, msg


def test_read_summary_of_another_model_raises(mp):
    write_summary(mp, make_summary(spec=OTHER))
    with pytest.raises(MonosemError) as err:
        read_summary(mp, SPEC)
    assert "gpt2-medium" in str(err.value) and SPEC.used in str(err.value), str(err.value)


def test_read_summary_missing_or_malformed(mp):
    with pytest.raises(MonosemError, match="03_selectivity"):
        read_summary(mp, SPEC)
    (mp.results / "summary.json").parent.mkdir(parents=True, exist_ok=True)
    (mp.results / "summary.json").write_text('{"model_used": "x"}')
    with pytest.raises(MonosemError, match="03_selectivity"):
        read_summary(mp, SPEC)


# -- selectivity tables -----------------------------------------------------------------------------------


def test_selectivity_tables_go_under_the_preset_folder_and_round_trip(mp):
    df, acts = synthetic_activations(n_words=4, n_sent=2, n_units=10, selective=2)
    acts[:, 7] = 0.0  # a dead unit: top_concept ''
    table = unit_table(acts, df, criterion=Criterion(n_splits=10), n_boot=40)[0]
    paths = write_selectivity_tables(mp, "l1", {0: table, 3: table})
    assert paths == [mp.results / "l1" / "selectivity_layer_0.csv", mp.results / "l1" / "selectivity_layer_3.csv"]
    assert all(p.is_file() for p in paths)
    back = read_selectivity_tables(mp, "l1", [0, 3])
    assert list(back) == [0, 3]
    assert back[0].loc[7, "top_category"] == "" and back[0].loc[7, "top_concept_reference"] == ""
    pd.testing.assert_frame_equal(back[0], table, check_exact=False, rtol=1e-5, atol=1e-7, check_dtype=False)
    with pytest.raises(MonosemError, match="03_selectivity"):
        read_selectivity_tables(mp, "reference", [0])  # another preset's tables were never written


def test_preset_names_cannot_escape_the_results_folder(mp):
    df, acts = synthetic_activations(n_words=2, n_sent=2, n_units=4)
    (path,) = write_selectivity_tables(mp, "../../evil", {1: unit_table(acts, df, criterion=Criterion(n_splits=10), n_boot=40)[0]})
    assert mp.results in path.parents and path.name == "selectivity_layer_1.csv"


def test_read_selectivity_tables_missing_preset_says_run_notebook_03(mp):
    with pytest.raises(MonosemError) as err:
        read_selectivity_tables(mp, "topk", [0])
    assert "03_selectivity" in str(err.value) and "topk" in str(err.value), str(err.value)


# -- timings stay out of summary.json ----------------------------------------------------------------------


def test_metrics_without_timing():
    m = metrics(0.5)
    out = metrics_without_timing(m)
    assert set(TIMING_KEYS) == {"seconds", "tokens_per_second"}
    assert not set(TIMING_KEYS) & set(out)
    assert out["mse"] == 0.5 and out["fve"] == 0.9
    assert m["seconds"] == 1.25  # the input is not modified


def _keys(obj) -> set[str]:
    if isinstance(obj, dict):
        return set(obj) | {k for v in obj.values() for k in _keys(v)}
    if isinstance(obj, (list, tuple)):
        return {k for v in obj for k in _keys(v)}
    return set()


def test_build_summary_has_no_timing_anywhere():
    _, comparison = synthetic_comparison()
    cfg = RunConfig.from_env(environ={}, layers=(0, 2), sae_presets=("reference", "l1"), sae_preset="l1")
    summary = build_summary(cfg, SPEC, [0, 2], ["reference", "l1"], comparison, SAE_METRICS, Criterion.from_config(cfg))
    out = summary.to_json()
    found = _keys(out) & set(TIMING_KEYS)
    assert not found, f"timing keys {found} in summary.json"
    assert out["sae_preset"] == "l1" and set(out["presets"]) == {"reference", "l1"}
    assert out["per_layer"] == out["presets"]["l1"]
    assert out["presets"]["l1"]["0"]["mse"] == SAE_METRICS["l1"]["0"]["mse"]
    assert out["presets"]["reference"]["2"]["n_features"] == 12
    assert set(out["scorecard"]) == {"SAE (reference)", "SAE (l1)", "residual ±"} and set(out["scorecard"]["residual ±"]) == {"0", "2"}
    assert set(out["scorecard"]["SAE (l1)"]["2"]) == set(SCORECARD_KEYS)
    assert out["criterion"]["min_replication"] == cfg.min_replication and out["criterion"]["frames"] == "neutral"
    assert (out["model_used"], out["layers"], out["threshold"]) == (SPEC.used, [0, 2], cfg.threshold)
    json.dumps(out)  # JSON-serialisable


def test_written_summary_round_trips(tmp_path):
    _, comparison = synthetic_comparison()
    cfg = RunConfig.from_env(environ={}, layers=(0, 2), sae_presets=("reference", "l1"))
    summary = build_summary(cfg, SPEC, [0, 2], ["reference", "l1"], comparison, SAE_METRICS, Criterion.from_config(cfg))
    assert summary.sae_preset == "l1", "auto picks a trained modern preset, never the reference study's when another is trained"
    mp = model_paths(Path(tmp_path), SPEC.used)
    write_summary(mp, summary)
    back = read_summary(mp, SPEC, preset="l1")
    assert json.dumps(back.to_json(), sort_keys=True) == json.dumps(json.loads(json.dumps(summary.to_json())), sort_keys=True)


def test_saved_figures_share_one_plotly_js_and_draw_offline(tmp_path):
    import plotly.graph_objects as go

    from monosem.paths import model_paths
    from monosem.results import save_figure

    mp = model_paths(tmp_path, "some/model")
    assert save_figure(mp, go.Figure(go.Bar(y=[1])), "a", enabled=False) is None and not mp.figures.exists()
    a = save_figure(mp, go.Figure(go.Bar(y=[1, 2])), "Figure 1: a", enabled=True)
    b = save_figure(mp, go.Figure(go.Bar(y=[3])), "Figure 2", enabled=True)
    assert a and b and a.parent == b.parent == mp.figures
    js = mp.figures / "plotly.min.js"
    assert js.stat().st_size > 1_000_000  # plotly.js itself, written once
    for page in (a, b):
        text = page.read_text()
        assert 'src="plotly.min.js"' in text and "cdn.plot.ly" not in text and len(text) < 100_000


def test_saved_figures_render_to_png_and_svg_once(tmp_path):
    """make run draws each saved figure as PNG and SVG (kaleido, Chromium, no network); an up-to-date image is not redrawn."""
    import shutil

    import plotly.graph_objects as go

    from monosem.io import slugify
    from monosem.paths import model_paths
    from monosem.results import figures_to_render, render_figure_images, save_figure

    if not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")):
        pytest.skip("no Chromium: make setup installs it (apt, as root)")
    mp = model_paths(tmp_path, "some/model")
    save_figure(mp, go.Figure(go.Bar(y=[1, 2]), layout=dict(title="a")), "Figure 1: a", enabled=True)
    save_figure(mp, go.Figure(go.Scatter(y=[3, 1])), "b", enabled=True)
    written = render_figure_images(mp.figures)
    a = slugify("Figure 1: a")
    assert sorted(p.name for p in written) == sorted([f"{a}.png", f"{a}.svg", "b.png", "b.svg"])
    assert (mp.figures / f"{a}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (mp.figures / "b.svg").read_text()[:2000]
    assert not list(mp.figures.glob(".render-*")), "the temporary folder is gone"
    assert figures_to_render(mp.figures) == [] and render_figure_images(mp.figures) == []


def test_render_without_chromium_says_how_to_install_it(tmp_path, monkeypatch):
    import kaleido
    import plotly.graph_objects as go
    from kaleido.errors import ChromeNotFoundError

    from monosem.paths import model_paths
    from monosem.results import render_figure_images, save_figure

    def no_chrome(*args, **kwargs):
        raise ChromeNotFoundError("no chrome here")

    monkeypatch.setattr(kaleido, "write_fig_from_object_sync", no_chrome)
    mp = model_paths(tmp_path, "some/model")
    save_figure(mp, go.Figure(go.Bar(y=[1])), "a", enabled=True)
    with pytest.raises(MonosemError, match="apt-get install chromium"):
        render_figure_images(mp.figures)
    assert not list(mp.figures.glob("*.png")) and not list(mp.figures.glob(".render-*"))
