"""Every test runs unchanged on 1, 2 and 3 processes (see tests/run.sh).

Missing rules are never hidden: the fallback policy is "error" for the whole suite.
"""
import pytest
import torch

import torchheat as th

torch.set_num_threads(1)
th.config.fallback = "error"


@pytest.fixture
def comm():
    return th.get_comm()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
