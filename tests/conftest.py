import os

import pytest
import torch

# under `pytest -n 2` each worker gets one core: two threads per worker on a 2-core machine
# oversubscribe it and make tiny-model steps several times slower
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
