"""Text -> trained SAEs for several layers: this project's one pass against SAELens's pipeline, run by ``bench/run.py``.

Both sides start from the same texts and train one TopK SAE (d_sae = 8 x d_model, k = 32) per layer on the same number
of tokens in the same number of steps. The model is the default one (SmolLM2-135M, a Llama layout: ours runs the real
weights, SAELens a TransformerLens model of the same config with random weights, the same arithmetic) or a
GPT-2-architecture model with random weights on both sides:

- ours: ``ActivationStore`` runs the model once through the deepest layer and feeds every layer's ``SAETrainer``
  (sparse TopK) from one shuffled buffer;
- SAELens: ``LanguageModelSAETrainingRunner`` once per layer (its documented way to train an SAE on a hook), each
  run with its own ``ActivationsStore`` (``run_with_cache(stop_at_layer=L + 1)``) and ``TopKTrainingSAE`` (its CPU
  setting, dense activations); and, for information, its ``MultiSAETrainingRunner``, which feeds several hooks from
  one pass too.
"""

from __future__ import annotations

import logging
import tempfile
import time
import warnings
from collections.abc import Sequence
from typing import Any

import torch


def tl_config(hf_config: Any) -> dict:
    """TransformerLens's config keys for the Hugging Face config ``hf_config`` (GPT-2 or Llama layout; same architecture)."""
    if getattr(hf_config, "model_type", "") == "llama":
        d, heads = hf_config.hidden_size, hf_config.num_attention_heads
        rope = getattr(hf_config, "rope_parameters", None) or {"rope_theta": getattr(hf_config, "rope_theta", 10000.0)}
        return dict(n_layers=hf_config.num_hidden_layers, d_model=d, n_heads=heads, d_head=d // heads, d_mlp=hf_config.intermediate_size,
                    d_vocab=hf_config.vocab_size, n_ctx=min(2048, hf_config.max_position_embeddings), n_key_value_heads=hf_config.num_key_value_heads,
                    act_fn="silu", normalization_type="RMS", positional_embedding_type="rotary", rotary_dim=d // heads,
                    rotary_base=int(rope["rope_theta"]), gated_mlp=True, final_rms=True, eps=hf_config.rms_norm_eps)
    d = hf_config.n_embd
    return dict(n_layers=hf_config.n_layer, d_model=d, n_heads=hf_config.n_head, d_head=d // hf_config.n_head, d_mlp=hf_config.n_inner or 4 * d,
                d_vocab=hf_config.vocab_size, n_ctx=hf_config.n_positions, act_fn="gelu_new", normalization_type="LN")


def describe(hf_config: Any) -> str:
    """The model of the pipeline bench, in words."""
    if getattr(hf_config, "model_type", "") == "llama":
        return (f"SmolLM2-135M-Instruct layout (Llama: {hf_config.num_hidden_layers} blocks, d_model {hf_config.hidden_size}); ours the real "
                "weights, SAELens a TransformerLens model of the same config with random weights")
    return f"GPT-2, {hf_config.n_layer} blocks, d_model {hf_config.n_embd}, random weights"


def ours(model: Any, tok: Any, texts: Sequence[str], layers: Sequence[int], steps: int, batch: int, buffer_tokens: int, k: int) -> dict:
    """Seconds from texts to one trained topk SAE per layer in one pass (store, initialisation, training, folding)."""
    try:
        from monosem.sae.train import SAETrainer, TokenSource
        from monosem.store import ActivationStore
    except ImportError as exc:
        return {"error": f"the one-pass store is not available here ({exc})"}
    t0 = time.perf_counter()
    store = ActivationStore(model, tok, texts, layers, batch_size=16, buffer_tokens=buffer_tokens, seed=0)
    batches = store.batches(batch, steps)
    first = next(batches)  # each SAE is initialised for its layer's first batch (mean, norm, tied directions)
    trainers = {L: SAETrainer(TokenSource.of(first[L]), "topk", steps, 0, "cpu", expansion=8, k=k) for L in layers}
    for L, trainer in trainers.items():
        trainer.step(first[L])
    for b in batches:
        for L, trainer in trainers.items():
            trainer.step(b[L])
    final_mse = {}
    for L, trainer in trainers.items():
        _, history, _ = trainer.finish()
        final_mse[L] = history[-1]["mse"]
    seconds = time.perf_counter() - t0
    sae_seconds = sum(t.seconds for t in trainers.values())
    return {"seconds": seconds, "model_seconds": store.model_seconds, "sae_seconds": sae_seconds, "tokens_run": store.tokens_run,
            "final_mse": final_mse}


def _tl_model(tok: Any, arch: dict) -> Any:
    """The architecture ``arch`` (``tl_config``) in TransformerLens, random weights, with ``tok`` as its tokenizer."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:  # TransformerLens re-loads the tokenizer by name: give it a folder
        tok.save_pretrained(tmp)
        tl_tok = AutoTokenizer.from_pretrained(tmp)
        cfg = HookedTransformerConfig(**arch, device="cpu", seed=0)
        return HookedTransformer(cfg, tokenizer=tl_tok).eval()


def _runner_common(texts: Sequence[str], steps: int, batch: int, buffer_tokens: int) -> dict:
    import sae_lens as sl

    context = 128
    return dict(model_name="random-weights", dataset_path="in-memory texts", streaming=False,
                context_size=context, training_tokens=steps * batch, train_batch_size_tokens=batch, store_batch_size_prompts=16,
                n_batches_in_buffer=max(1, buffer_tokens // context), lr=1e-3, device="cpu", dtype="float32", seed=0, n_checkpoints=0,
                logger=sl.LoggingConfig(log_to_wandb=False))


def saelens_per_layer(tok: Any, arch: dict, texts: Sequence[str], layers: Sequence[int], steps: int, batch: int, buffer_tokens: int, k: int) -> dict:
    """Seconds of SAELens's pipeline run once per layer (model built once, outside the timing)."""
    import sae_lens as sl
    from datasets import Dataset

    model = _tl_model(tok, arch)
    dataset = Dataset.from_dict({"text": list(texts)})
    per_layer = {}
    for L in layers:
        t0 = time.perf_counter()
        cfg = sl.LanguageModelSAERunnerConfig(sae=sl.TopKTrainingSAEConfig(d_in=arch["d_model"], d_sae=8 * arch["d_model"], k=k),
                                              hook_name=f"blocks.{L}.hook_resid_post", output_path=None, is_dataset_tokenized=False,
                                              **_runner_common(texts, steps, batch, buffer_tokens))
        sl.LanguageModelSAETrainingRunner(cfg, override_dataset=dataset, override_model=model).run()
        per_layer[L] = time.perf_counter() - t0
    return {"seconds": sum(per_layer.values()), "per_layer": per_layer}


def saelens_multi(tok: Any, arch: dict, texts: Sequence[str], layers: Sequence[int], steps: int, batch: int, buffer_tokens: int, k: int) -> dict:
    """Seconds of SAELens's ``MultiSAETrainingRunner``: one TopK SAE per layer's hook, fed from one pass."""
    import sae_lens as sl
    from datasets import Dataset

    model = _tl_model(tok, arch)
    dataset = Dataset.from_dict({"text": list(texts)})
    names = {f"layer_{L}": f"blocks.{L}.hook_resid_post" for L in layers}
    saes = {name: sl.TopKTrainingSAEConfig(d_in=arch["d_model"], d_sae=8 * arch["d_model"], k=k) for name in names}
    t0 = time.perf_counter()
    cfg = sl.MultiSAETrainingRunnerConfig(saes=saes, hook_names=names, output_path=None, **_runner_common(texts, steps, batch, buffer_tokens))
    sl.MultiSAETrainingRunner(cfg, override_dataset=dataset, override_model=model).run()
    return {"seconds": time.perf_counter() - t0}


def bench_pipeline(model: Any, tok: Any, texts: Sequence[str], layers: Sequence[int] = (0, 1, 2, 3), steps: int = 8, batch: int = 4096,
                   buffer_tokens: int = 16384, k: int = 32) -> dict:
    """Ours and SAELens (per layer, and multi-hook) from the same texts to trained TopK SAEs of ``layers``, same tokens and steps."""
    arch = tl_config(model.config)
    res: dict[str, Any] = {"layers": list(layers), "tokens_per_sae": steps * batch, "steps": steps, "batch": batch, "buffer_tokens": buffer_tokens,
                           "k": k, "d_sae": 8 * arch["d_model"], "model": describe(model.config)}
    res["ours"] = ours(model, tok, texts, layers, steps, batch, buffer_tokens, k)
    if "error" in res["ours"]:
        return res
    try:
        import sae_lens  # noqa: F401
    except ImportError as exc:
        res["SAELens"] = f"not installed ({exc})"
        return res
    quiet = [logging.getLogger(name) for name in ("sae_lens", "transformer_lens")]
    levels = [log.level for log in quiet]
    for log in quiet:
        log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res["SAELens per layer"] = saelens_per_layer(tok, arch, texts, layers, steps, batch, buffer_tokens, k)
            try:
                res["SAELens multi-hook"] = saelens_multi(tok, arch, texts, layers, steps, batch, buffer_tokens, k)
            except Exception as exc:  # information only: its absence must not cost the goal's measurement
                res["SAELens multi-hook"] = f"failed: {type(exc).__name__}: {exc}"
    finally:
        for log, level in zip(quiet, levels):
            log.setLevel(level)
    torch.set_grad_enabled(True)
    return res
