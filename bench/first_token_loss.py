"""Which token to put at position 0 of a causal LM whose tokenizer adds none: next-token loss with each candidate.

    python bench/first_token_loss.py                 # SmolLM2-135M-Instruct (the offline default), 60 WordNet sentences (a minute or two)
    python bench/first_token_loss.py --model gpt2-medium --texts 500

Prints the mean next-token loss (nats per token) over the texts' own tokens, scored from their second token on
(the first one has no context without a prefix), with no prefix, with the tokenizer's declared BOS and with the
document separator <|endoftext|> (what monosem.layouts.first_token_id chooses). Lower is a more natural start.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from monosem.config import RunConfig
from monosem.corpus import WORDNET_DIRS
from monosem.fidelity import lm_logits
from monosem.layouts import first_token_id
from monosem.model import load_model, resolve_model


def wordnet_sentences(n: int) -> list[str]:
    """The first ``n`` example sentences of WordNet's noun glosses (quoted parts after ';')."""
    for folder in WORDNET_DIRS:
        path = Path(folder) / "data.noun"
        if path.is_file():
            out = []
            for line in path.read_text(errors="ignore").splitlines():
                if "|" in line and '"' in line:
                    out += [q.strip() for q in line.split("|", 1)[1].split('"')[1::2] if len(q.split()) >= 5]
                if len(out) >= n:
                    return out[:n]
    raise SystemExit("WordNet is not installed: run make setup (Debian's wordnet-base)")


@torch.inference_mode()
def mean_loss(model, texts_ids: list[list[int]], prefix: list[int]) -> float:
    """Mean next-token loss over every text's tokens from its second on, with ``prefix`` before each text."""
    total, count = 0.0, 0
    for ids in texts_ids:
        x = torch.tensor([prefix + ids])
        logits = lm_logits(model, model(input_ids=x).last_hidden_state)[0]  # [t, vocab]
        start = len(prefix)  # predict ids[1:] from the positions before them
        logp = torch.log_softmax(logits[start : start + len(ids) - 1].float(), -1)
        total -= logp.gather(1, torch.tensor(ids[1:])[:, None]).sum().item()
        count += len(ids) - 1
    return total / count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="as MODEL of make run (default: the offline default)")
    ap.add_argument("--texts", type=int, default=60)
    args = ap.parse_args()
    spec = resolve_model(args.model, True, RunConfig.from_env().data_path / "models")
    model, tok = load_model(spec)
    texts = [tok(t, add_special_tokens=False)["input_ids"] for t in wordnet_sentences(args.texts)]
    candidates = {"no prefix": [], f"declared BOS {tok.bos_token!r}": [tok.bos_token_id] if tok.bos_token_id is not None else None}
    chosen = first_token_id(tok)
    if chosen is not None:
        candidates[f"chosen {tok.convert_ids_to_tokens(chosen)!r}"] = [chosen]
    print(f"{spec.used}: mean next-token loss over {len(texts)} WordNet sentences ({sum(len(t) - 1 for t in texts):,} scored tokens)")
    for name, prefix in candidates.items():
        if prefix is not None:
            print(f"  {name:40s} {mean_loss(model, texts, prefix):.3f} nats/token")


if __name__ == "__main__":
    main()
