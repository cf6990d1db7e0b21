"""Findings in words: sentences computed from a ``summary.json`` record, for the notebooks' "What we found" and the README.

Every number in these sentences is read from the summary; nothing is typed by hand. Each sentence
names the criterion, the data and the training budget it holds for.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from monosem.dataset import FORM_BOUND, SURFACE_FORMS
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


def _form_bound_detail(row: dict) -> str:
    """'actions 3, numbers 1; mean activation on one form below 0.1x the other (numbers: written in digits or not, ...)'."""
    bound = row.get("n_form_bound_by_concept", {})
    parts = ", ".join(f"{c} {n}" for c, n in bound.items()) or "none"
    forms = ", ".join(f"{c}: {name} or not" for c, (name, _) in SURFACE_FORMS.items() if bound.get(c))
    return f"{parts}; mean activation on one form below {FORM_BOUND:g}x the other" + (f" ({forms})" if forms else "")


def _logit_lens_sentence(s: Summary) -> str | None:
    """Whether the top selective features' decoder directions promote their concept's words (causal LMs; None otherwise)."""
    aurocs = np.array([r["concept_auroc"] for r in s.logit_lens if r.get("concept_auroc") is not None and np.isfinite(r["concept_auroc"])])
    if not len(aurocs):
        return None
    layers = sorted({int(r["layer"]) for r in s.logit_lens})
    words = s.logit_lens_words
    ties = (f" A word is scored by its first token, and {words['n_sharing']} of the {words['n_words']} words share theirs with another word "
            f"({'; '.join(words['examples'])}), so their scores tie." if words.get("n_sharing") else "")
    return (f"Logit lens (each decoder direction through the model's final norm and unembedding) of the {len(aurocs)} top selective "
            f"{s.sae_preset} features of layers {layers}: AUROC of their concept's words against all other words of the dataset, median "
            f"{np.median(aurocs):.2f} (range {aurocs.min():.2f}-{aurocs.max():.2f}); {int((aurocs > 0.75).sum())} of {len(aurocs)} above 0.75, "
            f"{int((aurocs > 0.5).sum())} above 0.5 (0.5: no preference for the concept's words; 1: they are promoted above every other word). "
            "An early layer's direction reaches the output only through every later block, so a value near 0.5 says that the direction "
            "does not write its concept's tokens directly, not that the feature is not about its concept." + ties)


def findings(summary: Summary) -> list[str]:
    """The run's findings as sentences, each computed from ``summary``."""
    s = summary
    crit = s.criterion
    out = [f"Model: {s.model_used} (asked for {s.model_asked}); layers {s.layers}; analysed SAE preset: {s.sae_preset}. "
           f"Final label 'selective': top category among all 8 (controls included) is a concept, confirmed on held-out words in at least "
           f"{crit.get('min_replication', 0):.0%} of {crit.get('n_splits', '?')} word splits ({crit.get('test', 'one-sided Mann-Whitney')}, "
           f"alpha {crit.get('alpha', s.alpha):g}), neutral frames only"
           + (f", and not bound to one surface form (balance >= {crit['form_bound']:g})" if "form_bound" in crit else "")
           + f" (the splits do not keep words that share a lemma, such as seven/7 or runs/running, on one side, which inflates "
             f"replication). Reference criterion: score_reference > {s.threshold:g}."]
    for layer, row in s.per_layer.items():
        by_concept = ", ".join(f"{c} {n}" for c, n in row.get("n_selective_by_concept", {}).items()) or "none"
        budget = f"{row['train_tokens']:,} training tokens" if "train_tokens" in row else "its training budget"
        out.append(f"Layer {layer}, {s.sae_preset} SAE ({row.get('n_features', '?')} features, {budget}): {row.get('n_selective', 0)} selective ({by_concept}); "
                   f"{row.get('n_monosemantic', 0)} above the reference threshold; {row.get('n_control_top', 0)} replicate with a control category on top; "
                   f"{row.get('n_selective_category_frames', 0)} would be selective on the category frames"
                   + (f"; {row['n_form_bound']} more pass every other test but respond to one surface form of their concept's words only, "
                      f"so they are not counted as selective ({_form_bound_detail(row)})." if "n_form_bound" in row else "."))
    fractions = _by_layer(s.scorecard, "fraction_selective_active")
    probes = _by_layer(s.scorecard, "probe_k5_auroc")
    for layer in fractions:
        real = {b: v for b, v in fractions[layer].items() if not b.startswith(CONTROL_PREFIX)}
        if real:
            shares = ", ".join(_share(b, s.scorecard[b][layer]) for b in real)
            out.append(f"Layer {layer}, selective units among active units (final label; ± one binomial standard error over units, which "
                       f"ignores that units share words, so shares a few points apart are not told apart): {shares}.")
        real_probe = {b: v for b, v in probes.get(layer, {}).items() if not b.startswith(CONTROL_PREFIX)}
        if real_probe:
            out.append(f"Layer {layer}: 5-sparse probes on held-out words (averaged over concepts and 5 word splits of one seed) reach AUROC "
                       + "; ".join(_probe_range(name, vals) for name, vals in (
                           ("trained SAEs, residual and MLP", [v for b, v in real_probe.items() if not b.startswith("untrained")]),
                           ("untrained SAEs", [v for b, v in real_probe.items() if b.startswith("untrained")])) if vals) + ".")
        control = {b: v for b, v in fractions[layer].items() if b.startswith(CONTROL_PREFIX)}
        if control:
            pairs = "; ".join(f"{b.split(': ', 1)[1]} {_fmt_fraction(v)} (real model {_fmt_fraction(real.get(b.split(': ', 1)[1], float('nan')))})"
                              for b, v in control.items())
            out.append(f"Layer {layer}: the random-weight control (same architecture, random weights, its SAE on a reduced budget) has selective "
                       f"units among active units: {pairs}.")
    for sentence in (_trained_vs_untrained(fractions), _untrained_beats_all(fractions)):
        if sentence:
            out.append(sentence)
    lens = _logit_lens_sentence(s)
    if lens:
        out.append(lens)
    ref = s.reference_study
    if ref:
        lost = ", ".join(f"{k} ({v!r})" for k, v in ref.get("lost", {}).items())
        counts = ", ".join(f"layer {L}: {n}" for L, n in ref.get("n_monosemantic", {}).items())
        out.append(f"The reference study as it ran (12 sentences, d/2 SAE, 10 Adam steps) finds 'monosemantic' features ({counts}); "
                   f"its keyword heatmap loses the rows {lost} to text.split() punctuation, leaving {len(ref.get('found', {}))} rows.")
    return out


def _share(basis: str, row: dict) -> str:
    """'SAE (topk) 23/192 = 12.0% ± 2.3' (the binomial standard error over the basis's active units)."""
    k, n, p = row.get("n_selective"), row.get("n_active"), row["fraction_selective_active"]
    if not isinstance(k, int) or not isinstance(n, int) or n <= 0:
        return f"{basis} {_fmt_fraction(p)}"
    return f"{basis} {k}/{n} = {_fmt_fraction(p)} ± {100 * math.sqrt(p * (1 - p) / n):.1f}"


def _probe_range(name: str, values: list[float]) -> str:
    lo, hi = min(values), max(values)
    close = " (a spread this small changed order with the split seed in a review: no basis ranks above another)" if hi - lo < 0.05 and len(values) > 1 else ""
    return f"{lo:.3f}-{hi:.3f} for the {name}{close}"


def _untrained_beats_all(fractions: dict[str, dict[str, float]]) -> str:
    """A sentence for each untrained SAE whose share beats every trained sparse SAE (not the dense reference) at every layer."""
    out = []
    for u in sorted({b for by in fractions.values() for b in by if b.startswith("untrained SAE (")}):
        trained = lambda by: [v for b, v in by.items() if b.startswith("SAE (") and b != "SAE (reference)"]  # noqa: E731
        if all(u in by and trained(by) and by[u] > max(trained(by)) for by in fractions.values()):
            out.append(f"At every layer the {u} has a higher share of selective units than every trained sparse SAE "
                       f"(by this label, training the sparse SAEs does not add concept-selective units over that random dictionary).")
    return " ".join(out)


def _trained_vs_untrained(fractions: dict[str, dict[str, float]]) -> str:
    """How often an SAE's untrained initialisation (same preset and width, same data) has at least the trained SAE's share
    of selective units among active units, over presets and layers."""
    pairs = [(L, b[len("SAE ("):-1], v, by_basis[f"untrained {b}"]) for L, by_basis in fractions.items() for b, v in by_basis.items()
             if b.startswith("SAE (") and f"untrained {b}" in by_basis]
    if not pairs:
        return ""
    ties_or_more = [p for p in pairs if p[3] >= p[2]]
    shown = "; ".join(f"{p} layer {L} {_fmt_fraction(t)} vs {_fmt_fraction(u)}" for L, p, t, u in ties_or_more) or "none"
    return (f"Trained against untrained SAEs (the preset's initialisation on the same data, same width): the untrained one has at "
            f"least the trained one's share of selective units among active units in {len(ties_or_more)} of {len(pairs)} (preset, layer) "
            f"pairs ({shown}, trained vs untrained)" + ("; by this label, training does not reliably produce more concept-selective units."
                                                       if 2 * len(ties_or_more) >= len(pairs) else "."))


def scorecard_markdown(summary: Summary, key: str = "fraction_selective_active") -> str:
    """A markdown table of one scorecard key: one row per basis, one column per layer."""
    layers = [str(L) for L in summary.layers]
    fmt = _fmt_fraction if key.startswith("fraction") else (lambda x: f"{x:.3f}")
    rows = [f"| basis | {' | '.join(f'layer {L}' for L in layers)} |", "|---|" + "---|" * len(layers)]
    for basis, by_layer in summary.scorecard.items():
        rows.append(f"| {basis} | " + " | ".join(fmt(by_layer[L][key]) if L in by_layer else "–" for L in layers) + " |")
    return "\n".join(rows)


def readme_findings(summary: Summary, command: str = "make run") -> str:
    """The README's findings block: what was run, the findings as sentences, and the scorecard tables, all from ``summary``."""
    first = next(iter(summary.per_layer.values()), {})
    corpus = first.get("corpus", "the background corpus of notebook 01")
    lines = [f"Generated by `python scripts/update_readme.py --findings <summary.json>` from the `summary.json` of `{command}` "
             f"(model {summary.model_used}, training corpus: {corpus}, seed {summary.seed}).", ""]
    lines += [f"- {sentence}" for sentence in findings(summary)]
    lines += ["", "Selective units among active units (final label), per basis and layer:", "", scorecard_markdown(summary),
              "", "5-sparse probe AUROC on held-out words (controls as negatives), per basis and layer:", "",
              scorecard_markdown(summary, "probe_k5_auroc")]
    return "\n".join(lines)


def control_lines(scorecard: pd.DataFrame, alpha: float, control_tokens: int) -> list[str]:
    """Per control basis and layer: its share of selective units beside the real model's basis of the same kind."""
    records = pd.DataFrame(scorecard).to_dict(orient="records")
    share = {(str(r["basis"]), r["layer"]): r["fraction_selective_active"] for r in records}
    control = [r for r in records if str(r["basis"]).startswith(CONTROL_PREFIX)]
    if not control:
        return ["the random-weight control is off (MONOSEM_RANDOM_CONTROL=0)"]
    out = []
    for row in control:
        kind = str(row["basis"]).split(": ", 1)[1]
        real = share.get((kind, row["layer"]))
        real_text = f"{real:.1%} in the real model's {kind}" if real is not None else "no real basis of that kind"
        verdict = "at most" if row["fraction_selective_active"] <= alpha else "ABOVE"
        budget = f", SAE trained on {control_tokens:,} tokens" if kind.startswith("SAE") else ""
        out.append(f"layer {row['layer']}, {row['basis']}{budget}: {row['fraction_selective_active']:.1%} of {row['n_active']} active units selective "
                   f"({verdict} alpha = {alpha:g}), against {real_text}")
    return out
