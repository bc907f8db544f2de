"""Feature scaling of samples split across processes, with scikit-learn's estimator contract.

Statistics over the samples (means, variances, extremes, quantiles) are torchheat's global
reductions; transforming is elementwise on every rank's rows, so results keep X's layout.

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.tensor([[0.], [2.], [4.]]), split=0)
>>> th.preprocessing.StandardScaler().fit(x).mean_
tensor([2.])
"""
from .scalers import MaxAbsScaler, MinMaxScaler, Normalizer, RobustScaler, StandardScaler

__all__ = ["StandardScaler", "MinMaxScaler", "MaxAbsScaler", "RobustScaler", "Normalizer"]
