import os

import pytest
import torch

import lthgan  # noqa: F401  (registers torch.ops.lthgan)

CUDA = torch.cuda.is_available()

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason="needs CUDA"))]


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def _fresh_seed(request):
    # A fresh, but reproducible, seed per test: inputs differ between tests, never zeros.
    seed = abs(hash(request.node.nodeid)) % (2**31)
    torch.manual_seed(seed)
    yield


def pytest_configure(config):
    os.environ.setdefault("LTHGAN_OFFLINE", "1")
