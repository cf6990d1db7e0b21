"""The training recipes (presets) by name: architecture, width and optimiser settings."""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # The reference study: ReLU encoder, linear decoder, hidden d_model // 2, L1 weight 0.1 on the
    # feature activations (loss = mean squared error + 0.1 * mean |f|), Adam, nn.Linear-style init.
    "reference": dict(architecture="standard", expansion=0.5, l1=0.1, lr=1e-3, apply_b_dec_to_input=False, scale_inputs=False,
                      init="linear", b_dec_init=None, mse="mean", l1_decoder_norm=False, lr_warmup=0.0, lr_decay=0.0, l1_warmup=0.0),
    # Anthropic's April 2024 recipe: inputs scaled to mean norm sqrt(d_in), b_dec at the data mean,
    # tied init with decoder rows of norm 0.1, L1 weighted by decoder row norms, warm-ups and decay.
    "l1": dict(architecture="standard", expansion=8, l1=2.0, lr=2e-3, apply_b_dec_to_input=True, scale_inputs=True,
               init="tied", b_dec_init="mean", mse="sum", l1_decoder_norm=True, lr_warmup=0.05, lr_decay=0.2, l1_warmup=0.1),
    # OpenAI's TopK recipe: k active features, unit-norm decoder rows, AuxK loss on dead features.
    "topk": dict(architecture="topk", expansion=8, k=32, lr=1e-3, apply_b_dec_to_input=True, scale_inputs=True, init="tied",
                 b_dec_init="mean", mse="sum", lr_warmup=0.05, lr_decay=0.2, aux_k=None, aux_coef=1 / 32, dead_steps=100),
    # Matryoshka BatchTopK (Bussmann et al., 2025): k active features per token on average over the batch, and the
    # loss sums the reconstruction error of nested prefixes of the dictionary (1/64, 1/16, 1/4 and all of it, the
    # paper's factor-4 spacing); the TopK recipe otherwise. Saved for inference as SAELens saves it (jumprelu).
    "matryoshka": dict(architecture="matryoshka_batchtopk", expansion=8, k=32, matryoshka_fractions=(1 / 64, 1 / 16, 1 / 4, 1.0),
                       topk_threshold_lr=0.01, lr=1e-3, apply_b_dec_to_input=True, scale_inputs=True, init="tied", b_dec_init="mean", mse="sum",
                       lr_warmup=0.05, lr_decay=0.2, aux_k=None, aux_coef=1 / 32, dead_steps=100),
}


def preset_overrides(preset: str, expansion: float, k: int) -> dict[str, Any]:
    """The run's overrides of a preset: ``expansion`` for the modern presets, ``k`` for topk and matryoshka (the reference stays as it ran)."""
    if preset == "reference":
        return {}
    return {"expansion": expansion} | ({"k": k} if "k" in PRESETS[preset] else {})
