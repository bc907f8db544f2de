"""Train torchvision's resnet18 on FakeData with th.nn.DataParallel (a few steps).

    python examples/resnet_fakedata.py
    mpiexec -n 2 python examples/resnet_fakedata.py
    torchrun --nproc_per_node=2 examples/resnet_fakedata.py

Every rank reads only its share of each global batch of the dataset
(``th.utils.data.DistributedSampler`` with torch's DataLoader: small 32x32 images) and
trains on it; DataParallel averages the gradients over ranks in buckets while backward
runs and keeps the BatchNorm running statistics identical on every rank. As in torch's
DDP, BatchNorm normalizes with each rank's own batch statistics, so the final checksum is
the same under ``mpiexec -n 2`` and ``torchrun --nproc_per_node=2`` but differs from one
process's.
"""
import torch
import torch.nn.functional as F
import torchvision

import torchheat as th

torch.set_num_threads(1)
comm = th.get_comm()
data = torchvision.datasets.FakeData(size=64, image_size=(3, 32, 32), num_classes=10,
                                     transform=torchvision.transforms.ToTensor(), random_offset=0)
sampler = th.utils.data.DistributedSampler(data, batch_size=16, shuffle=True, seed=0, drop_last=True)
loader = torch.utils.data.DataLoader(data, batch_sampler=sampler)

torch.manual_seed(0)
model = th.nn.DataParallel(torchvision.models.resnet18(num_classes=10))
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)

for epoch in range(2):
    total = torch.zeros(1, dtype=torch.float64)
    for images, labels in loader:
        opt.zero_grad()
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        opt.step()
        total += loss.item()
    th.print0(f"epoch {epoch}: loss {(comm.allreduce(total) / (comm.size * len(loader))).item():.4f}")

checksum = sum(p.detach().double().abs().sum().item() for p in model.parameters())
th.print0(f"processes {comm.size} ({comm.backend}): parameter checksum {checksum:.5f}")
