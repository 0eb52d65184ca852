"""The 95% interval of the difference between two evaluations of a suite run, per metric (records.difference_of:
paired where they share training seeds, noise seeds and reference), e.g.

    python scripts/paired_difference.py results table4-t2i cpu "ELIT-MM-DiT/12.5% CCFG" "MM-DiT/CFG" t2i_adherence digits_fd

An evaluation is "<run label>/<eval label>" as the suite's table names them; a Frechet metric compares its
debiased estimates, the values its intervals hold.
"""

import sys

from elit_bench.metrics.compute import DEBIASED
from elit_bench.results.records import aggregate_seeds, difference_of, load_records, records_frame


def fail(message: str) -> None:
    print(f"paired_difference: {message}", file=sys.stderr)
    sys.exit(2)


def main(out, suite, scale, a, b, *metrics):
    agg = aggregate_seeds(records_frame(load_records(out, suite, scale)))
    for metric in metrics:
        key = metric + DEBIASED if (agg["metric"] == metric + DEBIASED).any() else metric
        rows = []
        for label in (a, b):
            run, _, evaluation = label.partition("/")
            hit = agg[(agg["metric"] == key) & (agg["run"] == run) & (agg["eval"] == evaluation)]
            if len(hit) != 1:
                fail(f"no single {key} record for {label!r}; runs/evals: {sorted(set(agg['run'] + '/' + agg['eval']))}")
            rows.append(hit.iloc[0])
        d = difference_of(*rows)
        print(f"{key}: {a} {rows[0]['value']:.4g} - {b} {rows[1]['value']:.4g} = {d['estimate']:.4g} "
              f"[{d['low']:.4g}, {d['high']:.4g}] ({d['pairing']}, {d['method']})")


if __name__ == "__main__":
    if len(sys.argv) < 7:
        fail("usage: python scripts/paired_difference.py OUT SUITE SCALE RUN/EVAL RUN/EVAL METRIC [METRIC ...]")
    main(*sys.argv[1:])
