"""Linear models of samples split across processes (scikit-learn's contract).

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.arange(8.).reshape(4, 2), split=0)
>>> th.linear_model.Lasso(alpha=0.1).fit(x, x[:, 0] * 2).coef_.shape
torch.Size([2])
"""
from .lasso import Lasso

__all__ = ["Lasso"]
