"""Run configuration: ``RunConfig``, the one frozen dataclass that owns every setting, and ``MonosemError``.

Each field carries its default, its environment variable, a one-line doc and a validator.
``RunConfig.from_env(**overrides)`` is the only place in the package that reads ``os.environ``;
everything else receives the config (or values taken from it) as arguments.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CODE_VERSION = "6"  # bump when a change alters cached tensors or trained SAEs
DEFAULT_MODEL = "gpt2-medium"
POOLINGS: tuple[str, ...] = ("mean", "last", "sentence")  # word-token mean, word last token, sentence mean
TOKEN_DTYPES: tuple[str, ...] = ("float32", "float16")
PRESET_NAMES: tuple[str, ...] = ("reference", "l1", "topk", "matryoshka")  # the trainable recipes of monosem.sae.presets
DEFAULT_PRESETS: tuple[str, ...] = ("reference", "topk")  # make run's: the reference study's and the analysed one (with its seeds: make run stays under 10 min)
EXTERNAL_PRESET = "external"  # SAEs imported from elsewhere (MONOSEM_SAE_SOURCE)
AUTO_PRESET = "auto"  # the analysed preset: topk when trained, else matryoshka, l1, reference (never chosen by its outcome)
ANALYSED_ORDER: tuple[str, ...] = ("topk", "matryoshka", "l1", "reference")


def analysed_preset(presets: tuple[str, ...] | list[str]) -> str:
    """The preset the figures and the headline describe when none is set: TopK when trained (its L0 is fixed by k, so
    nulls of the same L0 exist), else the first trained of ``ANALYSED_ORDER``; fixed in advance, never chosen by the outcome."""
    return next((p for p in ANALYSED_ORDER if p in presets), presets[0])
RENAMED_VARIABLES = {"MONOSEM_SAE_STEPS": "training length is set in tokens per SAE, MONOSEM_SAE_TOKENS (steps = tokens / MONOSEM_SAE_BATCH)"}


class MonosemError(ValueError):
    """A problem with the user's input or files; the message says what to do."""


class _Invalid(ValueError):
    """Raised by a validator; ``RunConfig`` turns it into a MonosemError naming the variable."""


# -- parsers (environment text -> value) and validators (value -> normalised value) ---------------


def parse_layers(text: str) -> tuple[int, ...]:
    """'0,1,2,3' or '0-3' -> (0, 1, 2, 3)."""
    text = text.strip()
    if re.fullmatch(r"\d+\s*-\s*\d+", text):
        lo, hi = (int(t) for t in text.split("-"))
        if hi < lo:
            raise _Invalid(f"the range {text!r} runs backwards; write it low-high, e.g. {hi}-{lo}")
        return tuple(range(lo, hi + 1))
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise _Invalid("layers must look like '0,1,2,3' or '0-3'") from None


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise _Invalid("use 1/0, true/false, yes/no or on/off")


def _parse_names(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _int(lo: int, hi: int | None = None) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"must be a whole number, got {value!r}")
        if value < lo or (hi is not None and value > hi):
            raise _Invalid(f"must be {f'>= {lo}' if hi is None else f'in {lo}..{hi}'}, got {value}")
        return value

    return check


def _float(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise _Invalid(f"must be a number, got {value!r}")
        if value < lo or value > hi or (lo_open and value == lo) or (hi_open and value == hi):
            raise _Invalid(f"must lie in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}, got {value}")
        return float(value)

    return check


def _one_of(allowed: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in allowed:
            raise _Invalid(f"{value!r} is not allowed; use one of {', '.join(allowed)}")
        return value

    return check


def _layers(value: Any) -> tuple[int, ...]:
    layers = tuple(value)
    if not layers:
        raise _Invalid("no layer given; e.g. 0,1,2,3 or 0-3")
    bad = [L for L in layers if isinstance(L, bool) or not isinstance(L, int) or L < 0]
    if bad:
        raise _Invalid(f"layers must be block indices >= 0, got {bad}")
    return tuple(sorted(set(layers)))


def _presets(value: Any) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else tuple(value)
    unknown = [n for n in names if n not in PRESET_NAMES]
    if not names or unknown:
        raise _Invalid(f"unknown SAE preset(s) {unknown or '(none given)'}; use a comma-separated subset of {', '.join(PRESET_NAMES)}")
    return tuple(dict.fromkeys(names))


def _optional_text(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(f"must be non-empty text or unset, got {value!r}")
    return value.strip()


def _device(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"cpu|mps|cuda(:\d+)?", value):
        raise _Invalid(f"{value!r} is not a device; use cpu, cuda, cuda:N or mps (or leave unset to pick automatically)")
    import torch

    if value.startswith("cuda") and not torch.cuda.is_available():
        raise _Invalid(f"{value!r} was asked for but this machine has no CUDA GPU; unset it or use cpu")
    if value == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise _Invalid("'mps' was asked for but this machine has no Apple GPU; unset it or use cpu")
    return value


def _background(value: Any) -> str:
    if value in ("auto", "wordnet", "pydoc") or (isinstance(value, str) and value.startswith("hf:") and len(value) > 3):
        return value
    raise _Invalid(f"{value!r} is not a corpus; use 'auto', 'wordnet' (offline), 'pydoc' (Python's docs) or 'hf:<dataset name>' (online)")


def _massive_factor(value: float) -> float:
    if 0 < value <= 1:
        raise _Invalid(f"a factor of {value:g} would call half the tokens or more massive; use 0 (keep every token) or a factor above 1, e.g. 5")
    return value


def _optional_int(lo: int) -> Callable[[Any], int | None]:
    check = _int(lo)
    return lambda value: None if value is None else check(value)


def _optional_path(value: Any) -> Path | None:
    return None if value in (None, "") else Path(value).expanduser()


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"must be True or False, got {value!r}")
    return value


def setting(default: Any, env: str, doc: str, parse: Callable[[str], Any] = str, check: Callable[[Any], Any] = lambda v: v,
            allowed: str = "") -> Any:
    """A ``RunConfig`` field: default, environment variable, one-line doc, parser, validator and allowed values."""
    return field(default=default, metadata={"env": env, "doc": doc, "parse": parse, "check": check, "allowed": allowed})


@dataclass(frozen=True)
class RunConfig:
    """Every setting of a run. Build it with ``RunConfig.from_env(**overrides)``; it is validated on creation."""

    # model and data
    model: str | None = setting(None, "MONOSEM_MODEL", "hub name or local folder of the model, or smollm2 / minilm (shipped by PyPI packages); unset = gpt2-medium, "
                                "falling back offline to SmolLM2-135M-Instruct (else all-MiniLM-L6-v2)", check=_optional_text, allowed="hub name, folder, smollm2, minilm")
    layers: tuple[int, ...] = setting((0, 1, 2, 3), "MONOSEM_LAYERS", "residual stream after these blocks", parse_layers, _layers, "e.g. 0,1,2,3 or 0-3")
    concepts: Path | None = setting(None, "MONOSEM_CONCEPTS", "the concept dataset; unset = data/concepts.csv", Path, _optional_path, "a CSV file")
    replication_words: Path | None = setting(None, "MONOSEM_REPLICATION_WORDS", "the second word list the headline is replicated on (neutral frames, "
                                             "drawn from WordNet by scripts/make_wordlist2.py); unset = data/concepts_wordnet.csv", Path, _optional_path, "a CSV file")
    data_dir: Path | None = setting(None, "MONOSEM_DATA_DIR", "where caches, SAEs and results go; unset = data/", Path, _optional_path, "a folder")
    root: Path | None = setting(None, "MONOSEM_ROOT", "the repository root; unset = found from the working directory", Path, _optional_path, "a folder")
    # extraction (notebook 01)
    batch_size: int = setting(32, "MONOSEM_BATCH_SIZE", "sentences per forward pass", int, _int(1), ">= 1")
    device: str | None = setting(None, "MONOSEM_DEVICE", "torch device; unset = cuda, then mps, then cpu", str, _device, "cpu, cuda, cuda:N, mps")
    dtype: str = setting("float32", "MONOSEM_DTYPE", "storage of token activations", str, _one_of(TOKEN_DTYPES), ", ".join(TOKEN_DTYPES))
    background: str = setting("auto", "MONOSEM_BACKGROUND", "general-English corpus for SAE training; auto = hf:NeelNanda/pile-10k when online, else WordNet, else pydoc (with a banner)",
                              str, _background, "auto, wordnet, pydoc, hf:<dataset>")
    background_tokens: int = setting(40000, "MONOSEM_BACKGROUND_TOKENS", "corpus tokens whose activations are cached on disk (dashboards, SAE initialisation, baselines)",
                                     int, _int(1), ">= 1")
    n_eval_texts: int = setting(256, "MONOSEM_EVAL_TEXTS", "corpus texts held out from training: FVE, L0 and dead fraction are measured on them", int, _int(1), ">= 1")
    n_fidelity_texts: int | None = setting(None, "MONOSEM_FIDELITY_TEXTS", "held-out texts of the downstream fidelity check (the first of the held-out texts); "
                                           "unset = 32, or 8 for a model of more than 12 blocks (the check runs every block)", int, _optional_int(1), ">= 1 or unset")
    massive_factor: float = setting(5.0, "MONOSEM_MASSIVE_FACTOR", "a token whose residual norm exceeds this many times the layer's median (corpus sample) at any "
                                    "analysed layer is a massive activation: left out of SAE training and of fve_heldout (fve_heldout_all_tokens keeps it); 0 = keep every token",
                                    float, lambda v: _massive_factor(_float(0, 1e6)(v)), "0 or > 1")
    # SAE training (notebook 02)
    sae_presets: tuple[str, ...] = setting(DEFAULT_PRESETS, "MONOSEM_SAE_PRESETS", "SAE recipes to train (all four: reference,l1,topk,matryoshka)", _parse_names,
                                           _presets, ", ".join(PRESET_NAMES))
    sae_train_tokens: int | None = setting(None, "MONOSEM_SAE_TOKENS", "training tokens per SAE; unset = by model size and device (README, 'Training')", int,
                                           _optional_int(1), ">= 1 or unset")
    sae_batch: int | None = setting(None, "MONOSEM_SAE_BATCH", "tokens per optimiser step; unset = by device (1024 on the CPU, 4096 on a GPU)", int, _optional_int(1),
                                    ">= 1 or unset")
    sae_workers: int | None = setting(None, "MONOSEM_SAE_WORKERS", "threads that step the SAEs in parallel, each with its share of the cores; unset = 2 on the CPU, 1 on a GPU",
                                      int, _optional_int(1), ">= 1 or unset")
    sae_buffer_tokens: int = setting(32768, "MONOSEM_SAE_BUFFER", "tokens per layer in the shuffle buffer of the activation store (memory: tokens x d_model x 4 bytes x layers)",
                                     int, _int(1), ">= 1")
    sae_expansion: float = setting(4.0, "MONOSEM_SAE_EXPANSION", "d_sae / d_model of the l1, topk and matryoshka presets (8+ on a GPU is common)", float, _float(0, 1024, lo_open=True), "> 0")
    sae_k: int = setting(32, "MONOSEM_SAE_K", "active features per token of the topk preset (on average over a batch: matryoshka)", int, _int(1), ">= 1")
    seed: int = setting(0, "MONOSEM_SEED", "seed of initialisation, batch order, permutations and bootstrap", int, _int(0, 2**32 - 1), "0..2^32-1")
    # selectivity (notebooks 03-04)
    threshold: float = setting(0.6, "MONOSEM_THRESHOLD", "reference score above which a feature is called monosemantic", float, _float(0, 1), "[0, 1]")
    alpha: float = setting(0.05, "MONOSEM_ALPHA", "level of the confirmation test on held-out words (final label)", float, _float(0, 1, True, True), "(0, 1)")
    min_replication: float = setting(0.9, "MONOSEM_MIN_REPLICATION", "share of word splits that must confirm a unit's top category for the final label 'selective'",
                                     float, _float(0, 1, lo_open=True), "(0, 1]")
    pooling: str = setting("mean", "MONOSEM_POOLING", "word-level pooling of token activations", str, _one_of(POOLINGS), ", ".join(POOLINGS))
    sae_preset: str = setting(AUTO_PRESET, "MONOSEM_SAE_PRESET", "the SAE preset the figures, CSVs and dashboards describe; auto = topk when trained, "
                              "else the first trained of matryoshka, l1, reference (fixed in advance, never chosen by the outcome)", str,
                              _one_of(PRESET_NAMES + (EXTERNAL_PRESET, AUTO_PRESET)), ", ".join(PRESET_NAMES + (EXTERNAL_PRESET, AUTO_PRESET)))
    n_permutations: int = setting(1000, "MONOSEM_PERMUTATIONS", "word-label permutations of the causal test", int, _int(1), ">= 1")
    n_bootstrap: int = setting(1000, "MONOSEM_BOOTSTRAP", "bootstrap resamples of words", int, _int(1), ">= 1")
    n_bootstrap_paired: int = setting(200, "MONOSEM_BOOTSTRAP_PAIRED", "draws of the paired SAE-vs-neurons comparison (each recomputes every metric of both bases)",
                                      int, _int(1), ">= 1")
    n_probe_draws: int = setting(40, "MONOSEM_PROBE_DRAWS", "bootstrap draws of each probe's CI", int, _int(1), ">= 1")
    n_readout_texts: int = setting(16, "MONOSEM_READOUT_TEXTS", "held-out corpus texts of the causal concept readout (each cut at monosem.readout.READOUT_MAX_LENGTH tokens)", int, _int(1), ">= 1")
    n_readout_features: int = setting(4, "MONOSEM_READOUT_FEATURES", "top specific features per layer in the causal concept readout (each with a neuron and a "
                                      "random direction, ablated and steered)", int, _int(1), ">= 1")
    n_natural_texts: int = setting(128, "MONOSEM_NATURAL_TEXTS", "held-out corpus texts on which each unit's specificity on natural text is measured", int,
                                   _int(8), ">= 8")
    n_seeds: int = setting(3, "MONOSEM_SEEDS", "training seeds of the analysed preset (seed, seed+1, ...): the headline's spread over seeds; the other presets train once",
                           int, _int(1, 10), "1..10")
    n_splits: int = setting(20, "MONOSEM_SPLITS", "random half/half word splits: discovery on one half, confirmation on the other", int, _int(10), ">= 10")
    random_control: bool = setting(True, "MONOSEM_RANDOM_CONTROL", "run the same pipeline on the model's architecture with random weights (negative control)",
                                   _parse_bool, _bool, "0 or 1")
    control_steps: int = setting(300, "MONOSEM_CONTROL_STEPS", "optimiser steps (of 256 tokens) of the negative control's SAE (a reduced budget)", int, _int(1), ">= 1")
    sae_source: str | None = setting(None, "MONOSEM_SAE_SOURCE", "analyse SAEs made elsewhere: a SAELens-format folder or 'release:sae_id'",
                                     check=_optional_text, allowed="folder or release:sae_id")
    top_k: int = setting(8, "MONOSEM_TOP_K", "features per layer in Figure 2, Figure 3 and the dashboards", int, _int(1), ">= 1")
    save_figures: bool = setting(False, "MONOSEM_SAVE_FIGURES", "also write each figure as a standalone HTML file", _parse_bool, _bool, "0 or 1")
    hf_hub_offline: bool = setting(False, "HF_HUB_OFFLINE", "never contact the Hugging Face hub", _parse_bool, _bool, "0 or 1")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            try:
                object.__setattr__(self, f.name, f.metadata["check"](getattr(self, f.name)))
            except _Invalid as exc:
                raise MonosemError(f"{f.metadata['env']} ({f.name}) = {getattr(self, f.name)!r} is invalid: {exc}; allowed: {f.metadata['allowed']}") from None
        if self.sae_source is None and self.sae_preset not in self.sae_presets + (AUTO_PRESET,):
            raise MonosemError(f"MONOSEM_SAE_PRESET={self.sae_preset!r} is not among the trained presets MONOSEM_SAE_PRESETS={','.join(self.sae_presets)}; "
                               "add it there or pick one of them")

    def analysed(self) -> str:
        """The analysed preset: ``sae_preset``, or for ``auto`` ``analysed_preset(sae_presets)``."""
        return analysed_preset(self.sae_presets) if self.sae_preset == AUTO_PRESET else self.sae_preset

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> "RunConfig":
        """The config from defaults, then ``MONOSEM_*`` environment variables, then ``overrides`` (field names)."""
        env = os.environ if environ is None else environ
        for gone, instead in RENAMED_VARIABLES.items():
            if env.get(gone):
                raise MonosemError(f"environment variable {gone} is no longer read: {instead}; unset {gone}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - set(fields))
        if unknown:
            raise MonosemError(f"unknown setting(s) {unknown}; valid: {sorted(fields)}")
        values: dict[str, Any] = {}
        for name, f in fields.items():
            raw = env.get(f.metadata["env"])
            if name in overrides or raw is None or raw == "":
                continue
            try:
                values[name] = f.metadata["parse"](raw)
            except ValueError as exc:  # _Invalid is a ValueError too
                raise MonosemError(f"environment variable {f.metadata['env']}={raw!r} is invalid: {exc}; allowed: {f.metadata['allowed']}") from None
        return cls(**{**values, **overrides})

    def replace(self, **changes: Any) -> "RunConfig":
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    @property
    def model_asked(self) -> str:
        """The model name to resolve: ``model`` or the default gpt2-medium."""
        return self.model or DEFAULT_MODEL

    @property
    def root_dir(self) -> Path:
        """The repository root: ``root``, else the first parent of the cwd holding data/concepts.csv and helpers.py."""
        if self.root is not None:
            return self.root.resolve()
        here = Path.cwd().resolve()
        for folder in (here, *here.parents):
            if (folder / "data" / "concepts.csv").is_file() and (folder / "helpers.py").is_file():
                return folder
        return Path(__file__).resolve().parents[1]

    @property
    def data_path(self) -> Path:
        """Where caches and results go: ``data_dir``, else ``<root>/data``."""
        return (self.data_dir or self.root_dir / "data").resolve()

    @property
    def concepts_path(self) -> Path:
        """The concept dataset: ``concepts``, else ``<root>/data/concepts.csv``."""
        return self.concepts or self.root_dir / "data" / "concepts.csv"

    @property
    def replication_path(self) -> Path:
        """The second word list: ``replication_words``, else ``<root>/data/concepts_wordnet.csv``."""
        return self.replication_words or self.root_dir / "data" / "concepts_wordnet.csv"

    def settings(self, *names: str) -> list[dict[str, Any]]:
        """Rows (setting, value, environment variable, meaning) for ``names`` (all fields when none given)."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        bad = [n for n in names if n not in fields]
        if bad:
            raise MonosemError(f"unknown setting(s) {bad}; valid: {sorted(fields)}")
        return [{"setting": n, "value": _show(getattr(self, n)), "variable": fields[n].metadata["env"], "meaning": fields[n].metadata["doc"]}
                for n in (names or fields)]


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return "(unset)" if value is None else str(value)


def settings_table_markdown() -> str:
    """The README's table of settings, generated from ``RunConfig`` (a test checks that the README holds it)."""
    rows = ["| variable | setting | default | allowed | meaning |", "| --- | --- | --- | --- | --- |"]
    for f in dataclasses.fields(RunConfig):
        rows.append(f"| `{f.metadata['env']}` | `{f.name}` | `{_show(f.default)}` | {f.metadata['allowed']} | {f.metadata['doc']} |")
    return "\n".join(rows)
