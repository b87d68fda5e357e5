"""Susceptibility ζ in a plain PyTorch training loop: a torchvision ResNet-18 on noisy CIFAR-10 labels.

    python examples/own_training_loop.py [DATA_DIR] [EPOCHS]

Trains on 1,000 images of the CIFAR-10 python batches in DATA_DIR (the folder holding
cifar-10-batches-py; default: ../shared/data beside the repository; on half of them where the
batches hold fewer than 2,000) with half the labels replaced at random, probes with as many others, and prints every epoch the training accuracy, the accuracy on
the samples whose label is wrong (memorization) and ζ. A DATA_DIR without the batches is refused;
with no DATA_DIR and no data at the default place it runs on synthetic images and says so. The lines
marked ζ are all ζ adds to a loop.
"""
import sys
from pathlib import Path

import torch
import torchvision
from torch.nn import functional as F

from susceptibility import Susceptibility

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


def load_images(data_dir: Path | None, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` uint8 images (3, 32, 32) and labels of the training batches, read with the project's
    safe reader; synthetic ones where no folder was given and the default one holds none."""
    import datasets
    from runner.label_noise import DataError

    folder = data_dir or DEFAULT_DIR
    if data_dir is None and not (folder / "cifar-10-batches-py").is_dir():
        print(f"no CIFAR-10 batches in {folder}: running on synthetic images")
        return torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 10, (count,))
    if not (folder / "cifar-10-batches-py").is_dir():
        sys.exit(f"own_training_loop.py: error: {folder} holds no cifar-10-batches-py folder; give the folder "
                 f"above it, or no folder for synthetic images")
    try:
        train, _ = datasets.load_cifar(folder)
    except DataError as error:
        sys.exit(f"own_training_loop.py: error: {error}")
    return torch.as_tensor(train.images[:count]), torch.as_tensor(train.labels[:count])


def augment(images: torch.Tensor) -> torch.Tensor:
    """Random horizontal flips of a uint8 batch, then scaling to roughly zero mean and unit spread;
    the flips are drawn on the images' device."""
    flip = torch.rand(len(images), device=images.device) < 0.5
    return (torch.where(flip[:, None, None, None], images.flip(3), images).float() / 255 - 0.47) / 0.25


data_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else None
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
torch.manual_seed(0)
images, labels = load_images(data_dir, 2000)
size = len(images) // 2
train_images, unlabeled = images[:size], images[size:]
noisy = torch.where(torch.rand(size) < 0.5, torch.randint(0, 10, (size,)), labels[:size])
wrong = noisy != labels[:size]
model = torchvision.models.resnet18(num_classes=10)
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
zeta = Susceptibility(unlabeled, num_classes=10, batch_size=128, seed=0, augment=augment)  # ζ
for epoch in range(epochs):
    r = zeta.measure(model, optimizer)  # ζ: one probe step, undone, before the epoch's training
    model.train()
    hits = torch.zeros(size, dtype=torch.bool)
    for batch in torch.randperm(size).split(128):
        logits = model(augment(train_images[batch]))
        loss = F.cross_entropy(logits, noisy[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        hits[batch] = logits.argmax(1) == noisy[batch]
    scheduler.step()
    print(f"epoch {epoch}  train accuracy {100 * hits.float().mean():5.1f}%  memorization (wrong labels fitted) "
          f"{100 * hits[wrong].float().mean():5.1f}%  r {r:+.4f}  zeta {zeta.zeta:.4f}")  # ζ
