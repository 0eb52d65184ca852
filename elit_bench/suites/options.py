"""What a command or the Python API adds to a suite: the output root, the scale, `--set` overrides.

`elit-bench run / status / table / plot` and `elit_bench.run_suite` share these, so that a suite
run from Python and from the shell expand the same way.
"""

from __future__ import annotations

import logging

from elit_bench.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_OUT = "runs"
# scales, cheapest first: what a command without --scale picks. `cpu` (claims) is sized to separate
# effects, so it costs more than a `smoke` test; no suite has both today.
CHEAPEST_FIRST = ("smoke", "cpu", "proxy", "paper")


def parse_sets(items: list[str]) -> tuple[dict, dict]:
    """`--set` items -> (config overrides, variables); the keys are checked when the suite expands."""
    from elit_bench.yamlconfig import apply_overrides, split_assignment

    settings, variables = [], {}
    for item in items:
        key, raw = split_assignment(item, "--set", "train.steps=200")
        if key.startswith("var."):
            variables[key[4:]] = raw  # substituted into the suite's text as written
        elif key.split(".")[0] in ("train", "sample", "metrics"):
            settings.append(item)
        else:
            raise UserError(f"--set {item!r}: keys start with train., sample., metrics. or var.")
    return apply_overrides({}, settings, "--set", "train.steps=200"), variables


def default_scale(suite, doing: str, among=None) -> str | None:
    """The cheapest scale of `suite` (of those in `among`, when given; None if none is), said in one line.

    doing: the verb of the line ("running", "showing")."""
    scales = [s for s in CHEAPEST_FIRST if s in suite.raw["scales"] and (among is None or s in among)]
    if not scales:
        return None
    scale = scales[0]
    hint = ("--scale paper for the paper's settings" if scale != "paper" and "paper" in suite.raw["scales"] else
            f"its scales: {', '.join(suite.raw['scales'])}")
    log.info("no --scale given: %s the cheapest scale of %s%s, %r; %s", doing, suite.name,
             " with records" if among is not None else "", scale, hint)
    return scale
