"""The SAE registry: one class per SAELens architecture name, built, described and re-built only through it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from monosem.config import MonosemError
from monosem.sae.base import SAE, TrainState
from monosem.sae.jumprelu import JumpReLUSAE
from monosem.sae.matryoshka import MatryoshkaBatchTopKSAE
from monosem.sae.registry import ARCHITECTURES, make_sae, sae_class, sae_class_for_cfg
from monosem.sae.standard import StandardSAE
from monosem.sae.topk import TopKSAE

ROOT = Path(__file__).resolve().parents[2]
D_IN, D_SAE = 6, 10
KWARGS = {"standard": {}, "topk": {"k": 3}, "jumprelu": {}, "matryoshka_batchtopk": {"k": 3, "matryoshka_widths": [2, 5, D_SAE]}}


def build(arch: str, apply_b_dec: bool = False, seed: int = 0) -> SAE:
    sae = make_sae(arch, D_IN, D_SAE, apply_b_dec, seed, **KWARGS[arch])
    if isinstance(sae, JumpReLUSAE):
        with torch.no_grad():
            sae.threshold.copy_(torch.rand(D_SAE, generator=torch.Generator().manual_seed(seed + 7)) * 0.3)
    return sae


def test_architectures_are_keyed_by_their_own_saelens_name():
    assert set(ARCHITECTURES) == {"standard", "topk", "jumprelu", "matryoshka_batchtopk"}
    assert ARCHITECTURES == {"standard": StandardSAE, "topk": TopKSAE, "jumprelu": JumpReLUSAE, "matryoshka_batchtopk": MatryoshkaBatchTopKSAE}
    for name, cls in ARCHITECTURES.items():
        assert cls.architecture == name and issubclass(cls, SAE)
        assert sae_class(name) is cls


def test_unknown_architecture_lists_the_supported_ones():
    with pytest.raises(MonosemError) as err:
        sae_class("nope")
    msg = str(err.value)
    assert "nope" in msg and all(name in msg for name in ARCHITECTURES), msg
    with pytest.raises(MonosemError, match="nope"):
        make_sae("nope", D_IN, D_SAE)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_make_sae_builds_each(arch):
    sae = build(arch, apply_b_dec=True)
    assert type(sae) is ARCHITECTURES[arch] and sae.architecture == arch
    assert (sae.d_in, sae.d_sae, sae.apply_b_dec_to_input) == (D_IN, D_SAE, True)
    f = sae.encode(torch.randn(4, D_IN))
    assert f.shape == (4, D_SAE) and (f >= 0).all()
    x_hat, f2 = sae(torch.randn(4, D_IN))
    assert x_hat.shape == (4, D_IN) and f2.shape == (4, D_SAE)


def test_make_sae_is_seeded():
    a, b, c = make_sae("standard", D_IN, D_SAE, seed=1), make_sae("standard", D_IN, D_SAE, seed=1), make_sae("standard", D_IN, D_SAE, seed=2)
    assert torch.equal(a.W_enc, b.W_enc) and not torch.equal(a.W_enc, c.W_enc)


def test_topk_needs_a_valid_k():
    with pytest.raises(MonosemError, match="k"):
        make_sae("topk", D_IN, D_SAE)
    with pytest.raises(MonosemError, match="k"):
        make_sae("topk", D_IN, D_SAE, k=D_SAE + 1)
    assert (build("topk").encode(torch.randn(5, D_IN)) > 0).sum(1).max() <= 3


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("apply_b_dec", [False, True])
def test_cfg_round_trip(arch, apply_b_dec):
    sae = build(arch, apply_b_dec)
    cfg = sae.to_cfg()
    assert cfg["architecture"] == arch and (cfg["d_in"], cfg["d_sae"], cfg["apply_b_dec_to_input"]) == (D_IN, D_SAE, apply_b_dec)
    if arch in ("topk", "matryoshka_batchtopk"):
        assert cfg["k"] == 3
    if arch == "matryoshka_batchtopk":
        assert cfg["matryoshka_widths"] == [2, 5, D_SAE]
    again = sae_class(cfg["architecture"]).from_cfg(cfg)
    assert type(again) is type(sae) and again.to_cfg() == cfg
    again.load_state_dict(sae.state_dict())
    x = torch.randn(7, D_IN)
    torch.testing.assert_close(again.encode(x), sae.encode(x), rtol=0, atol=0)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_tensor_shapes_match_the_parameters(arch):
    cls = ARCHITECTURES[arch]
    shapes = cls.tensor_shapes(D_IN, D_SAE)
    expected = {"W_enc": (D_IN, D_SAE), "b_enc": (D_SAE,), "W_dec": (D_SAE, D_IN), "b_dec": (D_IN,)}
    if arch in ("jumprelu", "matryoshka_batchtopk"):
        expected["threshold"] = (D_SAE,)
    assert shapes == expected
    sae = build(arch)
    assert {name: tuple(p.shape) for name, p in sae.named_parameters()} == shapes


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_fresh_like_keeps_architecture_and_shape(arch):
    sae = build(arch, apply_b_dec=True, seed=3)
    fresh = sae.fresh_like(seed=11)
    assert type(fresh) is type(sae) and fresh.to_cfg() == sae.to_cfg()
    assert not fresh.training
    assert not torch.equal(fresh.W_enc, sae.W_enc), "fresh_like must re-initialise the weights"
    again = sae.fresh_like(seed=11)
    assert torch.equal(fresh.W_enc, again.W_enc), "fresh_like is seeded"
    if isinstance(sae, JumpReLUSAE):
        assert isinstance(fresh, JumpReLUSAE)
        assert sae.threshold.abs().sum() > 0
        assert torch.equal(fresh.threshold, sae.threshold)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("apply_b_dec", [False, True])
def test_encode_features_equals_encode_columns(arch, apply_b_dec):
    torch.manual_seed(0)
    sae = build(arch, apply_b_dec, seed=5)
    with torch.no_grad():  # random, not tied, weights and biases of some size
        for p in (sae.W_enc, sae.b_enc, sae.b_dec):
            p.copy_(torch.randn_like(p) * 0.5)
    x = torch.randn(32, D_IN)
    feats = torch.tensor([7, 0, 3, 3, 9])
    full = sae.encode(x)
    assert (full[:, feats] > 0).any(), "the test needs some active features"
    torch.testing.assert_close(sae.encode_features(x, feats), full[:, feats], rtol=1e-5, atol=1e-5)


def test_jumprelu_cannot_be_trained():
    sae = build("jumprelu")
    state = TrainState(0, 10, {}, torch.zeros(D_SAE))
    with pytest.raises(MonosemError, match="jumprelu"):
        sae.training_loss(torch.randn(4, D_IN), state)


ARCH_SWITCH = re.compile(r"""(architecture\s*[!=]=|[!=]=\s*["'](standard|topk|jumprelu|matryoshka_batchtopk)["']|["'](standard|topk|jumprelu|matryoshka_batchtopk)["']\s*[!=]=)""")


def test_no_architecture_switch_outside_monosem_sae():
    offenders = []
    for path in sorted((ROOT / "monosem").rglob("*.py")):
        if (ROOT / "monosem" / "sae") in path.parents:
            continue
        for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if ARCH_SWITCH.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{no}: {line.strip()}")
    assert not offenders, "switch on the SAE architecture name outside monosem/sae/ (use the SAE class's hooks):\n" + "\n".join(offenders)


def test_the_switch_pattern_finds_switches():
    assert ARCH_SWITCH.search('if cfg["architecture"] == "jumprelu":')
    assert ARCH_SWITCH.search("if preset == 'topk':")
    assert ARCH_SWITCH.search('if arch != "matryoshka_batchtopk":')
    assert ARCH_SWITCH.search('arch = "standard" if x else y') is None


def test_matryoshka_needs_valid_k_and_widths():
    with pytest.raises(MonosemError, match="k"):
        make_sae("matryoshka_batchtopk", D_IN, D_SAE, matryoshka_widths=[5, D_SAE])
    with pytest.raises(MonosemError, match="strictly increasing"):
        make_sae("matryoshka_batchtopk", D_IN, D_SAE, k=2, matryoshka_widths=[5, 5, D_SAE])
    with pytest.raises(MonosemError, match="integer matryoshka_widths"):
        sae_class("matryoshka_batchtopk").from_cfg({"d_in": D_IN, "d_sae": D_SAE, "k": 2})
    sae = make_sae("matryoshka_batchtopk", D_IN, D_SAE, k=2, matryoshka_widths=[5])
    assert isinstance(sae, MatryoshkaBatchTopKSAE) and sae.widths == (5, D_SAE), "the whole dictionary is the last level, as in SAELens"
    assert not sae.threshold.requires_grad, "the threshold follows the kept activations, not the optimiser"


def test_the_class_of_a_cfg_json_follows_its_training_architecture():
    saved_as_jumprelu = {"architecture": "jumprelu", "metadata": {"training_architecture": "matryoshka_batchtopk"}}
    assert sae_class_for_cfg(saved_as_jumprelu) is MatryoshkaBatchTopKSAE
    assert sae_class_for_cfg({"architecture": "matryoshka_batchtopk"}) is MatryoshkaBatchTopKSAE  # a SAELens training checkpoint
    # a training architecture this package does not know (plain BatchTopK) or that saves otherwise: the declared architecture
    assert sae_class_for_cfg({"architecture": "jumprelu", "metadata": {"training_architecture": "batchtopk"}}) is JumpReLUSAE
    assert sae_class_for_cfg({"architecture": "topk", "metadata": {"training_architecture": "matryoshka_batchtopk"}}) is TopKSAE
    assert sae_class_for_cfg({"architecture": "standard", "metadata": None}) is StandardSAE


def test_l0_checks_know_what_each_architecture_allows():
    topk, mat = build("topk"), build("matryoshka_batchtopk")
    assert topk.l0_problem(3.0) is None and topk.l0_problem(2.2) is None, "TopK may keep fewer than k (non-positive pre-activations)"
    assert "at most k = 3" in (topk.l0_problem(3.5) or "")
    assert mat.l0_problem(2.0) is None and mat.l0_problem(4.5) is None, "BatchTopK keeps k per token on average, not exactly"
    assert mat.l0_problem(0.5) and mat.l0_problem(13.0)
    assert build("standard").l0_problem(9.0) is None
