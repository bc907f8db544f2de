"""Nearest-neighbour estimators of samples split across processes (scikit-learn's contract).

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.tensor([[0.], [1.], [10.], [11.]]), split=0)
>>> y = th.distribute(torch.tensor([0, 0, 1, 1]), split=0)
>>> th.neighbors.KNeighborsClassifier(n_neighbors=1).fit(x, y).predict(torch.tensor([[9.]])).tolist()
[1]
"""
from .classification import KNeighborsClassifier

__all__ = ["KNeighborsClassifier"]
