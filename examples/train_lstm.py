"""Train a small LSTM on synthetic sequences with th.nn.DataParallel.

    python examples/train_lstm.py
    mpiexec -n 2 python examples/train_lstm.py
    torchrun --nproc_per_node=2 examples/train_lstm.py

The task: is the running sum of a random walk positive at its end? The sequences are
drawn with torchheat's random numbers (the same global data on any number of processes)
and split along the batch axis; ``th.utils.data.DataLoader`` shuffles them globally and
every rank trains on its share of each global batch as a plain tensor. DataParallel
averages the gradients over ranks in buckets while backward runs. The global batch of 64
splits into equal shares on 1, 2 or 4 processes, so the mean over ranks of the per-rank
mean losses is the mean over the global batch and the final checksum is the one process's
(up to float rounding) under every launcher.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

import torchheat as th

torch.set_num_threads(1)
comm = th.get_comm()
th.manual_seed(0)
n, steps = 512, 12
X = th.randn(n, steps, 1, split=0)
y = (X.sum(dim=(1, 2)) > 0).long()  # a reduction along unsplit axes: local


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(1, 16, batch_first=True)
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


torch.manual_seed(0)
model = th.nn.DataParallel(Classifier())
opt = torch.optim.Adam(model.parameters(), lr=0.01)
loader = th.utils.data.DataLoader((X, y), batch_size=64, shuffle=True, seed=0, drop_last=True)

for epoch in range(4):
    total = torch.zeros(2, dtype=torch.float64)  # loss sum, correct
    for xb, yb in loader:
        xb, yb = xb.local, yb.local  # this rank's share of the global batch
        opt.zero_grad()
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        loss.backward()
        opt.step()
        total += torch.tensor([loss.item() * len(yb), (logits.argmax(1) == yb).sum().item()], dtype=torch.float64)
    total = comm.allreduce(total) / (len(loader) * 64)
    th.print0(f"epoch {epoch}: loss {total[0]:.4f}  accuracy {total[1]:.3f}")

checksum = sum(p.detach().double().abs().sum().item() for p in model.parameters())
th.print0(f"processes {comm.size} ({comm.backend}): parameter checksum {checksum:.5f}")
