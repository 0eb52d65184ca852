"""Bad input to model building: one line, exit 2, from the CLI and the API alike."""

import pytest

from elit_bench.cli import main as cli
from elit_bench.errors import UserError
from elit_bench.models import create_model


@pytest.mark.parametrize("resolution", ["-256", "0", "260"])
def test_flops_refuses_resolutions_that_are_not_positive_multiples_of_8(resolution, capsys):
    # catches: a negative resolution floor-divided into a negative latent size that still prints numbers
    assert cli(["flops", "DiT-XL/2", "--resolution", resolution]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"resolution {resolution}" in err and "multiple of 8" in err


def test_negative_input_size_is_refused():
    with pytest.raises(UserError, match="input_size"):
        create_model("DiT-S/2", input_size=-16)
