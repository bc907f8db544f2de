"""First steps with torchheat: the same script runs on one process or many.

    python examples/quickstart.py
    mpiexec -n 2 python examples/quickstart.py
    torchrun --nproc_per_node=2 examples/quickstart.py
"""
import numpy as np
import torch

import torchheat as th

comm = th.get_comm()
say = th.print_ranks  # one line per rank, printed by rank 0 in rank order (a collective)

# Wrap data every rank holds: each rank keeps only its rows.
data = np.arange(30, dtype=np.float32).reshape(10, 3)
x = th.distribute(torch.from_numpy(data), split=0)
say("global shape", tuple(x.shape), "local shape", tuple(x.lshape), "rows", x.counts)

# Ordinary torch code: pointwise ops keep the split, reductions combine over ranks.
y = (x * 2 + 1).exp().log()
total = y.sum()
column_means = x.mean(dim=0)
say("sum", round(total.item(), 2), "column means", column_means.tolist())
assert torch.allclose(column_means.full(), torch.from_numpy(data).mean(0))

# Change the distribution: split along columns, or replicate everywhere.
x.resplit_(1)
say("after resplit_(1): local shape", tuple(x.lshape))
x.resplit_(None)
say("after resplit_(None): local shape", tuple(x.lshape))

# Chunks of different sizes (e.g. after filtering) are fine; balance() evens them out.
z = th.from_local(torch.ones(comm.rank + 1, 3), split=0)
say("unbalanced counts", z.counts, "balanced?", z.is_balanced)
z.balance_()
say("balanced counts", z.counts, "average", z.mean().item())

# Gradients are those of the global computation.
w = torch.ones(3, requires_grad=True)
loss = (th.distribute(torch.from_numpy(data), split=0) * w).square().mean()
loss.backward()
say("loss", round(loss.item(), 3), "grad of w", [round(g, 3) for g in w.grad.tolist()])

# Bring the result back as a plain torch.Tensor / numpy array. x.numpy() and .item() are
# collectives: every rank calls them; print0 then prints on rank 0 only. (Never write
# `if comm.rank == 0: print(x.sum().item())`: the other ranks would not join the sum.)
th.print0("global array:\n", x.numpy()[:3], "...")
th.print0("global sum:", x.sum().item())
