"""Text prompts -> text-encoder outputs: the prompt table an MM-DiT's prompt ids index.

A text-to-image data set labels each sample with a prompt id; the model looks the id up in its prompt
table (`MMDiT.set_prompts(tokens, mask)`): tokens (P + 1, T, d) of text-encoder outputs and mask (P + 1, T)
bool (True: a real token), shorter prompts padded at the end, and the empty prompt last (row P), which is the
null condition of label dropout and of CFG. `encode_prompts` builds that table with one of two encoders:

- `tiny` (built in; no weights; the same numbers on every machine): a prompt's words are
  `re.findall(r"\\d|[a-z]+", prompt.lower())` ("two 4s" -> two, 4, s). Word i's vector is N(0, 1) of
  width TINY_DIM drawn from a torch.Generator seeded with the word's SHA-256, plus a sinusoidal code of i,
  so word order is in the vectors and not only in the model's RoPE ("a 7 left of a 2" and "a 2 left of a 7"
  differ). T is `max_tokens`, or the longest prompt's word count; a longer prompt is an error. The empty
  prompt is all padding (zero vectors, mask False), as in the model's default table.
- a local Hugging Face model directory: its tokenizer and model (`AutoModel`; the encoder of an
  encoder-decoder such as T5), loaded with `local_files_only`. Tokens are the last hidden state (zero at
  padding), mask the attention mask, padded at the end to `max_tokens` or the longest prompt. With
  `max_tokens` longer prompts are truncated (a warning counts them); without it a prompt longer than the
  tokenizer's limit is an error. The empty prompt is the encoded empty string (Qwen-Image's negative prompt).

On disk (`save_prompts`, `elit-bench encode-text`), like the image latents: a directory written under a
temporary name and renamed when complete::

    DIR/meta.json    {"format": "elit-text", "version": 1, "prompts": [...], "num_prompts": P,
                      "max_tokens": T, "dim": d, "dtype": "float32" or "float16", "encoder": {...}}
    DIR/tokens.npy   (P + 1, T, d) float32 (tiny) or float16 (Hugging Face encoders, by default)
    DIR/mask.npy     (P + 1, T) bool

"encoder" records where the table came from: name ("tiny" or the directory), kind, max_tokens, dim, and for
a directory the SHA-256 of each of its files. A latent data set whose meta.json has "text" (this directory,
relative to the data set or absolute) is a text-to-image set: its class ids are prompt ids
(`prompts_for_latents`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from elit_bench.checkpoint import check_output, file_sha256
from elit_bench.errors import UserError, choices_error

log = logging.getLogger(__name__)

TINY = "tiny"  # the built-in encoder's name
TINY_DIM = 64  # its width
FORMAT, VERSION = "elit-text", 1
META_FILE = "meta.json"
DTYPES = ("float32", "float16")
REQUIRED_KEYS = ("prompts", "num_prompts", "max_tokens", "dim", "dtype", "encoder")
WORDS = re.compile(r"\d|[a-z]+")
NO_LIMIT = 1_000_000  # tokenizers without a length limit report a huge model_max_length
RERUN = "re-run `elit-bench encode-text` to rebuild it"


@dataclass(frozen=True)
class EncodedPrompts:
    """P prompts and their table: tokens (P + 1, T, d) float32, mask (P + 1, T) bool; row P is the empty prompt
    (not listed in `prompts`). `encoder`: provenance (name, kind, max_tokens, dim, ...)."""

    prompts: tuple[str, ...]
    tokens: torch.Tensor
    mask: torch.Tensor
    encoder: dict

    def __post_init__(self):
        rows = len(self.prompts) + 1
        if self.tokens.ndim != 3 or self.tokens.shape[0] != rows or self.mask.shape != self.tokens.shape[:2] \
                or self.mask.dtype != torch.bool:
            raise UserError(f"{rows - 1} prompts need tokens ({rows}, T, d) and a bool mask ({rows}, T), the empty "
                            f"prompt last; got tokens {tuple(self.tokens.shape)} and {self.mask.dtype} mask "
                            f"{tuple(self.mask.shape)}")


def encode_prompts(prompts, encoder: str = TINY, max_tokens: int | None = None, batch: int = 64,
                   device=None) -> EncodedPrompts:
    """Encode `prompts` (P strings, none empty, no repeats) and the empty prompt with `encoder` ("tiny" or a local
    Hugging Face model directory). `batch` and `device` (default: cuda when available) serve the latter."""
    prompts = tuple(prompts)
    if not prompts:
        raise UserError("no prompts given: give at least one prompt")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or not prompt.strip():
            raise UserError(f"prompt {i} is {prompt!r}: give non-empty text (the empty prompt is added last, "
                            "as the null condition)")
    first = {}
    for i, prompt in enumerate(prompts):
        if first.setdefault(prompt, i) != i:
            raise UserError(f"prompt {prompt!r} is given twice (prompts {first[prompt]} and {i}): each prompt id "
                            "needs its own text")
    if max_tokens is not None and max_tokens < 1:
        raise UserError(f"max_tokens must be >= 1, got {max_tokens}")
    if batch < 1:
        raise UserError(f"batch must be >= 1, got {batch}")
    if encoder == TINY:
        tokens, mask, info = _encode_tiny(prompts, max_tokens)
    else:
        tokens, mask, info = _encode_pretrained(prompts, encoder, max_tokens, batch, device)
    info = {**info, "max_tokens": tokens.shape[1], "dim": tokens.shape[2]}
    return EncodedPrompts(prompts, tokens, mask, info)


# -- the built-in encoder

def words(prompt: str) -> list[str]:
    """The tiny encoder's words: single digits and runs of letters, lower-cased ("two 4s" -> two, 4, s)."""
    return WORDS.findall(prompt.lower())


def word_vector(word: str) -> torch.Tensor:
    """(TINY_DIM,) N(0, 1), seeded by the word's SHA-256 (Python's hash() differs between processes)."""
    seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little") >> 1  # 63 bits
    return torch.randn(TINY_DIM, generator=torch.Generator().manual_seed(seed))


def position_code(length: int) -> torch.Tensor:
    """(length, TINY_DIM) sinusoidal code of the word index: sin on the first half, cos on the second."""
    half = TINY_DIM // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)
    angles = torch.arange(length, dtype=torch.float64)[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def _encode_tiny(prompts, max_tokens):
    split = [words(p) for p in prompts]
    for prompt, ws in zip(prompts, split):
        if not ws:
            raise UserError(f"prompt {prompt!r} has no words the tiny encoder reads (letters or digits)")
    length = max_tokens or max(map(len, split))
    for prompt, ws in zip(prompts, split):
        if len(ws) > length:
            raise UserError(f"prompt {prompt!r} has {len(ws)} words, more than max_tokens={length}; shorten it "
                            "or raise max_tokens")
    tokens = torch.zeros(len(prompts) + 1, length, TINY_DIM)
    mask = torch.zeros(len(prompts) + 1, length, dtype=torch.bool)
    vectors, positions = {}, position_code(length)
    for row, ws in enumerate(split):
        for i, word in enumerate(ws):
            if word not in vectors:
                vectors[word] = word_vector(word)
            tokens[row, i] = vectors[word] + positions[i]
        mask[row, : len(ws)] = True
    return tokens, mask, {"name": TINY, "kind": "builtin"}


# -- any local Hugging Face text encoder

def _encode_pretrained(prompts, encoder, max_tokens, batch, device):
    from transformers import AutoModel, AutoTokenizer

    path = Path(encoder).expanduser().resolve()
    expected = f"give {TINY!r} or a local Hugging Face model directory (config.json, weights and tokenizer files)"
    if not path.is_dir():
        raise UserError(f"text encoder {str(path)!r} is not a directory; {expected}")
    if not (path / "config.json").is_file():
        raise UserError(f"text encoder directory {str(path)!r} has no config.json; {expected}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load a text encoder from {str(path)!r} ({' '.join(str(exc).split())}); "
                        f"{expected}") from exc
    if model.config.is_encoder_decoder:  # T5 and the like: only the encoder reads the prompt
        model = model.get_encoder()
    model = model.to(device).eval()
    tokenizer.padding_side = "right"  # real tokens first, as the prompt table pads
    if tokenizer.pad_token is None:  # decoder-only tokenizers: padding is masked, so any token serves
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.pad_token is None:
        raise UserError(f"the tokenizer of {str(path)!r} has neither a padding nor an end-of-text token")

    texts = [*prompts, ""]
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    limit = tokenizer.model_max_length if tokenizer.model_max_length < NO_LIMIT else None
    if max_tokens is not None and limit is not None and max_tokens > limit:
        raise UserError(f"max_tokens={max_tokens} is more than the tokenizer of {str(path)!r} takes ({limit})")
    if max_tokens is None and limit is not None:
        for prompt, n in zip(prompts, lengths):
            if n > limit:
                raise UserError(f"prompt {prompt!r} is {n} tokens, more than the encoder takes ({limit}); shorten "
                                f"it, or give max_tokens (--max-tokens) to truncate the prompts")
    length = max_tokens or max(lengths)
    truncated = sum(n > length for n in lengths)
    if truncated:
        log.warning("%d of %d prompts are longer than %d tokens and were truncated", truncated, len(prompts), length)
    tokens, mask = [], []
    with torch.no_grad():
        for start in range(0, len(texts), batch):
            enc = tokenizer(texts[start: start + batch], padding="max_length", max_length=length,
                            truncation=max_tokens is not None, return_tensors="pt")
            ids, keep = enc["input_ids"].to(device), enc["attention_mask"].to(device)
            hidden = model(input_ids=ids, attention_mask=keep).last_hidden_state.float()
            tokens.append((hidden * keep[..., None]).cpu())  # zero at padding, as in the model's table
            mask.append(keep.bool().cpu())
    files = sorted(f for f in path.iterdir() if f.is_file() and not f.name.startswith("."))
    info = {"name": str(path), "kind": "huggingface", "model_type": model.config.model_type,
            "sha256": {f.name: file_sha256(f) for f in files}, "truncated": truncated}
    return torch.cat(tokens), torch.cat(mask), info


# -- storage

def check_out(path) -> Path:
    """A new (or empty) directory for `save_prompts`, checked before any work: UserError otherwise."""
    out = check_output(path, "output").resolve()
    if out.exists() and any(out.iterdir()):
        raise UserError(f"output {str(out)!r} already exists and is not empty; choose a new --out")
    return out


def save_prompts(path, encoded: EncodedPrompts, dtype: str | None = None) -> Path:
    """Write `encoded` to the new directory `path` (layout in the module docstring) and return it. dtype:
    "float32" or "float16"; default float32 for the tiny encoder, float16 for the others."""
    dtype = dtype or ("float32" if encoded.encoder.get("name") == TINY else "float16")
    if dtype not in DTYPES:
        raise choices_error("dtype", dtype, DTYPES)
    out = check_out(path)
    tokens = encoded.tokens.float().numpy().astype(dtype)
    if not np.isfinite(tokens).all():
        raise UserError(f"the text-encoder outputs do not fit {dtype} (largest magnitude "
                        f"{encoded.tokens.abs().max().item():.3g}); store them as float32 (--dtype float32)")
    meta = {"format": FORMAT, "version": VERSION, "prompts": list(encoded.prompts),
            "num_prompts": len(encoded.prompts), "max_tokens": tokens.shape[1], "dim": tokens.shape[2],
            "dtype": dtype, "encoder": encoded.encoder}
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted writer that had this process id
    tmp.mkdir(parents=True)
    try:
        np.save(tmp / "tokens.npy", tokens)
        np.save(tmp / "mask.npy", encoded.mask.numpy())
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_meta(path) -> dict:
    """Validated meta.json of the encode-text directory `path`."""
    path = Path(path).expanduser()
    meta_path = path / META_FILE
    if not path.is_dir():
        raise UserError(f"prompt directory {str(path)!r} does not exist; write one with `elit-bench encode-text`")
    if not meta_path.is_file():
        raise UserError(f"{str(path)!r} is not an encode-text directory: {META_FILE} is missing; {RERUN}")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {meta_path} ({exc}); {RERUN}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise UserError(f"{meta_path} is not an {FORMAT} v{VERSION} metadata file; {RERUN}")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise UserError(f"{meta_path} lacks {', '.join(missing)}; {RERUN}")
    if meta["dtype"] not in DTYPES or len(meta["prompts"]) != meta["num_prompts"]:
        raise UserError(f"{meta_path} is inconsistent (dtype {meta['dtype']!r}, {len(meta['prompts'])} prompts for "
                        f"num_prompts {meta['num_prompts']}); {RERUN}")
    return meta


def load_prompts(path) -> EncodedPrompts:
    """The prompts and table written by `save_prompts` (tokens as float32), checked against meta.json."""
    path = Path(path).expanduser().resolve()
    meta = read_meta(path)
    rows, length, dim = meta["num_prompts"] + 1, meta["max_tokens"], meta["dim"]
    expected = {"tokens": ((rows, length, dim), meta["dtype"]), "mask": ((rows, length), "bool")}
    arrays = {}
    for name, (shape, dtype) in expected.items():
        file = path / f"{name}.npy"
        try:
            arrays[name] = np.load(file, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise UserError(f"cannot read {file} ({' '.join(str(exc).split())}); {RERUN}") from exc
        if arrays[name].shape != shape or str(arrays[name].dtype) != dtype:
            raise UserError(f"{file} holds {arrays[name].dtype} {arrays[name].shape}; its meta.json says {dtype} "
                            f"{shape}; {RERUN}")
    return EncodedPrompts(tuple(meta["prompts"]), torch.from_numpy(arrays["tokens"].astype(np.float32)),
                          torch.from_numpy(arrays["mask"]), meta["encoder"])


def prompts_for_latents(path, meta: dict) -> str:
    """The absolute path of the encode-text directory a latent data set's meta.json names under "text" (relative
    to the data set directory `path`, or absolute), checked to hold one prompt per class."""
    if not isinstance(meta["text"], str):
        raise UserError(f"{Path(path) / META_FILE}: \"text\" must be the path of an `elit-bench encode-text` "
                        f"directory, got {meta['text']!r}")
    text = (Path(path) / Path(meta["text"]).expanduser()).resolve()
    prompts = read_meta(text)["num_prompts"]
    if prompts != meta["num_classes"]:
        raise UserError(f"latent data set {str(path)!r} has {meta['num_classes']} classes but its prompts {str(text)!r} "
                        f"are {prompts}: its labels are prompt ids, so encode its {meta['num_classes']} prompts")
    return str(text)
