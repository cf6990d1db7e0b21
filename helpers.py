"""The notebooks' one import: a thin door onto the ``monosem`` package.

It only re-exports the names the notebooks in ``notebooks/`` use (listed in ``__all__``) and defines
nothing itself. The machinery lives in ``monosem/``, one module per concern in the order data flows:
config -> model, dataset, corpus -> activations, cache, run manifest -> SAE (classes, training,
SAELens interop) -> fidelity -> selectivity, statistics, bases -> results -> figures, widgets,
dashboards. Tests, benchmarks and scripts import ``monosem`` directly.
"""

from __future__ import annotations

from monosem.activations import count_tokens, position_norms, word_token_check
from monosem.bases import MLPBasis, RateMatched, ResidualBasis, SAEBasis, basis_rates, compare_bases, headline, random_control_bases, standard_bases, trained_sae_basis
from monosem.cache import load_or_extract_concepts, load_or_extract_corpus
from monosem.causal import concept_token_rank, logit_lens, shared_first_tokens
from monosem.config import RunConfig
from monosem.corpus import corpus_words_needed, load_or_build_corpus, resolve_corpus, sample_texts, show_corpus_banner
from monosem.criterion import Criterion, frame_rows
from monosem.dataset import CATEGORIES, CONCEPTS, load_concepts
from monosem.fidelity import splice_fidelity_many
from monosem.lexicon import load_lexicon
from monosem.massive import massive_report, massive_thresholds, norms_of_caches
from monosem.model import check_layers, get_blocks, is_causal_lm, load_model, mlp_signed, resolve_model, show_model_banner
from monosem.natural import lexicon_labeller, natural_tokens
from monosem.paired import lemma_groups
from monosem.paths import model_paths
from monosem.probes import coverage_table, natural_probe, probe_table
from monosem.readout import clean_readout, concept_edit_effects, concept_token_ids, kind_contrast, mlp_output_weight
from monosem.reference_study import reference_run
from monosem.report import control_lines, findings
from monosem.results import (
    SaeMetricsFile,
    build_summary,
    collect_sae_metrics,
    export_feature_json,
    export_feature_page,
    read_selectivity_tables,
    read_summary,
    reference_study_json,
    sae_metrics_entry,
    save_figure,
    write_sae_metrics,
    write_selectivity_tables,
    write_summary,
)
from monosem.run import analysed_saes, open_run, write_manifest
from monosem.runtime import pick_device, set_seed
from monosem.sae.presets import PRESETS, preset_overrides
from monosem.sae.saelens import check_saelens_roundtrip
from monosem.sae.train import SAEJob, TokenSource, seed_variant, train_or_load_saes, training_plan
from monosem.selectivity import layer_summary, reference_pick, summary_line, top_features, top_words, word_means
from monosem.specificity import Specificity, concept_families, density_matched, pick_by_concept
from monosem.stats import word_data
from monosem.store import ActivationStore
from monosem.viz.dashboard import FeatureDashboard, build_dashboards, feature_page_html
from monosem.viz.figures import fig_concept_means, fig_headline, fig_loss_curves, fig_norms, fig_preset_comparison, fig_scorecard, fig_selectivity, fig_word_heatmap
from monosem.viz.widgets import SelectivityExplorer, WordExplorer

__all__ = [
    "RunConfig",
    "load_lexicon", "lexicon_labeller", "natural_tokens", "Specificity", "concept_families", "density_matched", "pick_by_concept", "lemma_groups", "coverage_table", "natural_probe", "probe_table", "word_data",
    "pick_device", "set_seed",
    "check_layers", "get_blocks", "is_causal_lm", "load_model", "mlp_signed", "resolve_model", "show_model_banner",
    "massive_report", "massive_thresholds", "norms_of_caches",
    "model_paths",
    "CATEGORIES", "CONCEPTS", "load_concepts",
    "corpus_words_needed", "load_or_build_corpus", "resolve_corpus", "sample_texts", "show_corpus_banner",
    "count_tokens", "position_norms", "word_token_check",
    "load_or_extract_concepts", "load_or_extract_corpus",
    "ActivationStore",
    "analysed_saes", "open_run", "write_manifest",
    "preset_overrides", "PRESETS",
    "SAEJob", "TokenSource", "seed_variant", "train_or_load_saes", "training_plan",
    "check_saelens_roundtrip",
    "splice_fidelity_many",
    "layer_summary", "reference_pick", "summary_line", "top_features", "top_words", "word_means",
    "Criterion", "frame_rows",
    "MLPBasis", "ResidualBasis", "SAEBasis", "headline", "basis_rates", "RateMatched", "compare_bases", "random_control_bases", "standard_bases", "trained_sae_basis",
    "clean_readout", "concept_edit_effects", "concept_token_ids", "kind_contrast", "mlp_output_weight", "concept_token_rank", "logit_lens", "shared_first_tokens",
    "reference_run",
    "build_summary", "collect_sae_metrics", "export_feature_json", "export_feature_page", "read_selectivity_tables", "read_summary", "reference_study_json", "sae_metrics_entry", "SaeMetricsFile", "save_figure", "write_sae_metrics", "write_selectivity_tables", "write_summary",
    "control_lines", "findings",
    "fig_concept_means", "fig_headline", "fig_loss_curves", "fig_norms", "fig_preset_comparison", "fig_scorecard", "fig_selectivity", "fig_word_heatmap",
    "SelectivityExplorer", "WordExplorer",
    "build_dashboards", "feature_page_html", "FeatureDashboard",
]
