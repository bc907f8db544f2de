"""Shared inputs of the estimator tests: scikit-learn's bundled data sets and the layouts of
the samples (balanced, skewed with an empty rank 0, replicated)."""
import pytest
import torch

import torchheat as th
from torchheat.testing import skewed_counts

datasets = pytest.importorskip("sklearn.datasets")


def load(name, n=None):
    """(X, y) of a bundled data set as float64 / int64 tensors (the first ``n`` samples)."""
    data = getattr(datasets, f"load_{name}")()
    return torch.tensor(data.data[:n]), torch.tensor(data.target[:n])


def placements(t, comm):
    """Balanced, skewed (empty rank 0) and replicated layouts of the samples."""
    yield th.distribute(t, 0)
    if comm.size > 1:
        yield th.distribute(t, 0, counts=skewed_counts(t.shape[0], comm.size))
    yield th.distribute(t)
