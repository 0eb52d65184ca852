"""Compositional digits: a text-to-image set over the embedded digits, with prompts a detector can check.

In the spirit of GenEval (an object detector checks what each prompt asks),
every prompt places real digits in known cells of a square canvas, so the
digits classifier read cell by cell says whether a sample does what its
prompt says (`elit_bench.metrics.adherence`). The canvas is CANVAS px (32 by
default, any multiple of 4 works), a cell is half its side, and cells sit on
a quarter-side lattice:

    single    "a D"               D in the centre cell
    position  "a X left of a Y"   X in the left cell, Y in the right cell (both at mid-height)
              "a X above a Y"     X in the top cell, Y in the bottom cell (both at mid-width)
    counting  "two Ds"/"three Ds" D in 2 / 3 of the four corner cells; which ones is drawn per canvas

Prompt ids are positions in `PROMPTS` (50: 10 single, 20 position, 20
counting); id 50 is the empty prompt. Position pairs are X with (X + 3) mod 10
left of it and X with (X + 6) mod 10 below it, so no pair repeats a digit.
Training canvases (`compositional_dataset`) are PER_PROMPT per prompt, each a
fresh draw of train-split digits (`digits.load_digits_split`) rendered at the
cell size as the plain digits set renders them; the digits classifier never
saw the held-out quarter, which `compositional_uint8(split="heldout")` uses.
Text: the prompts go through the built-in tiny text encoder (`data.text`);
the model learns their meaning from the canvases alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from elit_bench.data.base import InMemoryDataset
from elit_bench.data.digits import NUM_CLASSES, load_digits_split, render_uint8
from elit_bench.errors import UserError

NAME = "digits-t2i"
CANVAS = 32  # default canvas side in px
PER_PROMPT = 100  # training canvases per prompt
SEED = 0  # the training canvases' draw
CATEGORIES = ("single", "position", "counting")
# cell name -> (row, column) of its top-left corner in quarter-sides; a cell spans two quarters each way
CELLS = {"centre": (1, 1), "left": (1, 0), "right": (1, 2), "top": (0, 1), "bottom": (2, 1),
         "top_left": (0, 0), "top_right": (0, 2), "bottom_left": (2, 0), "bottom_right": (2, 2)}
CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")
COUNT_WORDS = {2: "two", 3: "three"}


@dataclass(frozen=True)
class Prompt:
    """One prompt and what it asks: `place` maps cells to digits (single, position); counting asks for
    `count` copies of `digit` in the corner cells and nothing in the others."""

    text: str
    category: str
    place: tuple[tuple[str, int], ...] = ()
    digit: int | None = None
    count: int | None = None


def _prompts() -> tuple[Prompt, ...]:
    single = [Prompt(f"a {d}", "single", (("centre", d),)) for d in range(NUM_CLASSES)]
    position = [Prompt(f"a {d} left of a {(d + 3) % 10}", "position", (("left", d), ("right", (d + 3) % 10)))
                for d in range(NUM_CLASSES)]
    position += [Prompt(f"a {d} above a {(d + 6) % 10}", "position", (("top", d), ("bottom", (d + 6) % 10)))
                 for d in range(NUM_CLASSES)]
    counting = [Prompt(f"{COUNT_WORDS[n]} {d}s", "counting", digit=d, count=n)
                for n in COUNT_WORDS for d in range(NUM_CLASSES)]
    return tuple(single + position + counting)


PROMPTS = _prompts()
NUM_PROMPTS = len(PROMPTS)


def check_canvas(resolution) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 8 or resolution % 4:
        raise UserError(f"{NAME} resolution must be a multiple of 4 px, at least 8 (e.g. 32), got {resolution!r}")
    return resolution


def cell_box(cell: str, canvas: int) -> tuple[int, int, int]:
    """(top, left, side) of a cell in px on a canvas of side `canvas`."""
    row, col = CELLS[cell]
    quarter = canvas // 4
    return row * quarter, col * quarter, 2 * quarter


def prompt_cells(prompt: Prompt, generator: np.random.Generator) -> list[tuple[str, int]]:
    """(cell, digit) pairs of one canvas for `prompt` (counting draws its corners from `generator`)."""
    if prompt.category != "counting":
        return list(prompt.place)
    corners = generator.choice(len(CORNERS), size=prompt.count, replace=False)
    return [(CORNERS[i], prompt.digit) for i in sorted(corners)]


def compositional_uint8(resolution: int = CANVAS, split: str = "train", per_prompt: int = PER_PROMPT,
                        seed: int = SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """Canvases uint8 (P * per_prompt, R, R), black background, and their prompt ids (P * per_prompt,).

    Every digit is a uniform draw (seeded) from `split`'s digits of its class, rendered at the cell size."""
    check_canvas(resolution)
    data = load_digits_split()
    side = resolution // 2
    rendered = render_uint8(torch.from_numpy(data[f"{split}_x"]), side)
    by_class = [np.flatnonzero(data[f"{split}_y"] == d) for d in range(NUM_CLASSES)]
    rng = np.random.default_rng(seed)
    canvases = torch.zeros(NUM_PROMPTS * per_prompt, resolution, resolution, dtype=torch.uint8)
    ids = torch.arange(NUM_PROMPTS).repeat_interleave(per_prompt)
    for n, pid in enumerate(ids.tolist()):
        for cell, digit in prompt_cells(PROMPTS[pid], rng):
            top, left, _ = cell_box(cell, resolution)
            canvases[n, top:top + side, left:left + side] = rendered[rng.choice(by_class[digit])]
    return canvases, ids


def compositional_description(resolution: int) -> dict:
    """The data description; "text" names the encoder of its prompt table (`data.prompt_table`)."""
    return {"name": NAME, "kind": "pixels", "resolution": check_canvas(resolution), "channels": 1,
            "num_classes": NUM_PROMPTS, "frames": None, "crop": None, "autoencoder": None, "text": "tiny"}


def compositional_dataset(resolution: int) -> InMemoryDataset:
    """The training canvases in [-1, 1]: x (N, 1, R, R), y (N,) prompt ids."""
    images, ids = compositional_uint8(resolution)
    return InMemoryDataset(images.float().unsqueeze(1) / 127.5 - 1, ids, compositional_description(resolution))
