"""Model layouts as data: per family, where the blocks, the MLP neurons, the final norm and the unembedding live.

One row of ``LAYOUTS`` per layout, keyed by the transformers ``config.model_type``; adding a family is
adding a row (and a tiny random-weight test in ``tests/test_layouts.py``). Paths are attribute paths
under the *base* model (``AutoModel``: ``GPT2Model``, ``LlamaModel``, ``GPTNeoXModel``, ``BertModel``)
or under one block:

- the residual stream after block L is the output of ``blocks[L]``;
- the MLP neurons of block L are the *input* of its MLP's output projection (GPT-2 ``mlp.c_proj``:
  ``act(c_fc(x))``; a gated MLP's ``down_proj``: ``act(gate_proj(x)) * up_proj(x)``, not ``act_fn``'s
  output alone; GPT-NeoX ``dense_4h_to_h``; BERT ``output.dense``: ``act(intermediate.dense(x))``);
- the final norm is the one the logit lens applies before the unembedding (LayerNorm for GPT-2 and
  GPT-NeoX, RMSNorm for Llama-style models; an encoder has none);
- the unembedding is the LM head when the model was loaded with one (untied heads), else the tied
  input embedding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from monosem.config import MonosemError


@dataclass(frozen=True)
class Layout:
    """Where one model family keeps its parts (attribute paths under the base model, or under a block)."""

    name: str
    model_types: tuple[str, ...]  # transformers config.model_type values of this layout
    causal: bool  # a decoder-only LM (next-token logits through an unembedding)
    blocks: str  # the ModuleList of blocks under the base model
    mlp_out: str  # the MLP's output projection under a block; its input is the MLP neurons
    final_norm: str | None  # the norm before the unembedding, under the base model (None: an encoder)
    neurons: str  # what the MLP neurons are, in words (documentation; the README's layout table says the same)
    gated: bool = False  # act(gate) * up: signed neurons, scored as a positive and a negative unit each (monosem.bases.MLPBasis)


LAYOUTS: tuple[Layout, ...] = (
    Layout("gpt2", ("gpt2",), True, "h", "mlp.c_proj", "ln_f", "act(c_fc(x)), the input of mlp.c_proj"),
    Layout("llama", ("llama", "mistral", "qwen2", "qwen3"), True, "layers", "mlp.down_proj", "norm",
           "act(gate_proj(x)) * up_proj(x), the input of mlp.down_proj", gated=True),
    Layout("gpt_neox", ("gpt_neox",), True, "layers", "mlp.dense_4h_to_h", "final_layer_norm", "act(dense_h_to_4h(x)), the input of mlp.dense_4h_to_h"),
    Layout("bert", ("bert", "roberta", "xlm-roberta"), False, "encoder.layer", "output.dense", None, "act(intermediate.dense(x)), the input of output.dense"),
)


def _attr(root: Any, path: str) -> Any:
    """``root.a.b.c`` for ``path`` 'a.b.c' (None when any part is missing)."""
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def base_model(model: nn.Module) -> nn.Module:
    """The base transformer of ``model`` (itself for ``AutoModel``; the inner model of a ``*ForCausalLM``)."""
    inner = getattr(model, "base_model", None)
    return inner if isinstance(inner, nn.Module) else model


def layout_of(model_or_config: Any) -> Layout:
    """The ``Layout`` row of a model (or its config), by ``config.model_type``; a MonosemError names the supported types."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    for layout in LAYOUTS:
        if model_type in layout.model_types:
            return layout
    known = ", ".join(t for layout in LAYOUTS for t in layout.model_types)
    raise MonosemError(f"model type {model_type!r} has no layout row; supported: {known}. Add a row to monosem.layouts.LAYOUTS "
                       "(where its blocks, MLP output projection and final norm live) and a tiny random-weight test")


def blocks_of(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of ``model``, in order."""
    layout = layout_of(model)
    blocks = _attr(base_model(model), layout.blocks)
    if not isinstance(blocks, nn.ModuleList):
        raise MonosemError(f"{type(model).__name__} ({layout.name} layout) has no block list at {layout.blocks!r}")
    return blocks


def mlp_out_projection(model: nn.Module, block: nn.Module) -> nn.Module:
    """The output projection of ``block``'s MLP: its input [batch, seq, d_mlp] is the block's MLP neurons."""
    layout = layout_of(model)
    found = _attr(block, layout.mlp_out)
    if not isinstance(found, nn.Module):
        raise MonosemError(f"{type(block).__name__} ({layout.name} layout) has no MLP output projection at {layout.mlp_out!r}")
    return found


def final_norm(model: nn.Module) -> nn.Module | None:
    """The norm applied before the unembedding (GPT-2 ``ln_f``, Llama ``norm``, GPT-NeoX ``final_layer_norm``); None for an encoder."""
    layout = layout_of(model)
    if layout.final_norm is None:
        return None
    norm = _attr(base_model(model), layout.final_norm)
    if not isinstance(norm, nn.Module):
        raise MonosemError(f"{type(model).__name__} ({layout.name} layout) has no final norm at {layout.final_norm!r}")
    return norm


def unembedding(model: nn.Module) -> Tensor:
    """The unembedding matrix [vocab, d_model] of a causal LM: its LM head when loaded with one, else the tied input embedding."""
    if not layout_of(model).causal:
        raise MonosemError(f"{type(model).__name__} is an encoder: its base model has no unembedding")
    hf: Any = model  # a transformers model
    head = hf.get_output_embeddings() if hasattr(hf, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    if isinstance(head, nn.Module) and isinstance(weight, Tensor):
        return weight
    if not getattr(hf.config, "tie_word_embeddings", True):
        raise MonosemError(f"{type(model).__name__} does not tie its LM head to its input embedding and was loaded without the head; "
                           "load it with monosem.model.load_model, which attaches the head of an untied causal LM")
    return hf.get_input_embeddings().weight


def first_token_id(tokenizer: Any) -> int | None:
    """The token put at position 0 of every text, or None when the tokenizer adds its own start token.

    - A tokenizer that adds a special token at the start itself (BERT's [CLS], Llama 2/3's BOS): nothing more.
    - Otherwise the document separator ``<|endoftext|>`` when the vocabulary has it (GPT-2, GPT-NeoX,
      SmolLM2, Qwen2: the token that separates documents in their pretraining data; SmolLM2-Instruct's
      declared ``bos_token`` is the chat-turn marker ``<|im_start|>``, which is not), else its ``bos_token``.
    """
    probe = tokenizer("a", add_special_tokens=True, return_special_tokens_mask=True)
    if probe["special_tokens_mask"] and probe["special_tokens_mask"][0]:
        return None
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>") if "<|endoftext|>" in tokenizer.get_vocab() else None
    return int(eot) if eot is not None else getattr(tokenizer, "bos_token_id", None)
