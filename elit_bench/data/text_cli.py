"""`elit-bench encode-text`: a prompt list -> text-encoder outputs, the prompt table of a text-to-image model."""

from __future__ import annotations

import json
from pathlib import Path

from elit_bench.errors import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "encode-text", help="prompts -> text-encoder outputs (an MM-DiT's prompt table)",
        description="Encode prompts with the built-in tiny encoder or a local Hugging Face text encoder; "
                    "prompt i is label i of a text-to-image data set, the empty prompt is added last.")
    parser.add_argument("prompts", help="a .txt file (one prompt per line) or a .json list of strings")
    parser.add_argument("--encoder", default=None,
                        help="tiny (built in, the default) or a local Hugging Face model directory")
    parser.add_argument("--out", required=True, help="new directory for the encoded prompts")
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="tokens per prompt (default: the longest prompt's); longer prompts are truncated "
                             "by a Hugging Face encoder and an error for tiny")
    parser.add_argument("--batch", type=int, default=64, help="prompts per encoder batch")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--dtype", choices=("float32", "float16"), default=None,
                        help="stored dtype (default: float32 for tiny, float16 for a Hugging Face encoder)")
    parser.set_defaults(func=_encode_text)


def read_prompts(path) -> list[str]:
    """The prompts of a .txt file (one a line, surrounding spaces dropped) or a .json list of strings."""
    from elit_bench.checkpoint import read_text

    path = Path(path).expanduser()
    if path.suffix not in (".txt", ".json"):
        raise UserError(f"prompt file {str(path)!r} must be .txt (one prompt per line) or .json (a list of strings)")
    if not path.is_file():
        raise UserError(f"prompt file {str(path)!r} does not exist")
    text = read_text(path, "prompt file")
    if path.suffix == ".txt":
        prompts = [line.strip() for line in text.splitlines()]
        blank = [i + 1 for i, p in enumerate(prompts) if not p]
        if blank:
            raise UserError(f"line {blank[0]} of {str(path)!r} is blank; give one prompt per line (the empty prompt "
                            "is added last by itself)")
        return prompts
    try:
        prompts = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{str(path)!r} is not valid JSON ({exc})") from exc
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        raise UserError(f"{str(path)!r} must hold a JSON list of strings")
    return prompts


def _encode_text(args) -> int:
    from elit_bench.data.text import TINY, check_out, encode_prompts, save_prompts

    prompts = read_prompts(args.prompts)
    check_out(args.out)  # before encoding: a bad --out costs nothing
    encoded = encode_prompts(prompts, args.encoder or TINY, max_tokens=args.max_tokens, batch=args.batch,
                             device=args.device)
    out = save_prompts(args.out, encoded, dtype=args.dtype)
    rows, length, dim = encoded.tokens.shape
    print(f"wrote {rows - 1} prompts and the empty one ({length} tokens of width {dim}, encoder "
          f"{encoded.encoder['name']}) to {out}")
    return 0
