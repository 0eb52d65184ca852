"""Feature extraction shows its progress (samples, rate, ETA); -q turns bars off."""

import numpy as np

from elit_bench.cli import main
from elit_bench.metrics import compute_metrics


def digits_like(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (n, 16, 16, 3), dtype=np.uint8)


def test_feature_extraction_shows_a_progress_bar(capsys):
    compute_metrics(digits_like(40, 0), digits_like(40, 1), ["digits_fd"], batch_size=8, use_cache=False,
                    progress=True)
    err = capsys.readouterr().err
    assert "digits-cnn features of fake" in err and "digits-cnn features of real" in err
    assert "40/40" in err and "sample/s" in err
    compute_metrics(digits_like(40, 0), digits_like(40, 1), ["digits_fd"], use_cache=False, progress=False)
    assert "features of" not in capsys.readouterr().err


def test_metrics_command_is_quiet_with_q(tmp_path, capsys):
    for name, seed in (("fake", 0), ("real", 1)):
        np.savez(tmp_path / f"{name}.npz", arr_0=digits_like(24, seed))
    argv = ["metrics", "--fake", str(tmp_path / "fake.npz"), "--real", str(tmp_path / "real.npz"),
            "--metrics", "digits_fd", "--no-cache"]
    assert main(argv) == 0
    assert "features of" in capsys.readouterr().err
    assert main([*argv, "-q"]) == 0
    assert "features of" not in capsys.readouterr().err
