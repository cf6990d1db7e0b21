"""monosem.report: every findings sentence is computed from summary.json, the paired headline leads and claims an order only
where its CI excludes 0, and the README's block is what the script writes."""

from __future__ import annotations

import pandas as pd

from monosem.criterion import Criterion
from monosem.report import control_lines, findings, headline_sentences, readme_findings
from monosem.results import Summary
from monosem.specificity import Specificity


def card(frac: float, specific: float, density: float) -> dict:
    return {"n_units": 100, "n_active": 50, "n_selective": int(frac * 50), "fraction_selective_active": frac, "probe_k5_auroc": 0.95,
            "fraction_specific": specific, "fraction_specific_shuffle": 0.001, "density_words_median": density, "n_firing": 80,
            "specificity_corpus_median_specific": 0.2, "specificity_corpus_random_matched": 0.01}


def headline_rows(low: float, high: float) -> list[dict]:
    rows = []
    for layer in (0, 1):
        for metric in ("fraction_specific", "specificity", "sensitivity", "coverage_k5", "probe_k1"):
            shift = 0.1 if metric == "coverage_k5" else 0.0
            rows.append({"layer": layer, "metric": metric, "sae": 0.5 + shift, "neurons": 0.5, "difference": shift, "ci_low": low + shift,
                         "ci_high": high + shift, "seed_min": shift - 0.01, "seed_max": shift + 0.01, "n_seeds": 3, "resampling": "bootstrap"})
    return rows


def summary() -> Summary:
    per_layer = {str(L): {"n_features": 100, "n_selective": 3, "n_monosemantic": 40, "train_tokens": 1_000_448} for L in (0, 1)}
    scorecard = {"SAE (topk)": {"0": card(0.06, 0.05, 0.015), "1": card(0.08, 0.04, 0.015)},
                 "MLP neurons ± @ SAE (topk) density": {"0": card(0.04, 0.03, 0.015), "1": card(0.1, 0.05, 0.015)},
                 "random-weight model: SAE (topk)": {"0": card(0.0, 0.01, 0.02), "1": card(0.0, 0.01, 0.02)}}
    probes = [{"basis": "SAE (topk)", "layer": L, "setting": "standard", "k": 1, "auroc": 0.8, "ci_low": 0.7, "ci_high": 0.9} for L in (0, 1)]
    return Summary("gpt2-medium", "tiny", "abc", [0, 1], 0.6, 0.05, "mean", "topk", 100, 100, 20, 0, Criterion().describe(), per_layer,
                   scorecard=scorecard, reference_study={"n_monosemantic": {"0": 4}, "lost": {"blue": "blue."}, "found": {"green": 1}},
                   specificity=Specificity().describe(), headline={"first word list": headline_rows(-0.02, 0.03)}, probes=probes,
                   natural_text={"tokens": 9000})


def test_the_headline_leads_and_claims_an_order_only_where_the_ci_excludes_zero():
    text = findings(summary())
    assert text[0].startswith("Are SAE features more monosemantic than the model's own neurons? On the first word list")
    assert "held-out recall of a concept's 5-unit family: SAE higher at layers 0, 1" in text[0]  # CI [0.08, 0.13] excludes 0
    assert "mean specificity of firing units (templates): not told apart at layers 0, 1" in text[0]  # CI [-0.02, 0.03] holds 0
    assert "difference +0.100 [+0.080, +0.130], seeds +0.090 to +0.110" in text[0] and "range over 3 training seed(s)" in text[0]
    lower = Summary(**{**summary().__dict__, "headline": {"second word list": headline_rows(-0.3, -0.2)}})
    assert "k = 1 probe AUROC (held out): other higher at layers 0, 1" in headline_sentences(lower)[0]


def test_findings_state_definitions_density_and_the_natural_text_null():
    text = "\n".join(findings(summary()))
    assert "specificity >= 0.8" in text and "hypergeometric p < 0.05" in text and "dense autoencoder" in text
    assert "SAE (topk) 5.0% specific (shuffled categories 0.1%), density 1.5% of words" in text
    assert "SAE (topk) 0.20 vs 0.01" in text  # natural-text precision against same-rate random units
    assert "k = 1 probe, held-out AUROC with 95% bootstrap CI: standard: SAE (topk) 0.80 [0.70, 0.90]" in text
    assert "40 above the reference threshold" in text  # the reference criterion stays beside


def test_control_lines_compare_the_label_with_the_real_model():
    rows = pd.DataFrame([{"basis": "SAE (topk)", "layer": 0, "fraction_specific": 0.05, "fraction_selective_active": 0.1, "n_firing": 80, "n_active": 50},
                         {"basis": "random-weight model: SAE (topk)", "layer": 0, "fraction_specific": 0.01, "fraction_selective_active": float("nan"),
                          "n_firing": 40, "n_active": 30}])
    line = control_lines(rows, 0.05, 1000)[0]
    assert "1.0% of 40 firing units specific, against 5.0% specific in the real model's SAE (topk)" in line and "'selective'" not in line


def test_readme_block_has_the_tables():
    block = readme_findings(summary())
    assert "| SAE (topk) | 5.0% | 4.0% |" in block and "| MLP neurons ± @ SAE (topk) density | 1.5% | 1.5% |" in block


def test_the_untrained_comparison_asks_whether_training_matters():
    rows = [{**r, "against": "untrained SAE (topk)", "other": r["neurons"]} for r in headline_rows(-0.02, 0.03)]
    s = Summary(**{**summary().__dict__, "headline": {"first word list": rows}})
    sentence = headline_sentences(s)[0]
    assert sentence.startswith("Does training make the SAE's features more monosemantic than its untrained initialisation")
    assert "against untrained SAE (topk)" in sentence


def test_the_causal_readout_sentence_reports_each_contrast_with_its_ci():
    contrast = [{"edit": "steer", "kind_a": "SAE feature", "kind_b": "random direction", "n_a": 16, "n_b": 16, "difference": 0.0157,
                 "ci_low": 0.0065, "ci_high": 0.0267, "p": 0.003}]
    s = Summary(**{**summary().__dict__, "causal_contrast": contrast, "causal_readout": [{"layer": 0}, {"layer": 1}]})
    text = "\n".join(findings(s))
    assert "steer SAE feature − random direction +0.0157 [+0.0065, +0.0267], p = 0.003 (n = 16, 16)" in text and "over 2 layers" in text
