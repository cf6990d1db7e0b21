import pytest
import torch

from monosem.cache import load_or_extract_corpus
from monosem.config import MonosemError
from monosem.corpus import background_texts
from monosem.model import ModelSpec
from monosem.paths import model_paths
from monosem.sae.standard import StandardSAE
from monosem.sae.train import SAEJob, SAETrainer, TokenSource, loss_change_last10pct, sae_metrics, train_or_load_saes, train_sae, training_plan
from monosem.store import ActivationStore


def test_metrics_textbook_formulas():
    sae = StandardSAE(4, 2, seed=0)
    with torch.no_grad():  # feature 0 always on, feature 1 never: x_hat = b_dec + f0 * W_dec[0]
        sae.W_enc.zero_()
        sae.b_enc.copy_(torch.tensor([1.0, -1.0]))
        sae.W_dec.zero_()
        sae.b_dec.zero_()
    x = torch.randn(50, 4)
    m = sae_metrics(sae, x, batch_size=7)
    assert m["l0"] == 1.0 and m["dead_fraction"] == 0.5 and m["n_dead"] == 1
    assert m["mse"] == pytest.approx(x.pow(2).mean().item(), rel=1e-5)
    assert m["fve"] == pytest.approx(1 - x.pow(2).sum().item() / (x - x.mean(0)).pow(2).sum().item(), abs=1e-6)


def test_reference_training_learns_and_is_seeded():
    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(2000, 8, generator=g)) @ torch.randn(8, 16, generator=g)
    sae, hist, _ = train_sae(x, "reference", steps=400, batch_size=128, seed=1, progress=False)
    assert sae.d_sae == 8 and hist[-1]["loss"] < 0.5 * hist[0]["loss"]
    assert sae_metrics(sae, x)["fve"] > 0.5
    sae2, hist2, _ = train_sae(x, "reference", steps=400, batch_size=128, seed=1, progress=False)
    torch.testing.assert_close(sae.W_enc, sae2.W_enc)
    with pytest.raises(MonosemError, match="unknown SAE preset"):
        train_sae(x, "nope", steps=1)


def stream_setup(gpt2_tiny, data_dir, layers=(1, 2)):
    """A tiny random GPT-2 with a corpus: a sample cache (initialisation), a held-out cache and a store factory."""
    model, tok = gpt2_tiny
    spec = ModelSpec("tiny", "tiny-gpt2", "/nowhere", "rev")
    mp = model_paths(data_dir, spec.used)
    texts = background_texts(6000, "pydoc", words_per_text=30)
    train, heldout = texts[:-12], texts[-12:]
    init = load_or_extract_corpus(mp, spec, train[:20], list(layers), model_and_tokenizer=(model, tok))
    held = load_or_extract_corpus(mp, spec, heldout, list(layers), model_and_tokenizer=(model, tok))

    def store(seed=0):
        return ActivationStore(model, tok, train, list(layers), batch_size=8, buffer_tokens=512, seed=seed)

    return mp, spec, init, held, store


def test_one_pass_trains_every_sae_and_a_second_call_loads_them(gpt2_tiny, data_dir):
    mp, spec, init, held, make_store = stream_setup(gpt2_tiny, data_dir)
    jobs = [SAEJob("reference", 1), SAEJob("topk", 1, {"expansion": 2, "k": 4}), SAEJob("topk", 2, {"expansion": 2, "k": 4})]
    plan = training_plan(1280, 64, 512, 64, "cpu")
    store = make_store()
    out = train_or_load_saes(mp, spec, jobs, plan, store, [init], held, "pydoc", progress=False)
    assert set(out) == {("reference", 1), ("topk", 1), ("topk", 2)}
    assert store.epochs == 1 and 1280 <= store.tokens_run < 1280 + 8 * 130, "one model pass fed all three SAEs"
    for (preset, layer), (sae, rec) in out.items():
        assert rec["train_tokens"] == 1280 and len(rec["history"]) == 20 and rec["corpus"] == "pydoc"
        assert rec["metrics"]["n_tokens"] == held.n_tokens, "metrics are measured on the held-out tokens"
        assert rec["metrics"] == sae_metrics(sae, TokenSource.from_caches([held], layer))
        assert rec["loss_change_last10pct"] == loss_change_last10pct(rec["history"])
        assert (mp.sae(layer, preset) / "training.json").is_file()
    again_store = make_store()
    again = train_or_load_saes(mp, spec, jobs, plan, again_store, [init], held, "pydoc", progress=False)
    assert again_store.tokens_run == 0, "everything was loaded: the model did not run"
    for jk in out:
        assert again[jk][1]["key"] == out[jk][1]["key"]
        torch.testing.assert_close(again[jk][0].W_enc, out[jk][0].W_enc)
    longer = train_or_load_saes(mp, spec, jobs[:1], training_plan(1920, 64, 512, 64, "cpu"), make_store(), [init], held, "pydoc", progress=False)
    assert longer["reference", 1][1]["key"] != out["reference", 1][1]["key"] and longer["reference", 1][1]["train_tokens"] == 1920


def test_an_sae_trained_alone_equals_the_one_trained_beside_others(gpt2_tiny, data_dir, tmp_path):
    """The batches of a layer do not depend on which other SAEs share the pass, so loading some and training the
    rest gives the SAEs that training all of them together gives."""
    mp, spec, init, held, make_store = stream_setup(gpt2_tiny, data_dir)
    plan = training_plan(640, 64, 512, 64, "cpu")
    together = train_or_load_saes(mp, spec, [SAEJob("l1", 1, {"expansion": 2}), SAEJob("l1", 2, {"expansion": 2})], plan, make_store(), [init], held, "x",
                                  progress=False)
    mp2 = model_paths(tmp_path / "other", spec.used)
    alone = train_or_load_saes(mp2, spec, [SAEJob("l1", 2, {"expansion": 2})], plan, make_store(), [init], held, "x", progress=False)
    assert torch.equal(alone["l1", 2][0].W_enc, together["l1", 2][0].W_enc)
    other_seed = train_or_load_saes(mp2, spec, [SAEJob("l1", 2, {"expansion": 2})], plan, make_store(seed=1), [init], held, "x", seed=1, progress=False)
    assert not torch.equal(other_seed["l1", 2][0].W_enc, together["l1", 2][0].W_enc)


def test_saes_stepped_in_parallel_threads_equal_those_stepped_one_after_another(gpt2_tiny, data_dir, tmp_path):
    """With one intra-op thread per worker, every SAE takes the same steps on the same batches as in a serial run:
    the parallel pass gives the same weights, and torch's thread count is restored afterwards."""
    mp, spec, init, held, make_store = stream_setup(gpt2_tiny, data_dir)
    jobs = [SAEJob("l1", 1, {"expansion": 2}), SAEJob("topk", 1, {"expansion": 2, "k": 4}), SAEJob("matryoshka", 2, {"expansion": 2, "k": 4}),
            SAEJob("reference", 2)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        serial = train_or_load_saes(mp, spec, jobs, training_plan(640, 64, 512, 64, "cpu", workers=1), make_store(), [init], held, "x", progress=False)
        parallel_plan = training_plan(640, 64, 512, 64, "cpu", workers=2)
        assert parallel_plan.workers == 2 and "MONOSEM_SAE_WORKERS" in parallel_plan.why
        parallel = train_or_load_saes(model_paths(tmp_path / "parallel", spec.used), spec, jobs, parallel_plan, make_store(), [init], held, "x",
                                      progress=False)
        assert torch.get_num_threads() == 1, "the thread count in force before training is restored"
    finally:
        torch.set_num_threads(threads)
    for jk in serial:
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            assert torch.equal(getattr(parallel[jk][0], name), getattr(serial[jk][0], name)), (jk, name)
        assert parallel[jk][1]["history"] == serial[jk][1]["history"]


def test_training_plan_defaults_by_model_size_and_device():
    small, large = training_plan(None, None, 32768, 384, "cpu"), training_plan(None, None, 32768, 1024, "cpu")
    assert small.train_tokens >= 1_000_000 and small.batch_size == 1024 and "d_model <= 512 on cpu" in small.why
    assert large.train_tokens < small.train_tokens and "d_model 1024 on cpu" in large.why
    smollm2 = training_plan(None, None, 32768, 576, "cpu")
    assert smollm2.train_tokens < small.train_tokens and "d_model <= 768 on cpu" in smollm2.why
    gpu = training_plan(None, None, 32768, 1024, "cuda")
    assert gpu.train_tokens >= 10_000_000 and gpu.batch_size == 4096
    assert small.tokens_per_sae >= 1_000_000, "every SAE sees at least the tokens asked for"
    chosen = training_plan(5000, 256, 1024, 384, "cpu")
    assert (chosen.steps, chosen.tokens_per_sae) == (20, 5120) and "MONOSEM_SAE_TOKENS and MONOSEM_SAE_BATCH" in chosen.why
    assert training_plan(100, 256, 1024, 384, "cpu").tokens_per_sae == 256
    assert (small.workers, gpu.workers) == (2, 1), "two threads step the SAEs on the CPU, one on a GPU"


def test_loss_change_over_the_last_tenth_of_steps():
    flat = [{"loss": 1.0} for _ in range(100)]
    falling = [{"loss": 100.0 - i} for i in range(100)]  # last 5%: steps 95..99 -> mean 3.0; steps 85..89 -> mean 13.0
    assert loss_change_last10pct(flat) == 0.0
    assert loss_change_last10pct(falling) == pytest.approx((3.0 - 13.0) / 13.0)
    assert loss_change_last10pct([{"loss": 2.0}, {"loss": 1.0}]) == pytest.approx(-0.5)


def test_a_trainer_refuses_steps_beyond_its_plan_and_an_unfinished_one_is_an_error():
    trainer = SAETrainer(TokenSource.of(torch.randn(50, 4)), "reference", steps=2)
    with pytest.raises(MonosemError, match="took 0 of its 2 steps"):
        trainer.finish()
    trainer.step(torch.randn(8, 4))
    trainer.step(torch.randn(8, 4))
    with pytest.raises(MonosemError, match="planned for 2 steps"):
        trainer.step(torch.randn(8, 4))
    assert len(trainer.finish()[1]) == 2


@pytest.mark.parametrize("preset", ["l1", "topk"])
def test_presets_learn_and_fold_their_input_scale_exactly(preset, structured_data):
    x = structured_data() * 7.0  # far from norm sqrt(d): the scale matters
    sae, hist, cfg = train_sae(x, preset, steps=300, batch_size=128, seed=0, progress=False, expansion=4, **({"k": 8} if preset == "topk" else {}))
    assert cfg["input_scale"] == pytest.approx(16 ** 0.5 / x.norm(dim=1).mean().item(), rel=1e-4)
    assert sae.d_sae == 64 and hist[-1]["mse"] < hist[0]["mse"]
    m = sae_metrics(sae, x)
    assert m["fve"] > 0.5
    if preset == "topk":
        assert m["l0"] == pytest.approx(8.0, abs=0.05) and m["l0"] <= 8 and sae.architecture == "topk"
        assert torch.allclose(sae.W_dec.norm(dim=1) * cfg["input_scale"], torch.ones(64), atol=1e-4)  # unit norm before folding


def test_topk_keeps_fewer_dead_features_than_reference_on_offset_data(structured_data):
    # activations far from the origin (as GPT-2's residual stream is): with nn.Linear init and no b_dec
    # centring many reference features never fire; TopK starts from b_dec = mean and AuxK revives the rest
    x = structured_data(n=4000, d=16, seed=2) + 8.0
    ref, _, _ = train_sae(x, "reference", steps=400, batch_size=128, seed=0, progress=False, expansion=4)
    topk, _, _ = train_sae(x, "topk", steps=400, batch_size=128, seed=0, progress=False, expansion=4, k=4, dead_steps=20)
    m_ref, m_topk = sae_metrics(ref, x), sae_metrics(topk, x)
    assert m_topk["l0"] == pytest.approx(4.0, abs=0.01)
    assert m_topk["dead_fraction"] < m_ref["dead_fraction"], (m_topk, m_ref)


def test_unknown_override_is_an_error():
    with pytest.raises(MonosemError, match="unknown setting"):
        train_sae(torch.randn(10, 4), "l1", steps=1, expansoin=2)


def test_an_sae_that_cannot_be_saved_never_loses_the_others(gpt2_tiny, data_dir, monkeypatch):
    import monosem.sae.train as train_module

    mp, spec, init, held, make_store = stream_setup(gpt2_tiny, data_dir)
    real_save = train_module.save_sae

    def save_or_fail(sae, folder, *args, **kwargs):
        if "topk" in str(folder):
            raise MonosemError(f"the SAE for {folder} has NaN or Inf (training diverged); nothing was written")
        real_save(sae, folder, *args, **kwargs)

    monkeypatch.setattr(train_module, "save_sae", save_or_fail)
    jobs = [SAEJob("topk", 1, {"expansion": 2, "k": 4}), SAEJob("reference", 1), SAEJob("l1", 2, {"expansion": 2})]
    with pytest.raises(MonosemError, match=r"1 of 3 SAEs could not be saved \(the others are\):\ntopk, layer 1: .*NaN"):
        train_or_load_saes(mp, spec, jobs, training_plan(640, 64, 512, 64, "cpu"), make_store(), [init], held, "x", progress=False)
    assert (mp.sae(1, "reference") / "training.json").is_file() and (mp.sae(2, "l1") / "training.json").is_file()
    assert not (mp.sae(1, "topk") / "training.json").exists()
