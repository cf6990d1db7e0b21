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
    """Whether the top specific features' decoder directions promote their concept's words (causal LMs; None otherwise)."""
    aurocs = np.array([r["concept_auroc"] for r in s.logit_lens if r.get("concept_auroc") is not None and np.isfinite(r["concept_auroc"])])
    if not len(aurocs):
        return None
    layers = sorted({int(r["layer"]) for r in s.logit_lens})
    words = s.logit_lens_words
    ties = (f" A word is scored by its first token, and {words['n_sharing']} of the {words['n_words']} words share theirs with another word "
            f"({'; '.join(words['examples'])}), so their scores tie." if words.get("n_sharing") else "")
    return (f"Logit lens (each decoder direction through the model's final norm and unembedding) of the {len(aurocs)} top specific "
            f"{s.sae_preset} features of layers {layers}: AUROC of their concept's words against all other words of the dataset, median "
            f"{np.median(aurocs):.2f} (range {aurocs.min():.2f}-{aurocs.max():.2f}); {int((aurocs > 0.75).sum())} of {len(aurocs)} above 0.75, "
            f"{int((aurocs > 0.5).sum())} above 0.5 (0.5: no preference for the concept's words; 1: they are promoted above every other word). "
            "An early layer's direction reaches the output only through every later block, so a value near 0.5 says that the direction "
            "does not write its concept's tokens directly, not that the feature is not about its concept." + ties)


METRIC_WORDS = {"fraction_specific": "share of firing units passing the label's full-data tests (its split confirmation left out)", "specificity": "mean specificity of firing units (templates)",
                "sensitivity": "best sensitivity of a specific unit per concept", "coverage_k5": "held-out recall of a concept's 5-unit family",
                "probe_k1": "k = 1 probe AUROC (held out)"}


def _ci_side(lo: Any, hi: Any) -> str | None:
    """Where a 95% CI lies: 'above' 0, 'below' 0, 'neither' (it contains 0), or None without one (missing or NaN)."""
    if lo is None or hi is None or pd.isna(lo) or pd.isna(hi):
        return None
    return "above" if lo > 0 else "below" if hi < 0 else "neither"


def _verdict(row: dict) -> str:
    side = _ci_side(row.get("ci_low"), row.get("ci_high"))
    return {"above": "SAE higher", "below": "other higher", "neither": "not told apart", None: "no CI"}[side]


def headline_sentences(s: Summary) -> list[str]:
    """Per word list and comparison, per metric: the paired SAE-minus-other difference per layer with its CI and the seed
    range, and a verdict that claims an order only where the CI excludes 0."""
    out = []
    for name, all_rows in s.headline.items():
        for against in dict.fromkeys(r.get("against", "MLP neurons at the SAE's density") for r in all_rows):
            rows = [r for r in all_rows if r.get("against", "MLP neurons at the SAE's density") == against]
            n_seeds = rows[0].get("n_seeds", 1)
            parts = []
            for metric, words in METRIC_WORDS.items():
                mrows = [r for r in rows if r["metric"] == metric]
                if not mrows:
                    continue
                other = lambda r: r.get("other", r.get("neurons"))  # noqa: E731  (older summaries: 'neurons')
                per_layer = "; ".join(f"layer {r['layer']}: {r['sae']:.3f} vs {other(r):.3f}, difference {r['difference']:+.3f} "
                                      f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}], seeds {r['seed_min']:+.3f} to {r['seed_max']:+.3f}" for r in mrows)
                groups: dict[str, list[str]] = {}
                for r in mrows:
                    groups.setdefault(_verdict(r), []).append(str(r["layer"]))
                overall = ", ".join(f"{v} at layer{'s' if len(ls) > 1 else ''} {', '.join(ls)}" for v, ls in groups.items())
                seeds_agree = all((r["seed_min"] > 0) == (r["seed_max"] > 0) for r in mrows)
                parts.append(f"{words}: {overall}{'' if seeds_agree or n_seeds < 2 else ' (the seed range crosses 0 somewhere)'} ({per_layer})")
            question = ("Are SAE features more monosemantic than the model's own neurons?" if "untrained" not in against
                        else "Does training make the SAE's features more monosemantic than its untrained initialisation of the same L0?")
            out.append(f"{question} On the {name}, the analysed {s.sae_preset} SAE (seed {s.seed}) against {against}, paired over words, 95% CI "
                       f"(SAE higher / other higher only where it excludes 0), range over {n_seeds} training seed(s): " + " · ".join(parts) + ".")
    return out


def _source_sentence(s: Summary) -> str | None:
    """Where the SAE beats the neurons but not its own untrained initialisation: the advantage comes from the sparse code,
    not from training (per word list and metric, the layers where that holds)."""
    parts = []
    for name, rows in s.headline.items():
        by = {(r.get("against", ""), r["metric"], r["layer"]): _verdict(r) for r in rows}
        neurons = [a for a in dict.fromkeys(r.get("against", "") for r in rows) if "untrained" not in a]
        untrained = [a for a in dict.fromkeys(r.get("against", "") for r in rows) if "untrained" in a]
        if not neurons or not untrained:
            continue
        for metric in METRIC_WORDS:
            layers = sorted({L for (a, m, L), v in by.items() if a == neurons[0] and m == metric and v == "SAE higher"
                             and by.get((untrained[0], metric, L)) != "SAE higher"})
            if layers:
                parts.append(f"{name}, {metric} at layer{'s' if len(layers) > 1 else ''} {', '.join(map(str, layers))}")
    if not parts:
        return None
    return ("Where the SAE beats the neurons but is not told apart from its untrained initialisation of the same L0, the advantage comes "
            "from the sparse TopK code over the residual stream, not from training: " + "; ".join(parts) + ". The CIs are over words only; "
            "a review found the spread from which units a basis happens to have about as large, so the seed range stands beside each.")


def _specificity_definition(s: Summary) -> str:
    sp = s.specificity
    return (f"Definitions: a unit fires on a word at >= {sp.get('fire_fraction', 0.05):g} x its maximum over the words (rate-matched bases: on "
            f"their top share of words); specificity = P(its top category | it fires); sensitivity = P(it fires | a word of that category); "
            f"'specific' = a concept on top, specificity >= {sp.get('level', 0.8):g} on all words and (median over {sp.get('n_splits', 20)} "
            f"halvings) on held-out words, top category replicated in >= {sp.get('min_replication', 0.9):.0%} of halvings, >= "
            f"{sp.get('min_fire_words', 3)} firing words, hypergeometric p < {sp.get('alpha', 0.05):g}. Neutral frames; features encoded per "
            "token, then pooled over the word's tokens. The reference preset is a dense autoencoder (its L0 is most of its width).")


def _density_sentences(s: Summary) -> list[str]:
    out = []
    for layer in [str(L) for L in s.layers]:
        rows = {b: by[layer] for b, by in s.scorecard.items() if layer in by and not b.startswith(CONTROL_PREFIX)}
        if not rows or "fraction_specific" not in next(iter(rows.values())):
            continue
        shown = "; ".join(f"{b} {_fmt_fraction(r['fraction_specific'])} specific (shuffled categories {_fmt_fraction(r['fraction_specific_shuffle'])}), "
                          f"density {_fmt_fraction(r['density_words_median'])} of words" for b, r in rows.items())
        out.append(f"Layer {layer}, the label 'specific' per basis with its density (median share of words its units fire on) and its "
                   f"label-shuffle null: {shown}.")
        natural = [(b, r) for b, r in rows.items() if r.get("specificity_corpus_median_specific") is not None
                   and np.isfinite(r["specificity_corpus_median_specific"])]
        if natural:
            out.append(f"Layer {layer}, natural text ({s.natural_text.get('tokens', '?'):,} held-out corpus tokens, WordNet lexicon): median share of a "
                       "specific unit's top-20 tokens that are words of its concept, against units of the same basis with the same corpus firing rate: "
                       + "; ".join(f"{b} {r['specificity_corpus_median_specific']:.2f} vs {r['specificity_corpus_random_matched']:.2f}"
                                   + (f" (n = {r['n_specific']}, {r['specificity_corpus_zero_share']:.0%} at 0)" if r.get("specificity_corpus_zero_share") is not None else "")
                                   for b, r in natural) + ". The lexicon's words are a small share of the tokens, so a random unit's "
                       "precision is near 0 and 'above random' is a low bar.")
    return out


def _probe_sentences(s: Summary) -> list[str]:
    out = []
    for layer in s.layers:
        rows = [r for r in s.probes if r["layer"] == layer and r["k"] == 1]
        if not rows:
            continue
        by_setting: dict[str, list[str]] = {}
        for r in rows:
            by_setting.setdefault(r["setting"], []).append(f"{r['basis']} {r['auroc']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]")
        out.append(f"Layer {layer}, k = 1 probe, held-out AUROC with 95% bootstrap CI: " + " · ".join(f"{k}: {'; '.join(v)}" for k, v in by_setting.items()) + ".")
    return out


def _readout_sentence(s: Summary) -> str | None:
    """The causal concept readout: per edit, the kinds compared by their mean specificity_effect, with CI and p."""
    if not s.causal_contrast:
        return None
    parts = [f"{r['edit']} {r['kind_a']} − {r['kind_b']} {r['difference']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}], p = {r['p']:.3f} "
             f"(n = {r['n_a']}, {r['n_b']})" for r in s.causal_contrast if r.get("difference") is not None]
    n_layers = len({r["layer"] for r in s.causal_readout})
    return ("Causal concept readout (next-token log-mass on each concept's one-token lexicon words, own concept minus the others, nats per "
            f"unit of edit norm, units pooled over {n_layers} layers, which are not independent): " + "; ".join(parts) + ". A feature's and a "
            "neuron's edits act at different positions and norms, so the per-norm comparison is a rough one.")


def findings(summary: Summary) -> list[str]:
    """The run's findings as sentences, each computed from ``summary``: the paired headline first."""
    s = summary
    crit = s.criterion
    out = headline_sentences(s)
    source = _source_sentence(s)
    if source:
        out.append(source)
    if s.specificity:
        out.append(_specificity_definition(s))
    out += _density_sentences(s) + _probe_sentences(s)
    out.append(f"Model: {s.model_used} (asked for {s.model_asked}); layers {s.layers}; analysed SAE preset: {s.sae_preset} (fixed in advance). "
               f"The earlier label 'selective' (reported beside, not the answer: it rewards firing often): top category among all 8 is a concept, "
               f"confirmed on held-out words in at least {crit.get('min_replication', 0):.0%} of {crit.get('n_splits', '?')} word splits "
               f"({crit.get('test', 'one-sided Mann-Whitney')}, alpha {crit.get('alpha', s.alpha):g}), neutral frames only. "
               f"Reference criterion: score_reference > {s.threshold:g}.")
    for layer, row in s.per_layer.items():
        budget = f"{row['train_tokens']:,} training tokens" if "train_tokens" in row else "its training budget"
        by_concept = ", ".join(f"{c} {n}" for c, n in row.get("n_specific_by_concept", {}).items()) or "none"
        out.append(f"Layer {layer}, {s.sae_preset} SAE ({row.get('n_features', '?')} features, {budget}): {row.get('n_specific', 0)} specific "
                   f"({by_concept}); {row.get('n_selective', 0)} 'selective'; {row.get('n_monosemantic', 0)} above the reference threshold "
                   "(the reference criterion counts any unit whose concept means are uneven, dense or not, and never looks at the control "
                   "words, so its count is not a count of monosemantic features).")
    readout = _readout_sentence(s)
    if readout:
        out.append(readout)
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


def scorecard_markdown(summary: Summary, key: str = "fraction_selective_active") -> str:
    """A markdown table of one scorecard key: one row per basis, one column per layer."""
    layers = [str(L) for L in summary.layers]
    share = key.startswith(("fraction", "density"))
    fmt = lambda x: "–" if x is None or x != x else (_fmt_fraction(x) if share else f"{x:.3f}")  # noqa: E731  (NaN, None: not computed)
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
    lines += ["", "Units labelled specific among units firing on >= 3 words, per basis and layer (density-matched bases marked '@ ... density'):", "",
              scorecard_markdown(summary, "fraction_specific"), "", "Median share of words a unit fires on (density), per basis and layer:", "",
              scorecard_markdown(summary, "density_words_median"), "", "The earlier label 'selective' among active units, per basis and layer:", "",
              scorecard_markdown(summary)]
    return "\n".join(lines)


def control_lines(scorecard: pd.DataFrame, alpha: float, control_tokens: int) -> list[str]:
    """Per control basis and layer: its share of units labelled specific (and the earlier label's share) beside the real
    model's basis of the same kind."""
    records = pd.DataFrame(scorecard).to_dict(orient="records")
    share = {(str(r["basis"]), r["layer"]): r for r in records}
    control = [r for r in records if str(r["basis"]).startswith(CONTROL_PREFIX)]
    if not control:
        return ["the random-weight control is off (MONOSEM_RANDOM_CONTROL=0)"]
    out = []
    for row in control:
        kind = str(row["basis"]).split(": ", 1)[1]
        real = share.get((kind, row["layer"]))
        real_text = (f"{real['fraction_specific']:.1%} specific in the real model's {kind}"
                     if real is not None else "no real basis of that kind")
        budget = f", SAE trained on {control_tokens:,} tokens" if kind.startswith("SAE") else ""
        selective = row["fraction_selective_active"]
        earlier = (f" ({selective:.1%} of {row['n_active']} 'selective', {'at most' if selective <= alpha else 'ABOVE'} alpha = {alpha:g})"
                   if selective == selective else "")  # NaN: the earlier label was not computed for the control
        out.append(f"layer {row['layer']}, {row['basis']}{budget}: {row['fraction_specific']:.1%} of {row['n_firing']} firing units specific{earlier}, "
                   f"against {real_text}")
    return out


SWEEP_METRICS = {"fraction_specific": "the share of units passing the label", "specificity": "mean specificity", "sensitivity": "best sensitivity",
                 "coverage_k5": "5-unit coverage", "probe_k1": "the k = 1 probe", "specificity_corpus": "natural-text specificity"}
FVE_AIM, L0_AIM = 0.9, 64  # the default budget aims at held-out FVE >= 0.9 with L0 <= 64


def _tokens(n: float) -> str:
    """Training tokens as the budget asked for (steps x batch rounds them up a little): 0.25M, 8M; 26k below 0.1M."""
    return f"{n / 1e6:.2g}M" if n >= 1e5 else f"{n / 1e3:.0f}k"


def sweep_markdown(table: pd.DataFrame | None, meta: dict[str, Any] | None, default_width: float, default_tokens: int) -> str:
    """The README's budget-sweep block, every number computed from ``docs/sweep.csv`` (``table``) and ``docs/sweep.json``
    (``meta``): what ran, FVE by width and budget, and per headline metric whether the SAE-minus-neurons verdict (95% CI above
    0, below 0, or containing it) is the same at every budget point. ``default_width``/``default_tokens``: make run's budget."""
    from monosem.sweep import verdicts

    if table is None or meta is None or table.empty:
        return "No sweep has run yet: `make sweep` (after `make run`) writes `docs/sweep.csv` and this block."
    plan = meta["plan"]
    layers = sorted(set(table["layer"]))
    widths, budgets = sorted(set(table["width"])), sorted(set(table["train_tokens"]))
    lines = [f"`{meta['command']}` at commit `{meta['commit']}`, {meta['date']} ({meta['machine']}), {meta['seconds']['total'] / 60:.0f} min: "
             f"{meta['model']}, layer{'s' if len(layers) > 1 else ''} {', '.join(map(str, layers))}, the {plan['preset']} preset (k = {plan['k']}) at "
             f"widths {', '.join(f'{w:g}' for w in widths)} x d_model and {_tokens(budgets[0])} to {_tokens(budgets[-1])} training tokens "
             f"(batch {plan['batch_size']:,}; {meta['corpus']}, {meta['corpus_tokens_per_layer']:,} tokens per pass, so up to "
             f"{table['epochs'].max():.1f} epochs), {len(table)} SAEs from one pass of the model." + (f" ({meta['note']}.)" if meta.get("note") else ""), ""]
    for L in layers:
        t = table[table["layer"] == L]
        pivot = t.pivot_table(index="width", columns="train_tokens", values="fve_heldout")
        lines += [f"Held-out FVE at layer {L} (L0 {t['l0'].min():.0f}-{t['l0'].max():.0f}; dead fraction at most {t['dead_fraction'].max():.1%}; "
                  f"fidelity {t['fidelity'].min():.3f}-{t['fidelity'].max():.3f}):", "",
                  "| d_sae / d_model | " + " | ".join(_tokens(b) for b in pivot.columns) + " |", "|---" * (len(pivot.columns) + 1) + "|"]
        lines += [f"| {w:g} | " + " | ".join(f"{v:.3f}" for v in row) + " |" for w, row in pivot.iterrows()]
        epochs = t.groupby("train_tokens")["epochs"].first()
        lines.append("| passes over the corpus | " + " | ".join(f"{epochs[b]:.2f}" for b in pivot.columns) + " |")
        lines.append("")
    reached = table.loc[(table["fve_heldout"] >= FVE_AIM) & (table["l0"] <= L0_AIM)]
    best = table.loc[table["fve_heldout"].idxmax()]
    if len(reached):
        cheapest = reached.sort_values(by=["train_tokens", "width"]).iloc[0]
        lines.append(f"Held-out FVE >= {FVE_AIM} with L0 <= {L0_AIM} is reached at {len(reached)} of {len(table)} points; the fewest tokens that reach it: "
                     f"{_tokens(cheapest['train_tokens'])} at {cheapest['width']:g} x d_model.")
    else:
        lines.append(f"No point reaches held-out FVE {FVE_AIM} (with L0 <= {L0_AIM}); the highest is {best['fve_heldout']:.3f} at "
                     f"{best['width']:g} x d_model and {_tokens(best['train_tokens'])} tokens.")
    if len(budgets) > 1:
        last = table.loc[table["train_tokens"].isin(budgets[-2:])].pivot_table(index="width", columns="train_tokens", values="fve_heldout")
        gain = last[budgets[-1]] - last[budgets[-2]]
        lines.append(f"From {_tokens(budgets[-2])} to {_tokens(budgets[-1])} tokens held-out FVE still changes by {gain.min():+.3f} to {gain.max():+.3f} "
                     "(over the widths" + (" and layers" if len(layers) > 1 else "") + ").")
    near = table.iloc[((table["width"] - default_width).abs() + (np.log(table["train_tokens"]) - np.log(default_tokens)).abs()).argsort()[:1]]
    lines.append(f"`make run`'s budget ({default_width:g} x d_model, {_tokens(default_tokens)} tokens) lies nearest the sweep's point "
                 f"{near['width'].iloc[0]:g} x d_model, {_tokens(near['train_tokens'].iloc[0])} tokens (FVE {near['fve_heldout'].iloc[0]:.3f}).")
    lines += ["", "SAE minus MLP neurons at the SAE's density, per headline metric, over the sweep's points (95% CI: above 0 = the SAE is "
              "ahead, below 0 = the neurons are, else no answer):", "", "| metric | points | CI above 0 | CI below 0 | CI contains 0 | same verdict at every point |",
              "|---|---|---|---|---|---|"]
    v = verdicts(table, list(SWEEP_METRICS))
    records = v.to_dict(orient="records")
    for r in records:
        lines.append(f"| {SWEEP_METRICS[str(r['metric'])]} | {r['points']} | {r['above']} | {r['below']} | {r['neither']} | {'yes' if r['stable'] else 'no'} |")
    where = f"layer{'s' if len(layers) > 1 else ''} {', '.join(map(str, layers))}"
    ahead = [f"{SWEEP_METRICS[str(r['metric'])]} (the {'SAE' if r['above'] else 'neurons'} ahead at all {r['points']} points)"
             for r in records if r["stable"] and (r["above"] or r["below"])]
    silent = [f"{SWEEP_METRICS[str(r['metric'])]} ({r['points']} points)" for r in records if r["stable"] and not (r["above"] or r["below"])]
    changing = [str(r["metric"]) for r in records if not r["stable"]]
    missing = [f"{SWEEP_METRICS[str(r['metric'])]} ({len(table) - r['points']} of {len(table)})" for r in records if r["points"] < len(table)]
    lines += [""]
    if ahead:
        lines.append(f"**At {where}, the verdict holds at every width and budget** on " + ", ".join(ahead) + ".")
    if silent:
        lines.append("No point's CI excludes 0 on " + ", ".join(silent) + ": the sweep cannot tell the bases apart there at any budget.")
    if changing:
        lines.append("**The verdict differs between points** on " + ", ".join(SWEEP_METRICS[m] for m in changing) + " (below: SAE = the SAE ahead, "
                     "neurons = the neurons ahead, – = no answer). Each CI is per point, one training seed each, not corrected for the "
                     f"{len(table)} comparisons: a lone change can be noise (notebook 03 shows the spread over seeds at make run's budget).")
    if missing:
        lines.append("Points without a CI (a side with too few specific units): " + ", ".join(missing) + ".")
    lines.append("The neurons are thresholded anew at each point to that SAE's density. Natural-text specificity is the median top-20 precision "
                 "(values k/20) of each basis's specific units, its CI a bootstrap over units, not paired over words as the other metrics are: "
                 f"the SAE's median is {table['specificity_corpus_sae'].min():.2f}-{table['specificity_corpus_sae'].max():.2f} and the neurons' "
                 f"{table['specificity_corpus_neurons'].min():.2f}-{table['specificity_corpus_neurons'].max():.2f} over the points.")
    if "specificity_corpus_n_neurons" not in table:
        lines.append("This sweep's natural-text CIs were computed before the rule that each side needs at least 5 specific units, and the "
                     "CSV has no counts of them: rerun `make sweep` for both.")
    for L in layers if changing else []:
        t = table.loc[table["layer"] == L].sort_values(by=["width", "train_tokens"])
        lines += ["", f"| layer {L}: metric | d_sae / d_model | " + " | ".join(_tokens(b) for b in budgets) + " |", "|---|---" + "|---" * len(budgets) + "|"]
        for m in changing:
            for w in widths:
                row = t[t["width"] == w].set_index("train_tokens")
                lines.append(f"| {SWEEP_METRICS[m]} | {w:g} | " + " | ".join(_verdict_cell(row, m, b) for b in budgets) + " |")
    return "\n".join(lines).rstrip()


def _verdict_cell(row: pd.DataFrame, metric: str, budget: int) -> str:
    """SAE, neurons or – for one point's CI of ``metric`` (blank where the point is missing)."""
    if budget not in row.index:
        return ""
    side = _ci_side(row.loc[budget, f"{metric}_lo"], row.loc[budget, f"{metric}_hi"])
    return {"above": "SAE", "below": "neurons", "neither": "–", None: ""}[side]
