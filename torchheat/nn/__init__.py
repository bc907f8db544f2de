"""Training torch.nn modules on several processes: :class:`DataParallel`.

A stock module needs no wrapper to train exactly on a batch-split DistTensor (torchheat's
autograd sums the replicated parameters' gradients); ``DataParallel`` is the fast path for
plain per-rank batches (bucketed gradient averaging overlapped with backward).
"""
from .parallel import DataParallel

__all__ = ["DataParallel"]
