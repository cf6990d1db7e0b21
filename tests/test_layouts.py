"""Model layouts (monosem.layouts) on tiny random-weight models of every family, each checked against an independent computation:
MLP neurons from the MLP's own weights, the logit lens through the model's own final norm, the unembedding through the
family's *ForCausalLM, the random-weight control from the config, the first token and the logit lens's word tokens."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    BertConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    RobertaConfig,
)
from transformers.activations import ACT2FN

from monosem.activations import encode_examples, pad_batch, run_layers
from monosem.causal import logit_lens_scores, word_first_tokens
from monosem.config import MonosemError
from monosem.controls import load_random_model
from monosem.fidelity import lm_logits
from monosem.layouts import LAYOUTS, final_norm, first_token_id, layout_of, unembedding
from monosem.model import get_blocks, is_causal_lm, load_model, mlp_signed, resolve_model
from monosem.sae.standard import StandardSAE
from monosem.testing import gpt2_bpe_tokenizer

VOCAB = 50257  # the real GPT-2 BPE serves every tiny model here
D = 32
CONFIGS = {
    "gpt2": lambda: GPT2Config(n_layer=3, n_embd=D, n_head=4, n_positions=64, vocab_size=VOCAB),
    "llama": lambda: LlamaConfig(num_hidden_layers=3, hidden_size=D, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2,
                                 vocab_size=VOCAB, max_position_embeddings=64, tie_word_embeddings=True),
    "gpt_neox": lambda: GPTNeoXConfig(num_hidden_layers=3, hidden_size=D, intermediate_size=64, num_attention_heads=4, vocab_size=VOCAB,
                                      max_position_embeddings=64),
    "bert": lambda: BertConfig(num_hidden_layers=3, hidden_size=D, intermediate_size=64, num_attention_heads=4, vocab_size=VOCAB,
                               max_position_embeddings=64),
    "roberta": lambda: RobertaConfig(num_hidden_layers=3, hidden_size=D, intermediate_size=64, num_attention_heads=4, vocab_size=VOCAB,
                                     max_position_embeddings=70),
}
ENCODERS = ("bert", "roberta")
TEXTS = ["The red fox ran to the river.", "She counted seven apples and felt happy."]


def tiny(family: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return AutoModel.from_config(CONFIGS[family]()).eval()


@pytest.fixture(scope="module")
def tok():
    return gpt2_bpe_tokenizer()


def batch(tok):
    enc = encode_examples(tok, TEXTS)
    ids, attn, keep, _ = pad_batch(enc, list(range(len(enc))), tok.pad_token_id)
    return ids, attn, keep


def expected_neurons(family: str, block: nn.Module, mlp_input: torch.Tensor) -> torch.Tensor:
    """The MLP neurons computed from the MLP's own weights, independently of the layout table."""
    if family == "gpt2":
        act = ACT2FN["gelu_new"]  # GPT2Config's default activation_function
        return act(mlp_input @ block.mlp.c_fc.weight + block.mlp.c_fc.bias)  # Conv1D: weight [in, out]
    if family == "llama":
        m = block.mlp
        return torch.nn.functional.silu(mlp_input @ m.gate_proj.weight.T) * (mlp_input @ m.up_proj.weight.T)
    if family == "gpt_neox":
        m = block.mlp
        return m.act(mlp_input @ m.dense_h_to_4h.weight.T + m.dense_h_to_4h.bias)
    dense = block.intermediate.dense
    return block.intermediate.intermediate_act_fn(mlp_input @ dense.weight.T + dense.bias)


@pytest.mark.parametrize("family", list(CONFIGS))
def test_mlp_neurons_are_the_input_of_the_output_projection(family, tok):
    model = tiny(family)
    ids, attn, _ = batch(tok)
    blocks = get_blocks(model)
    assert len(blocks) == 3 and layout_of(model).name == ("bert" if family in ENCODERS else family)
    seen = {}
    where = [(b.intermediate if family in ENCODERS else b.mlp) for b in blocks]  # the MLP's input: the module the MLP starts with
    handles = [m.register_forward_hook(lambda mod, args, out, i=i: seen.update({i: args[0]})) for i, m in enumerate(where)]  # returns None
    try:
        resid, neurons = run_layers(model, ids, attn, [0, 2], mlp=True)
    finally:
        for hd in handles:
            hd.remove()
    for L in (0, 2):
        with torch.inference_mode():
            want = expected_neurons(family, blocks[L], seen[L])
        torch.testing.assert_close(neurons[L], want, rtol=1e-5, atol=1e-5)
        assert neurons[L].shape[-1] == {"gpt2": 4 * D, "llama": 48}.get(family, 64)
    if family == "llama":  # a gated MLP's neurons are signed, and act_fn's output alone is not them
        with torch.inference_mode():
            gate_only = torch.nn.functional.silu(seen[0] @ blocks[0].mlp.gate_proj.weight.T)
        assert not torch.allclose(neurons[0], gate_only) and (neurons[0] < 0).float().mean() > 0.2


def loaded(family: str, tok, folder, **changes) -> tuple[nn.Module, nn.Module]:
    """(the family's tiny *ForCausalLM, its base model as load_model loads it from a saved folder)."""
    config = CONFIGS[family]()
    for k, v in changes.items():
        setattr(config, k, v)
    torch.manual_seed(0)
    full = AutoModelForCausalLM.from_config(config).eval()
    full.save_pretrained(folder)
    tok.save_pretrained(folder)
    return full, load_model(resolve_model(str(folder)))[0]


@pytest.mark.parametrize("family", [f for f in CONFIGS if f not in ENCODERS])
def test_logit_lens_uses_the_models_own_final_norm(family, tok, tmp_path):
    """scores x the norm's 1/scale (+ its bias's logits) = final_norm(row) @ W_U.T, with the module itself (GPT-NeoX: untied head)."""
    _, model = loaded(family, tok, tmp_path / family)
    norm = final_norm(model)
    assert norm is not None and is_causal_lm(model)
    sae = StandardSAE(D, 5, seed=1).eval()
    scores = logit_lens_scores(model, sae, [0, 1, 2, 3, 4])
    rows = sae.W_dec.detach().float()
    with torch.no_grad():
        normed = norm(rows)  # [5, D]
        W_U = unembedding(model)
        want = normed @ W_U.T
        if isinstance(norm, nn.LayerNorm):
            scale = 1 / torch.sqrt(rows.var(-1, unbiased=False, keepdim=True) + norm.eps)
            got = scores * scale + (norm.bias @ W_U.T)
        else:  # RMSNorm: no centring, no bias
            eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6))
            got = scores / torch.sqrt(rows.pow(2).mean(-1, keepdim=True) + eps)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", [f for f in CONFIGS if f not in ENCODERS])
def test_lm_logits_of_the_base_model_equal_the_causal_lm(family, tok, tmp_path):
    full, base = loaded(family, tok, tmp_path / family)
    ids, attn, _ = batch(tok)
    with torch.no_grad():
        want = full(input_ids=ids, attention_mask=attn).logits
        got = lm_logits(base, base(input_ids=ids, attention_mask=attn).last_hidden_state)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_an_untied_lm_head_is_loaded_for_the_logit_lens(tok, tmp_path, capfd):
    full, _ = loaded("llama", tok, tmp_path / "untied", tie_word_embeddings=False)
    capfd.readouterr()  # saving prints its own progress bar
    base, _ = load_model(resolve_model(str(tmp_path / "untied")))
    assert capfd.readouterr().err == "", "loading an untied model must not print a load report or a progress bar"
    torch.testing.assert_close(unembedding(base), full.lm_head.weight)
    assert not torch.allclose(unembedding(base), base.get_input_embeddings().weight)
    bare = AutoModel.from_config(full.config)
    with pytest.raises(MonosemError, match="does not tie"):
        unembedding(bare)


@pytest.mark.parametrize("family", list(CONFIGS))
def test_random_control_is_built_from_the_config_of_every_layout(family, tok, tmp_path):
    torch.manual_seed(0)
    real = AutoModel.from_config(CONFIGS[family]()).eval()
    real.save_pretrained(tmp_path / family)
    tok.save_pretrained(tmp_path / family)
    spec = resolve_model(str(tmp_path / family))
    control, _ = load_random_model(spec, seed=7)
    assert type(control) is type(real) and len(get_blocks(control)) == len(get_blocks(real))
    a, b = real.get_input_embeddings().weight, control.get_input_embeddings().weight
    assert a.shape == b.shape and not torch.allclose(a, b)
    assert mlp_signed(spec) == (family == "llama")
    assert is_causal_lm(control) == (family not in ENCODERS)


def test_every_layout_row_is_tested():
    assert {layout.name for layout in LAYOUTS} <= set(CONFIGS)


def test_an_unknown_family_names_the_table():
    with pytest.raises(MonosemError, match="LAYOUTS"):
        layout_of(type("Cfg", (), {"model_type": "t5"})())


def test_first_token_gpt2_and_bert(tok, bundled):
    assert first_token_id(tok) == tok.convert_tokens_to_ids("<|endoftext|>")
    _, _, minilm_tok = bundled
    assert first_token_id(minilm_tok) is None  # [CLS] comes from the tokenizer itself
    assert encode_examples(minilm_tok, ["a red fox"])[0].ids[0] == minilm_tok.cls_token_id


def test_smollm2_first_token_is_the_document_separator_not_the_chat_marker(smollm2):
    spec, model, tok = smollm2
    assert tok.bos_token == "<|im_start|>"  # what the GGUF declares
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    assert first_token_id(tok) == eot
    enc = encode_examples(tok, ["She counted seven apples."])[0]
    assert enc.ids[0] == eot and enc.special[0] and not any(enc.special[1:])


def test_smollm2_word_tokens_for_the_logit_lens_come_from_offsets(smollm2):
    _, _, tok = smollm2
    assert tok.convert_ids_to_tokens(tok(" 30", add_special_tokens=False)["input_ids"])[0] == "Ġ"  # the space is a token of its own
    first = word_first_tokens(tok, ["30", "green", "7"])
    assert tok.convert_ids_to_tokens(first.tolist()) == ["3", "Ġgreen", "7"]


def test_smollm2_is_a_llama_layout_causal_lm_with_signed_neurons(smollm2):
    spec, model, tok = smollm2
    assert layout_of(model).name == "llama" and is_causal_lm(model) and mlp_signed(spec)
    assert len(get_blocks(model)) == 30 and model.config.hidden_size == 576
    ids = tok("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hidden = model(input_ids=ids).last_hidden_state
    assert tok.decode([int(lm_logits(model, hidden)[0, -1].argmax())]) == " Paris"  # the real pretrained weights, read through our unembedding


def test_the_first_token_counts_towards_max_length(tok, bundled):
    """A model with 128 positions must never get 129 tokens: the prepended separator is inside max_length."""
    text = " ".join(["word"] * 50)
    gpt2 = encode_examples(tok, [text], max_length=8)[0]
    assert len(gpt2.ids) == 8 and gpt2.ids[0] == first_token_id(tok) and gpt2.special == [True] + [False] * 7
    _, _, minilm_tok = bundled
    bert = encode_examples(minilm_tok, [text], max_length=8)[0]
    assert len(bert.ids) == 8 and bert.ids[0] == minilm_tok.cls_token_id and bert.ids[-1] == minilm_tok.sep_token_id


def test_words_that_share_a_first_token_are_counted(smollm2):
    from monosem.causal import shared_first_tokens

    _, _, tok = smollm2
    shared = shared_first_tokens(tok, ["30", "3", "green", "3"])
    assert shared == {"n_words": 3, "n_sharing": 2, "examples": ["'3': 30, 3"]}
