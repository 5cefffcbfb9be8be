"""Shared test set-up."""
import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    # Shared 2-core machines: small ops run far faster single-threaded, and a second OpenMP thread that waits for a
    # core made the toy-density quadrature 40x slower. Every test gets one thread.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
