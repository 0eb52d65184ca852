#!/usr/bin/env bash
# Copy the small outputs of a suite run into results/ with the run folder's layout, so that
# `elit-bench table SUITE --out results --scale SCALE` renders them again:
#   records (JSON and their per-sample sidecars), sample grids, the report, the shared reference features.
# A shared reference file already in DEST with other bytes (the same reference's features extracted by another
# run: float32 sums differ in the last bits across thread counts) is not overwritten: the incoming one is kept
# under its content-addressed name (<name>.<first 16 hex of its SHA-256>.npy, as runs now name them) and the
# copied records that point at it are pointed there.
# usage: scripts/keep_results.sh RUNS_DIR SUITE SCALE [DEST (default results)]
set -euo pipefail
src=${1:?RUNS_DIR}; suite=${2:?SUITE}; scale=${3:?SCALE}; dest=${4:-results}
[ -d "$src/$suite/$scale" ] || { echo "no run folder $src/$suite/$scale" >&2; exit 2; }
mkdir -p "$dest" && dest=$(cd "$dest" && pwd)
rm -rf "${dest:?}/$suite/$scale"
(cd "$src" && find "$suite/$scale" -type f \( -path '*/records/*' -o -name grid.png -o -path "$suite/$scale/report/*" \) -print0 |
  xargs -0 cp --parents -t "$dest")
python3 - "$src/_shared/features" "$dest/_shared/features" "$dest/$suite/$scale" <<'PY'
import hashlib, shutil, sys
from pathlib import Path

incoming, shared, kept = (Path(p) for p in sys.argv[1:])
shared.mkdir(parents=True, exist_ok=True)
for f in sorted(incoming.glob("*.npy")):
    target = shared / f.name
    if target.exists() and target.read_bytes() != f.read_bytes():
        sha = hashlib.sha256(f.read_bytes()).hexdigest()
        target = shared / f"{f.stem}.{sha[:16]}.npy"
        for record in kept.rglob("records/*.json"):
            text = record.read_text()
            if f"/{f.name}" in text and sha in text:
                record.write_text(text.replace(f"/{f.name}", f"/{target.name}"))
        print(f"{f.name} differs from the one in {shared}: kept as {target.name}")
    shutil.copyfile(f, target)
PY
echo "kept $(find "$dest/$suite/$scale" -type f | wc -l) files under $dest/$suite/$scale"
