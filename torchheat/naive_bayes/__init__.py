"""Naive Bayes classifiers of samples split across processes (scikit-learn's contract).

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.tensor([[0.], [0.2], [5.], [5.2]]), split=0)
>>> y = th.distribute(torch.tensor([0, 0, 1, 1]), split=0)
>>> th.naive_bayes.GaussianNB().fit(x, y).predict(torch.tensor([[4.]])).tolist()
[1]
"""
from .gaussian import GaussianNB

__all__ = ["GaussianNB"]
