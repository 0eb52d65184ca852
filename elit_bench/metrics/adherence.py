"""Prompt adherence on the compositional digits (`data.compositional`): does a sample show what its prompt asks?

GenEval's idea on digits: a detector checks each requirement of the prompt. Here
the detector is the digits classifier read cell by cell (`DigitsCells`): a cell
holds digit d when it is inked (mean grey level at least INK, about half the
faintest real digit's 0.18 at 16 px) and the classifier's top class is d.

    single    "a D":              the centre cell holds D
    position  "a X left of a Y":  the left cell holds X and the right cell holds Y (above: top and bottom)
    counting  "two Ds":           exactly 2 of the 4 corner cells are inked, and each holds D

`t2i_adherence` is the share of samples that satisfy their prompt (prompt ids
drawn uniformly: 1/5 single, 2/5 position, 2/5 counting prompts), with a Wilson
interval; `t2i_adherence_<category>` the same within each category. Real
held-out canvases score what the classifier allows (the suites' real-data row).
"""

from __future__ import annotations

import numpy as np

from elit_bench.data import compositional
from elit_bench.errors import UserError
from elit_bench.metrics import intervals

INK = 0.1
CLASSES = 10
CELL_INDEX = {cell: i for i, cell in enumerate(compositional.CELLS)}
CORNERS = [CELL_INDEX[c] for c in compositional.CORNERS]


def read_cells(features: np.ndarray) -> np.ndarray:
    """`DigitsCells` features (N, 11 x cells) -> what each cell holds (N, cells): its digit, or -1 when blank."""
    per_cell = features.reshape(len(features), len(compositional.CELLS), CLASSES + 1)
    digits = per_cell[..., :CLASSES].argmax(axis=-1)
    return np.where(per_cell[..., CLASSES] >= INK, digits, -1)


def satisfied(features: np.ndarray, prompt_ids: np.ndarray) -> np.ndarray:
    """bool (N,): whether sample i satisfies prompt `prompt_ids[i]` (ids index `compositional.PROMPTS`)."""
    prompt_ids = np.asarray(prompt_ids)
    if len(prompt_ids) != len(features) or prompt_ids.min(initial=0) < 0 or \
            prompt_ids.max(initial=0) >= compositional.NUM_PROMPTS:
        raise UserError(f"t2i_adherence needs one prompt id in 0..{compositional.NUM_PROMPTS - 1} per sample "
                        f"({compositional.NAME} prompts, stored as the samples' labels); got {len(prompt_ids)} ids "
                        f"for {len(features)} samples")
    held = read_cells(features)
    out = np.empty(len(features), dtype=bool)
    for i, pid in enumerate(prompt_ids):
        prompt = compositional.PROMPTS[pid]
        if prompt.category == "counting":
            corners = held[i, CORNERS]
            out[i] = (corners >= 0).sum() == prompt.count and np.all(corners[corners >= 0] == prompt.digit)
        else:
            out[i] = all(held[i, CELL_INDEX[cell]] == digit for cell, digit in prompt.place)
    return out


def adherence(features: np.ndarray, prompt_ids: np.ndarray, keys: tuple[str, ...]) -> tuple[dict, dict]:
    """({key: share satisfied}, {key: Wilson interval}) for `keys` = (overall, then one per category in
    `compositional.CATEGORIES` order); a category without samples gets no value."""
    ok = satisfied(features, prompt_ids)
    category = np.array([compositional.PROMPTS[p].category for p in prompt_ids])
    values, bounds = {}, {}
    for key, members in zip(keys, [np.ones(len(ok), bool)] + [category == c for c in compositional.CATEGORIES]):
        n = int(members.sum())
        if n:
            values[key] = float(ok[members].mean())
            bounds[key] = intervals.wilson(values[key], n, what="samples")
    return values, bounds
