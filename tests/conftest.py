import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Test models are tiny: threads gain nothing, and under `-n 2` two per worker oversubscribe 2 cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
