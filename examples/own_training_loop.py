"""Susceptibility ζ in a plain PyTorch training loop: a torchvision ResNet-18 on noisy CIFAR-10 labels.

    python examples/own_training_loop.py [DATA_DIR] [EPOCHS]

Trains on 1,000 images of the CIFAR-10 python batches in DATA_DIR (default: ../shared/data beside
the repository) with half the labels replaced at random, probes with 1,000 other images, and prints
ζ every epoch. Without the data it runs on synthetic images. The lines marked ζ are all it adds.
"""
import pickle
import sys
from pathlib import Path

import torch
import torchvision
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout works without installing
from susceptibility import Susceptibility  # noqa: E402  (ζ)


def load_images(data_dir: Path, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` uint8 images (3, 32, 32) and labels of the training batches, or random ones without them."""
    paths = sorted((data_dir / "cifar-10-batches-py").glob("data_batch_*"))
    if not paths:
        print(f"no CIFAR-10 training batches in {data_dir}: synthetic images")
        return torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 10, (count,))
    batches = [pickle.loads(path.read_bytes(), encoding="latin1") for path in paths]
    images = torch.cat([torch.tensor(batch["data"]) for batch in batches])[:count].view(-1, 3, 32, 32)
    return images, torch.cat([torch.tensor(batch["labels"]) for batch in batches])[:count]


def augment(images: torch.Tensor) -> torch.Tensor:
    """Random horizontal flips of a uint8 batch, then scaling to roughly zero mean and unit spread."""
    flip = torch.rand(len(images)) < 0.5
    return (torch.where(flip[:, None, None, None], images.flip(3), images).float() / 255 - 0.47) / 0.25


default_dir = Path(__file__).resolve().parents[2] / "shared" / "data"
data_dir, epochs = Path(sys.argv[1] if len(sys.argv) > 1 else default_dir), int(sys.argv[2] if len(sys.argv) > 2 else 5)
torch.manual_seed(0)
images, labels = load_images(data_dir, 2000)
train_images, unlabeled = images[:1000], images[1000:]
noisy = torch.where(torch.rand(1000) < 0.5, torch.randint(0, 10, (1000,)), labels[:1000])
model = torchvision.models.resnet18(num_classes=10)
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
zeta = Susceptibility(unlabeled, num_classes=10, batch_size=128, seed=0, augment=augment)  # ζ
for epoch in range(epochs):
    r = zeta.measure(model, optimizer)  # ζ: one probe step, undone, before the epoch's training
    model.train()
    correct = 0
    for batch in torch.randperm(1000).split(128):
        logits = model(augment(train_images[batch]))
        loss = F.cross_entropy(logits, noisy[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        correct += (logits.argmax(1) == noisy[batch]).sum().item()
    scheduler.step()
    print(f"epoch {epoch}  train accuracy {correct / 10:5.1f}%  r {r:+.4f}  zeta {zeta.zeta:.4f}")  # ζ
