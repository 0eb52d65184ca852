#!/usr/bin/env bash
# Copy the small outputs of a suite run into results/ with the run folder's layout, so that
# `elit-bench table SUITE --out results --scale SCALE` renders them again:
#   records (JSON and their per-sample sidecars), sample grids, the report, the shared reference features.
# usage: scripts/keep_results.sh RUNS_DIR SUITE SCALE [DEST (default results)]
set -euo pipefail
src=${1:?RUNS_DIR}; suite=${2:?SUITE}; scale=${3:?SCALE}; dest=${4:-results}
[ -d "$src/$suite/$scale" ] || { echo "no run folder $src/$suite/$scale" >&2; exit 2; }
mkdir -p "$dest" && dest=$(cd "$dest" && pwd)
rm -rf "${dest:?}/$suite/$scale"
cd "$src"
find "$suite/$scale" -type f \( -path '*/records/*' -o -name grid.png -o -path "$suite/$scale/report/*" \) -print0 |
  xargs -0 cp --parents -t "$dest"
mkdir -p "$dest/_shared/features"
cp "$src"/_shared/features/*.npy "$dest/_shared/features/"
echo "kept $(find "$dest/$suite/$scale" -type f | wc -l) files under $dest/$suite/$scale"
