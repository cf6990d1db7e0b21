import json

import pytest
import torch

import helpers as h


def small_df(concepts, per_category=2):
    words = concepts.drop_duplicates("word").groupby("concept").head(per_category).word
    return concepts[concepts.word.isin(words)].reset_index(drop=True)


@pytest.mark.parametrize("which", ["gpt2_tiny", "bundled"])
def test_layer_L_is_hidden_states_L_plus_1(request, concepts, which):
    fixture = request.getfixturevalue(which)
    model, tok = fixture[-2:]
    df = small_df(concepts, 1)
    enc = h.encode_examples(tok, df.sentence.tolist(), list(zip(df.word_start, df.word_end)))
    ids = torch.tensor([enc[0].ids])
    with torch.inference_mode():
        hs = model(input_ids=ids, output_hidden_states=True).hidden_states
    layers = [0, 1, 2, 3]
    got = h.residual_at_layers(model, ids, torch.ones_like(ids), layers)
    for L in layers:
        torch.testing.assert_close(got[L], hs[L + 1], rtol=0, atol=0)
    if which == "gpt2_tiny":  # GPT-2's last hidden_states entry has ln_f applied: it is not block 5's output
        last = len(h.get_blocks(model)) - 1
        assert not torch.allclose(h.residual_at_layers(model, ids, torch.ones_like(ids), [last])[last], hs[last + 1])


def test_extraction_stops_after_the_deepest_layer(gpt2_tiny):
    model, tok = gpt2_tiny
    ran = []
    handles = [b.register_forward_hook(lambda m, a, o, i=i: ran.append(i)) for i, b in enumerate(h.get_blocks(model))]
    try:
        ids = torch.tensor([tok("hello world")["input_ids"]])
        h.residual_at_layers(model, ids, torch.ones_like(ids), [1])
    finally:
        for x in handles:
            x.remove()
    assert ran == [0, 1]


def test_gpt2_word_tokens_bos_and_padding(gpt2_tiny, concepts):
    model, tok = gpt2_tiny
    df = concepts[concepts.word.isin(["green", "2024", "worried"])].reset_index(drop=True)
    enc = h.encode_examples(tok, df.sentence.tolist(), list(zip(df.word_start, df.word_end)))
    green = [e for e, w in zip(enc, df.word) if w == "green"][0]
    assert green.ids[0] == tok.bos_token_id and green.special[0]  # BOS prepended, marked special
    assert [i for i, w in zip(green.ids, green.in_word) if w] == [4077]  # " green"
    check = h.word_token_check(tok, df)
    assert check.ok.all(), check[~check.ok]
    # batched + padded extraction equals one-sentence-at-a-time extraction
    a = h.extract_activations(model, tok, df, [0, 2], batch_size=7, progress=False)
    b = h.extract_activations(model, tok, df, [0, 2], batch_size=1, progress=False)
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
    handle = h.get_blocks(model)[2].mlp.act.register_forward_hook(lambda m, i, o: seen.setdefault("x", o))
    ids = torch.tensor([enc[0].ids])
    with torch.inference_mode():
        model(input_ids=ids)
    handle.remove()
    word_rows = torch.tensor(enc[0].in_word)
    torch.testing.assert_close(a["L2.mlp.mean"][0], seen["x"][0][word_rows].mean(0), atol=1e-5, rtol=1e-5)


def test_cache_is_keyed_written_atomically_and_verified(bundled, concepts, data_dir):
    spec, model, tok = bundled
    df = small_df(concepts)
    c1 = h.load_or_extract(spec, df, [0, 1], model_and_tokenizer=(model, tok))
    assert c1.folder.parent == data_dir / "activations" / spec.slug
    meta = json.loads((c1.folder / "meta.json").read_text())
    assert meta["key"] == c1.folder.name and meta["key_inputs"]["layers"] == [0, 1]
    # same inputs -> same folder, loaded, not recomputed
    c2 = h.load_or_extract(spec, df, [0, 1], model_and_tokenizer=(None, None))
    assert c2.folder == c1.folder
    torch.testing.assert_close(c2.tokens(1), c1.tokens(1))
    # any change of dataset or layers -> another key
    assert h.activation_key(spec, df.iloc[1:], [0, 1])[0] != meta["key"]
    assert h.activation_key(spec, df, [0, 2])[0] != meta["key"]
    # a truncated file is detected by its checksum and recomputed with a warning
    expected = c1.tokens(1).clone()
    del c1, c2
    f = h.activations_dir(spec) / meta["key"] / "tokens_L1.npy"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.warns(UserWarning, match="damaged"):
        c3 = h.load_or_extract(spec, df, [0, 1], model_and_tokenizer=(model, tok))
    torch.testing.assert_close(c3.tokens(1), expected)
    with pytest.raises(h.MonosemError, match="not in this cache"):
        c3.word(5)
    with pytest.raises(h.MonosemError, match="run notebooks/01"):
        h.load_activations(spec, df, [0, 3])


def test_interrupted_write_leaves_nothing_behind(tmp_path):
    target = tmp_path / "cache" / "key"
    with pytest.raises(RuntimeError):
        with h.atomic_dir(target) as tmp:
            (tmp / "half.safetensors").write_bytes(b"x")
            raise RuntimeError("killed")
    assert not target.exists() and list((tmp_path / "cache").iterdir()) == []
    # a temp folder left by a killed process is removed on the next run
    (tmp_path / "cache" / ".key.tmp-abc").mkdir()
    h.clean_stale_temp(tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []
