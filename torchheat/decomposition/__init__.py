"""Matrix decompositions as scikit-learn estimators, on split data.

>>> import torch, torchheat as th
>>> x = th.distribute(torch.randn(50, 4, dtype=torch.float64), split=0)
>>> th.decomposition.PCA(n_components=2).fit(x).components_.shape
torch.Size([2, 4])
"""
from .pca import PCA

__all__ = ["PCA"]
