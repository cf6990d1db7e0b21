import pytest
import torch

from monosem.activations import encode_examples, extract_concept_activations, residual_at_layers, word_token_check
from monosem.model import get_blocks
from monosem.testing import small_concepts


@pytest.mark.parametrize("which", ["gpt2_tiny", "bundled"])
def test_layer_L_is_hidden_states_L_plus_1(request, concepts, which):
    fixture = request.getfixturevalue(which)
    model, tok = fixture[-2:]
    df = small_concepts(concepts, 1)
    enc = encode_examples(tok, df.sentence.tolist(), list(zip(df.word_start, df.word_end)))
    ids = torch.tensor([enc[0].ids])
    with torch.inference_mode():
        hs = model(input_ids=ids, output_hidden_states=True).hidden_states
    layers = [0, 1, 2, 3]
    got = residual_at_layers(model, ids, torch.ones_like(ids), layers)
    for L in layers:
        torch.testing.assert_close(got[L], hs[L + 1], rtol=0, atol=0)
    if which == "gpt2_tiny":  # GPT-2's last hidden_states entry has ln_f applied: it is not block 5's output
        last = len(get_blocks(model)) - 1
        assert not torch.allclose(residual_at_layers(model, ids, torch.ones_like(ids), [last])[last], hs[last + 1])


def test_extraction_stops_after_the_deepest_layer(gpt2_tiny):
    model, tok = gpt2_tiny
    ran = []
    handles = [b.register_forward_hook(lambda m, a, o, i=i: ran.append(i)) for i, b in enumerate(get_blocks(model))]
    try:
        ids = torch.tensor([tok("hello world")["input_ids"]])
        residual_at_layers(model, ids, torch.ones_like(ids), [1])
    finally:
        for x in handles:
            x.remove()
    assert ran == [0, 1]


def test_gpt2_word_tokens_bos_and_padding(gpt2_tiny, concepts):
    model, tok = gpt2_tiny
    df = concepts[concepts.word.isin(["green", "2024", "worried"])].reset_index(drop=True)
    enc = encode_examples(tok, df.sentence.tolist(), list(zip(df.word_start, df.word_end)))
    green = [e for e, w in zip(enc, df.word) if w == "green"][0]
    assert green.ids[0] == tok.bos_token_id and green.special[0]  # BOS prepended, marked special
    assert [i for i, w in zip(green.ids, green.in_word) if w] == [4077]  # " green"
    check = word_token_check(tok, df)
    assert check.ok.all(), check[~check.ok]
    # batched + padded extraction equals one-sentence-at-a-time extraction
    a = extract_concept_activations(model, tok, df, [0, 2], batch_size=7, progress=False)
    b = extract_concept_activations(model, tok, df, [0, 2], batch_size=1, progress=False)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-5)
    n_tok = sum(len(e.ids) - sum(e.special) for e in enc)
    assert a["L2.tokens"].shape == (n_tok, 64) and a["L0.mean"].shape == (len(df), 64)
    # word mean = mean of the word's token rows; last = the last word token
    rows = (a["token_example"] == 0) & a["token_in_word"]
    tokens = torch.from_numpy(a["L2.tokens"])
    torch.testing.assert_close(a["L2.mean"][0], tokens[rows].mean(0))
    torch.testing.assert_close(a["L2.last"][0], tokens[rows][-1])
    torch.testing.assert_close(a["L2.sentence"][0], tokens[a["token_example"] == 0].mean(0))
    # MLP post-activations: GPT-2's mlp.act output, 4 * d_model wide
    assert a["L2.mlp.mean"].shape == (len(df), 256)
    seen = {}
    handle = get_blocks(model)[2].mlp.act.register_forward_hook(lambda m, i, o: seen.setdefault("x", o))
    ids = torch.tensor([enc[0].ids])
    with torch.inference_mode():
        model(input_ids=ids)
    handle.remove()
    word_rows = torch.tensor(enc[0].in_word)
    torch.testing.assert_close(a["L2.mlp.mean"][0], seen["x"][0][word_rows].mean(0), atol=1e-5, rtol=1e-5)
