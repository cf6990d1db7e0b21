"""Findings in words: sentences computed from a ``summary.json`` record, for the notebooks' "What we found" and the README.

Every number in these sentences is read from the summary; nothing is typed by hand. Each sentence
names the criterion, the data and the training budget it holds for.
"""

from __future__ import annotations

from typing import Any

from monosem.results import Summary

CONTROL_PREFIX = "random-weight model"


def _fmt_fraction(x: float) -> str:
    return f"{x:.1%}"


def _by_layer(scorecard: dict[str, dict[str, dict[str, Any]]], key: str) -> dict[str, dict[str, float]]:
    """{layer: {basis: value of key}}."""
    out: dict[str, dict[str, float]] = {}
    for basis, layers in scorecard.items():
        for layer, row in layers.items():
            out.setdefault(layer, {})[basis] = row[key]
    return out


def findings(summary: Summary) -> list[str]:
    """The run's findings as sentences, each computed from ``summary``."""
    s = summary
    crit = s.criterion
    out = [f"Model: {s.model_used} (asked for {s.model_asked}); layers {s.layers}; analysed SAE preset: {s.sae_preset}. "
           f"Final label 'selective': top category among all 8 (controls included) is a concept, confirmed on held-out words in at least "
           f"{crit.get('min_replication', 0):.0%} of {crit.get('n_splits', '?')} word splits (one-sided Mann-Whitney, alpha {crit.get('alpha', s.alpha):g}), "
           f"neutral frames only. Reference criterion: score_reference > {s.threshold:g}."]
    for layer, row in s.per_layer.items():
        by_concept = ", ".join(f"{c} {n}" for c, n in row.get("n_selective_by_concept", {}).items()) or "none"
        budget = f"{row['train_tokens']:,} training tokens" if "train_tokens" in row else "its training budget"
        out.append(f"Layer {layer}, {s.sae_preset} SAE ({row.get('n_features', '?')} features, {budget}): {row.get('n_selective', 0)} selective ({by_concept}); "
                   f"{row.get('n_monosemantic', 0)} above the reference threshold; {row.get('n_control_top', 0)} replicate with a control category on top; "
                   f"{row.get('n_selective_category_frames', 0)} would be selective on the category frames.")
    fractions = _by_layer(s.scorecard, "fraction_selective_active")
    probes = _by_layer(s.scorecard, "probe_k5_auroc")
    for layer in fractions:
        real = {b: v for b, v in fractions[layer].items() if not b.startswith(CONTROL_PREFIX)}
        if real:
            best = max(real, key=lambda b: real[b])
            ranked = ", ".join(f"{b} {_fmt_fraction(v)}" for b, v in sorted(real.items(), key=lambda kv: -kv[1]))
            out.append(f"Layer {layer}: the largest share of selective units among active units is {best}'s ({_fmt_fraction(real[best])}); all: {ranked}.")
        real_probe = {b: v for b, v in probes.get(layer, {}).items() if not b.startswith(CONTROL_PREFIX)}
        if real_probe:
            best = max(real_probe, key=lambda b: real_probe[b])
            out.append(f"Layer {layer}: the best 5-sparse probe on held-out words reads {best} (AUROC {real_probe[best]:.3f}).")
        control = {b: v for b, v in fractions[layer].items() if b.startswith(CONTROL_PREFIX)}
        if control:
            worst = max(control, key=lambda b: control[b])
            verdict = "at or below" if control[worst] <= s.alpha else "ABOVE"
            out.append(f"Layer {layer}: the random-weight control's largest share of selective units is {_fmt_fraction(control[worst])} ({worst}), "
                       f"{verdict} the false-positive level alpha = {s.alpha:g}.")
    ref = s.reference_study
    if ref:
        lost = ", ".join(f"{k} ({v!r})" for k, v in ref.get("lost", {}).items())
        out.append(f"The reference study as it ran finds {ref.get('n_monosemantic', {})} 'monosemantic' features per layer on its 12 sentences; "
                   f"its keyword heatmap loses the rows {lost} to text.split() punctuation, leaving {len(ref.get('found', {}))} rows.")
    return out
