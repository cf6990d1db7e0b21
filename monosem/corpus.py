"""The background corpus for SAE training: general English text, offline (pydoc) or from the hub, and its held-out split."""

from __future__ import annotations

import re
import warnings

from monosem.config import MonosemError


def background_texts(n_tokens: int, source: str = "pydoc", words_per_text: int = 48) -> list[str]:
    """English prose for SAE training, about ``n_tokens`` tokens in texts of ~``words_per_text`` words.

    ``source`` 'pydoc' (offline): the prose paragraphs of Python's own documentation
    (``pydoc_data.topics``, shipped with every CPython), code blocks and headings left out.
    ``source`` 'hf:<dataset>' (online): the ``text`` field of a Hugging Face dataset, streamed with ``datasets``.
    """
    budget = int(n_tokens * 0.75)  # ~0.75 words per token for English prose
    if budget <= 0:
        return []
    if source == "pydoc":
        import pydoc_data.topics

        paragraphs = []
        for name in sorted(pydoc_data.topics.topics):
            for para in re.split(r"\n\s*\n", pydoc_data.topics.topics[name]):
                lines = para.split("\n")
                if any(line.startswith(" ") for line in lines) or re.fullmatch(r"[*=\-^\s]+", lines[-1]) or len(para.split()) < 8:
                    continue  # code block, heading or fragment
                paragraphs.append(" ".join(line.strip() for line in lines))
    elif source.startswith("hf:"):
        try:
            import datasets
        except ImportError:
            raise MonosemError("an online background corpus needs `pip install datasets`") from None
        stream = datasets.load_dataset(source[3:], split="train", streaming=True)
        paragraphs = (row["text"] for row in stream)
    else:
        raise MonosemError(f"unknown background source {source!r}; use 'pydoc' (offline) or 'hf:<dataset name>'")
    texts, n_words = [], 0
    for para in paragraphs:
        words = para.split()
        for i in range(0, len(words), words_per_text):
            chunk = words[i : i + words_per_text]
            if len(chunk) < 8:
                continue
            texts.append(" ".join(chunk))
            n_words += len(chunk)
            if n_words >= budget:
                return texts
    if n_words < budget:
        warnings.warn(f"background corpus {source!r} has only ~{int(n_words / 0.75)} tokens, fewer than the {n_tokens} asked for", stacklevel=2)
    return texts


def background_split(n_tokens: int, source: str = "pydoc", n_eval: int = 32) -> tuple[list[str], list[str]]:
    """Background texts for SAE training and ``n_eval`` held-out texts (never trained on) for the fidelity check."""
    texts = background_texts(n_tokens, source)
    if len(texts) <= n_eval:
        raise MonosemError(f"the background corpus gave {len(texts)} texts, not more than the {n_eval} held out; raise MONOSEM_BACKGROUND_TOKENS")
    return texts[:-n_eval], texts[-n_eval:]

