"""monosem.report: every findings sentence is computed from summary.json, and the README's block is what the script writes."""

from __future__ import annotations

from monosem.criterion import Criterion
from monosem.report import findings, readme_findings
from monosem.results import Summary


def card(frac: float, probe: float) -> dict:
    return {"n_units": 100, "n_active": 50, "n_selective": int(frac * 50), "fraction_selective_active": frac, "probe_k5_auroc": probe}


def summary(untrained_wins: bool) -> Summary:
    per_layer = {str(L): {"n_features": 100, "n_selective": 3, "n_selective_by_concept": {"numbers": 2, "actions": 1}, "n_monosemantic": 40,
                          "n_control_top": 1, "n_selective_category_frames": 5, "n_form_bound": 2, "n_form_bound_by_concept": {"actions": 2},
                          "train_tokens": 1_000_448} for L in (0, 1)}
    u = 0.2 if untrained_wins else 0.01
    scorecard = {"SAE (topk)": {"0": card(0.06, 0.951), "1": card(0.08, 0.955)}, "untrained SAE (topk)": {"0": card(u, 0.94), "1": card(u, 0.95)},
                 "MLP neurons": {"0": card(0.04, 0.962), "1": card(0.10, 0.97)},
                 "random-weight model: SAE (topk)": {"0": card(0.0, 0.52), "1": card(0.0, 0.51)}}
    return Summary("gpt2-medium", "tiny", "abc", [0, 1], 0.6, 0.05, "mean", "topk", 100, 100, 20, 0, Criterion().describe(), per_layer,
                   scorecard=scorecard, reference_study={"n_monosemantic": {"0": 4}, "lost": {"blue": "blue."}, "found": {"green": 1}})


def test_findings_state_the_counts_of_the_summary():
    text = "\n".join(findings(summary(False)))
    assert "3 selective (numbers 2, actions 1)" in text and "40 above the reference threshold" in text
    assert "2 more pass every other test but respond to one surface form" in text and "actions 2" in text
    assert "SAE (topk) 3/50 = 6.0% ± 3.4" in text and "MLP neurons 5/50 = 10.0% ± 4.2" in text  # counts, share and standard error
    assert "seven/7" in text  # the lemma caveat of the splits
    assert "random-weight model" not in text.split("share of selective units")[1].split(".")[0]  # the control is reported apart
    assert "SAE (topk) 0.0% (real model 6.0%)" in text
    assert "0.951-0.962 for the trained SAEs, residual and MLP (a spread this small" in text and "0.940-0.940 for the untrained SAEs" in text
    assert "highest for" not in text and "the best 5-sparse probe" not in text


def test_trained_vs_untrained_sentence_follows_the_numbers():
    wins = "\n".join(findings(summary(True)))
    assert "in 2 of 2 (preset, layer) pairs" in wins and "training does not reliably produce" in wins
    assert "At every layer the untrained SAE (topk) has a higher share of selective units than every trained sparse SAE" in wins
    loses = "\n".join(findings(summary(False)))
    assert "in 0 of 2 (preset, layer) pairs (none" in loses and "training does not reliably produce" not in loses
    assert "At every layer the untrained" not in loses


def test_readme_block_has_the_scorecard_tables():
    block = readme_findings(summary(False))
    assert "| SAE (topk) | 6.0% | 8.0% |" in block and "| MLP neurons | 0.962 | 0.970 |" in block

