"""The budget sweep: a WSD branch is the SAE trained for its budget alone; the grid, batches and verdicts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from monosem.config import MonosemError
from monosem.report import sweep_markdown
from monosem.results import read_sweep, write_sweep
from monosem.sae.train import SAETrainer, TokenSource
from monosem.sweep import HEADLINE_METRICS, SweepPlan, WidthRun, epoch_batches, natural_difference, sweep_plan, train_sweep, verdicts


def _tokens(n: int = 3000, d: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    atoms = torch.randn(64, d, generator=g)
    return torch.relu(torch.randn(n, 64, generator=g) - 1.5) @ atoms + 0.05 * torch.randn(n, d, generator=g)


PLAN = SweepPlan(widths=(2.0,), tokens=(640, 1280, 2560), batch_size=32, layers=(0,), preset="topk", k=4, why="test")


@pytest.mark.parametrize("preset,extra", [("topk", {}), ("topk", {"dead_steps": 2}), ("matryoshka", {})])  # dead_steps 2: AuxK is on
def test_branch_is_the_sae_trained_for_its_budget_alone(preset, extra, monkeypatch):
    from monosem.sae import presets

    monkeypatch.setitem(presets.PRESETS, preset, {**presets.PRESETS[preset], **extra})
    plan = SweepPlan(PLAN.widths, PLAN.tokens, PLAN.batch_size, PLAN.layers, preset, PLAN.k, "test")
    x = _tokens()
    src = TokenSource.of(x)
    batches = [x[i] for i in epoch_batches(len(x), plan.batch_size, plan.steps(max(plan.tokens)), seed=1)]
    run = WidthRun.start(plan, src, 2.0, seed=3, device="cpu")
    for lo in range(0, len(batches), 7):  # groups of any size give the same steps
        run.steps_on(batches[lo : lo + 7])
    assert sorted(run.finished) == list(plan.tokens)
    for tokens in plan.tokens:
        steps = plan.steps(tokens)
        alone = SAETrainer(src, preset, steps, 3, "cpu", expansion=2.0, k=4, lr_warmup=(plan.warmup_steps + 0.5) / steps, lr_decay=plan.decay)
        alone.steps_on(batches[:steps])
        sae, history, _ = alone.finish()
        branch, branch_history, cfg = run.finished[tokens]
        for name, p in sae.state_dict().items():
            assert torch.equal(p, branch.state_dict()[name]), f"{tokens} tokens: {name} differs from the SAE trained alone"
        assert [h["loss"] for h in history] == [h["loss"] for h in branch_history]
        assert cfg["lr_decay"] == plan.decay
    # the learning rate really decays at the end of each branch and not before (the branch differs from the constant run)
    assert PLAN.branch_step(640) == 20 - int(0.2 * 20) and PLAN.warmup_steps == 1


def test_the_branch_decays_where_the_constant_rate_run_does_not():
    x = _tokens()
    src = TokenSource.of(x)
    batches = [x[i] for i in epoch_batches(len(x), 32, 20, seed=1)]
    run = WidthRun.start(PLAN, src, 2.0, seed=3, device="cpu")
    run.steps_on(batches)  # 20 steps: the 640-token budget is done; the constant-rate run took the same 20 batches
    assert run.main.state.step == 20 and run.main.sched.get_last_lr()[0] == pytest.approx(run.main.cfg["lr"])
    constant = SAETrainer(src, "topk", 20, 3, "cpu", expansion=2.0, k=4, lr_warmup=(PLAN.warmup_steps + 0.5) / 20, lr_decay=0.0)
    constant.steps_on(batches)
    assert not torch.allclose(run.finished[640][0].W_dec, constant.finish()[0].W_dec)  # the branch's last 4 steps had a decayed rate


def test_epoch_batches_cover_each_epoch_once():
    idx = list(epoch_batches(10, 3, 7, seed=0))
    assert len(idx) == 7 and all(len(i) == 3 for i in idx)
    first = torch.cat(idx[:3])
    assert len(set(first.tolist())) == 9  # one epoch: 3 batches without repeats (the 10th row dropped)
    with pytest.raises(MonosemError, match="fewer than one batch"):
        next(epoch_batches(2, 3, 1, seed=0))


def test_plan_defaults_and_bad_input():
    cpu = sweep_plan("cpu", [0, 1, 2, 3], 1024, "topk", 32)
    assert cpu.widths == (2, 4, 8, 16) and cpu.tokens[0] == 250_000 and cpu.tokens[-1] >= 8_000_000 and cpu.layers == (3,)
    assert cpu.batch_size == 1024 and "CPU" in cpu.why
    with pytest.raises(MonosemError, match="not extracted"):
        sweep_plan("cpu", [0, 1], 1024, "topk", 32, layers=[5])
    with pytest.raises(MonosemError, match="at least 20 steps"):
        sweep_plan("cpu", [0], 1024, "topk", 32, tokens=[1000])
    for preset in ("reference", "l1"):  # no decay; an L1 warm-up over the planned steps (a branch would differ)
        with pytest.raises(MonosemError, match="exact for the k-sparse presets"):
            sweep_plan("cpu", [0], 1024, preset, 32)


def test_train_sweep_finishes_every_point():
    x = _tokens()
    plan = SweepPlan(widths=(1.0, 2.0), tokens=(640, 1280), batch_size=32, layers=(0,), preset="topk", k=4, why="test")
    runs = train_sweep(plan, {0: x.half()}, {0: TokenSource.of(x)}, seed=0, device="cpu", workers=2, progress=False)
    assert {(k, t) for k, r in runs.items() for t in r.finished} == {((0, w), t) for w in plan.widths for t in plan.tokens}
    assert runs[0, 2.0].finished[1280][0].d_sae == 32


def test_natural_difference_and_verdicts():
    a = pd.DataFrame({"specific": [True] * 5 + [False], "specificity_corpus": [0.5, 0.6, 0.7, 0.6, 0.5, 0.0]})
    b = pd.DataFrame({"specific": [True] * 5, "specificity_corpus": [0.0, 0.1, 0.0, 0.05, 0.0]})
    out = natural_difference(a, b, 500, 0)
    assert out["sae"] == 0.6 and out["other"] == 0.0 and out["ci_low"] > 0 and (out["n_sae"], out["n_other"]) == (5, 5)
    assert np.isnan(natural_difference(a, b.iloc[:4])["ci_low"])  # fewer than MIN_UNITS on a side: no CI
    assert np.isnan(natural_difference(a, b.assign(specific=False))["ci_low"])
    table = pd.DataFrame({"m_lo": [0.1, 0.2, -0.1], "m_hi": [0.3, 0.4, 0.1], "n_lo": [0.1, 0.1, 0.1], "n_hi": [0.2, 0.2, 0.2]})
    v = verdicts(table, ["m", "n"]).set_index("metric")
    assert (v.loc["m", "above"], v.loc["m", "neither"], bool(v.loc["m", "stable"])) == (2, 1, False)
    assert bool(v.loc["n", "stable"]) and v.loc["n", "above"] == 3


def _sweep_table(stable_above: bool = True) -> pd.DataFrame:
    rows = []
    for w in (2.0, 4.0):
        for t in (250_000, 1_000_000):
            row = {"layer": 3, "width": w, "d_sae": int(576 * w), "train_tokens": t, "epochs": t / 2e6, "fve_heldout": 0.7 + 0.1 * (t > 300_000) + 0.05 * (w > 2),
                   "l0": 32.0, "dead_fraction": 0.0, "fidelity": 0.9, "specificity_corpus_sae": 0.2, "specificity_corpus_neurons": 0.0,
                   "specificity_corpus_n_sae": 9, "specificity_corpus_n_neurons": 6}
            for m in (*HEADLINE_METRICS, "specificity_corpus"):
                lo, hi = (0.1, 0.2) if stable_above else (-0.1, 0.1)
                if m == "probe_k1" and t > 300_000:  # the probe's verdict flips with the budget: neurons ahead at 1M only
                    lo, hi = -0.2, -0.1
                row.update({f"{m}_diff": (lo + hi) / 2, f"{m}_lo": lo, f"{m}_hi": hi})
            rows.append(row)
    return pd.DataFrame(rows)


META = {"command": "make sweep", "commit": "abc1234", "date": "2026-12-07", "machine": "x", "model": "SmolLM2", "corpus": "WordNet",
        "corpus_tokens_per_layer": 2_000_000, "plan": {"preset": "topk", "k": 32, "batch_size": 1024}, "seconds": {"total": 600.0}}


def test_sweep_sentences_come_from_the_table():
    text = sweep_markdown(_sweep_table(), META, 4.0, 200_704)
    assert "at commit `abc1234`" in text and "4 SAEs from one pass" in text
    assert "No point reaches held-out FVE 0.9" in text and "the highest is 0.850 at 4 x d_model and 1M tokens" in text
    assert "**At layer 3, the verdict holds at every width and budget** on the share of units passing the label (the SAE ahead at all 4 points)" in text
    assert "**The verdict differs between points** on the k = 1 probe" in text and "not corrected for the 4 comparisons" in text
    assert "| passes over the corpus | 0.12 | 0.50 |" in text
    assert "the SAE's median is 0.20-0.20 and the neurons' 0.00-0.00" in text and "before the rule" not in text
    assert "before the rule" in sweep_markdown(_sweep_table().drop(columns="specificity_corpus_n_neurons"), META, 4.0, 200_704)
    silent = sweep_markdown(_sweep_table(stable_above=False), META, 4.0, 200_704)
    assert "No point's CI excludes 0 on the share of units passing the label (4 points)" in silent
    assert "| the k = 1 probe | 2 | SAE | neurons |" in text  # width 2: SAE ahead at 250k, neurons at 1M
    reached = _sweep_table().assign(fve_heldout=[0.8, 0.95, 0.85, 0.97])  # rows: 2x 250k, 2x 1M, 4x 250k, 4x 1M
    assert "the fewest tokens that reach it: 1M at 2 x d_model" in sweep_markdown(reached, META, 4.0, 200_704)
    assert "No sweep has run yet" in sweep_markdown(None, None, 4.0, 200_704)


def test_sweep_files_round_trip(tmp_path):
    import plotly.graph_objects as go

    table = _sweep_table()
    written = write_sweep(tmp_path, table, META, go.Figure())
    assert {p.name for p in written} >= {"sweep.csv", "sweep.json", "sweep.html"}
    back, meta = read_sweep(tmp_path)
    assert meta["commit"] == "abc1234" and np.allclose(back["fve_heldout"], table["fve_heldout"])
    assert not list(tmp_path.glob("*.tmp*")) and read_sweep(tmp_path / "missing") is None


def test_one_pass_keeps_every_token_of_one_pass_and_no_more():
    import warnings

    from monosem.store import ActivationStore
    from monosem.sweep import one_pass
    from monosem.testing import random_gpt2

    model, tok = random_gpt2(n_layer=2, n_embd=32, n_head=2)
    texts = [f"the {c} cat sat on mat number {i}" for i, c in enumerate(["red", "green", "blue", "small"] * 5)]
    store = ActivationStore(model, tok, texts, [0, 1], batch_size=4, buffer_tokens=64, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the store's second-pass warning is not raised
        data = one_pass(store, [1])
    n = sum(len(tok(t)["input_ids"]) for t in texts)  # GPT-2 BPE adds no special tokens here
    assert set(data) == {1} and data[1].shape == (n, 32) and data[1].dtype == torch.float16 and store.epochs == 2
    assert len(one_pass(ActivationStore(model, tok, texts, [0, 1], batch_size=4, seed=0), [1], max_tokens=10)[1]) < n
