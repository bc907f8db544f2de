"""examples/resnet_fakedata.py trained with DASO instead of synchronous data parallelism:
the same program but for the line that builds the optimizer.

    mpiexec -n 4 python examples/daso_train.py      # 2 simulated nodes of 2 ranks
    python examples/daso_train.py

``th.optim.DASO`` points the DataParallel at this rank's node, so gradients are averaged
inside the node every batch, while the parameters are averaged between nodes only every
few batches, without blocking, by one rank per node (see ``torchheat/optim/daso.py``).
On a cluster leave ``ranks_per_node`` out: it comes from the launcher. Calling
``opt.epoch_loss_logic(loss)`` after each epoch lets DASO shorten its skips when the loss
stalls. Every epoch ends with the same parameters on every rank.
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
opt = th.optim.DASO(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4), total_epochs=2, warmup_epochs=0, cooldown_epochs=0, max_global_skips=2, ranks_per_node=2 if comm.size % 2 == 0 else 1, module=model, loader=loader)

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
