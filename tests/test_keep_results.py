"""scripts/keep_results.sh gathers runs into one results folder without breaking the records already there."""

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "keep_results.sh"
REF = "967cef.penultimate.npy"  # an older run's name: the reference's cache key only


def run_folder(root: Path, suite: str, features: np.ndarray) -> str:
    """RUNS/<suite>/cpu/r/records/e.json naming RUNS/_shared/features/REF; returns the features' SHA-256."""
    (root / "_shared" / "features").mkdir(parents=True, exist_ok=True)
    np.save(root / "_shared" / "features" / REF, features)
    sha = hashlib.sha256((root / "_shared" / "features" / REF).read_bytes()).hexdigest()
    record = root / suite / "cpu" / "r" / "records" / "e.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"features": {"digits_fd": {"reference": {
        "file": f"../../../../_shared/features/{REF}", "sha256": sha}}}}))
    return sha


def test_a_differing_reference_is_kept_beside_and_its_records_repointed(tmp_path):
    # catches: the second suite's copy overwriting the first's reference, so the first's records no longer verify
    first, second = np.ones((4, 2), np.float32), np.ones((4, 2), np.float32) + 1e-6
    dest = tmp_path / "results"
    for name, features in (("a", first), ("b", second)):
        run_folder(tmp_path / name, name, features)
        subprocess.run(["bash", str(SCRIPT), str(tmp_path / name), name, "cpu", str(dest)], check=True,
                       capture_output=True)
    for suite in ("a", "b"):
        record = dest / suite / "cpu" / "r" / "records" / "e.json"
        ref = json.loads(record.read_text())["features"]["digits_fd"]["reference"]
        path = record.parent / ref["file"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == ref["sha256"], suite
    assert np.array_equal(np.load(dest / "_shared" / "features" / REF), first)
    assert len(list((dest / "_shared" / "features").glob("*.npy"))) == 2
