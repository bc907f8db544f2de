"""Train an MLP on a batch-split dataset with plain torch code: the same parameters on any
number of processes.

    python examples/mlp.py
    mpiexec -n 2 python examples/mlp.py
    torchrun --nproc_per_node=2 examples/mlp.py

The data (two noisy spirals) is drawn with torchheat's random numbers, split along rows;
``th.utils.data.DataLoader`` shuffles it globally every epoch and yields batch-split
DistTensors. The model, loss and optimizer are stock torch: the loss is the mean over the
GLOBAL batch and ``backward()`` leaves every rank with the exact global gradient, so the
final checksum is the one process's (up to float rounding) under every launcher.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import torchheat as th

torch.set_num_threads(1)
th.manual_seed(0)
n = 1024
t = th.rand(n, split=0) * 3 * math.pi          # position along the spiral
label = th.randint(0, 2, (n,), split=0)         # which of the two spirals
radius = t / (3 * math.pi)
angle = t + math.pi * label
X = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1) + 0.02 * th.randn(n, 2, split=0)

torch.manual_seed(0)  # the same initial model on every rank
model = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2))
opt = torch.optim.Adam(model.parameters(), lr=0.01)
loader = th.utils.data.DataLoader((X, label), batch_size=128, shuffle=True, seed=0)

for epoch in range(5):
    total, correct = 0.0, 0
    for xb, yb in loader:
        opt.zero_grad()
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)          # the mean over the global batch
        loss.backward()
        opt.step()
        total += loss.item() * yb.shape[0]
        correct += int((logits.argmax(1) == yb).sum())
    th.print0(f"epoch {epoch}: loss {total / n:.4f}  accuracy {correct / n:.3f}")

checksum = sum(p.detach().double().abs().sum().item() for p in model.parameters())
th.print0(f"processes {th.get_comm().size} ({th.get_comm().backend}): parameter checksum {checksum:.5f}")
