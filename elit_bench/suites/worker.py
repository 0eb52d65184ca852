"""One run inside a launched process: `python -m elit_bench.suites.worker SPEC.json OUT [--no-progress]`.

Under torchrun every rank executes the run: training is DDP, sampling and
feature extraction shard over ranks, rank 0 writes the records. The process
group is joined once here for the whole run and destroyed when it ends.
"""

import sys
from pathlib import Path

from elit_bench import distributed
from elit_bench.suites.launchers import spec_from_json
from elit_bench.suites.runner import execute_run


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec, out = argv[0], argv[1]
    with distributed.job():
        execute_run(spec_from_json(Path(spec).read_text()), out, progress="--no-progress" not in argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
