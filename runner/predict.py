"""Use a finished run's model: load it from its checkpoint with its architecture, its preprocessing
and its class names, and label a folder of new images.

    python -m runner.predict CHECKPOINT IMAGES --output predictions.csv

(CHECKPOINT: a run's .pt file, or the JSON that `python -m analysis FOLDER --pick --json` wrote,
whose recommended run's checkpoint is then used) writes one line per image file below IMAGES (sorted by path): its path relative to IMAGES, the
predicted class number and name, and the model's probability of that class. In Python:

    from runner.predict import load_model
    loaded = load_model("checkpoint/run_cnn_200_0.1.pt")
    classes = loaded.predict([PIL.Image.open("cat.jpg")])   # class numbers; loaded.class_names names them

Images are prepared as the run prepared its own: converted to RGB, squeezed to 32x32 with bilinear
resampling (aspect ratio not kept), scaled to [0, 1] and normalized with the training constants.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import datasets
from models import create_model
from runner import batching
from runner import checkpoints
from runner.errors import UsageError
from runner.training import fast_network


@dataclass
class LoadedModel:
    """A run's model in eval mode, with what it needs to label new images."""

    model: torch.nn.Module      # in eval mode, on the CPU
    class_names: list[str]      # the class folders' names, else the class numbers as text
    config: dict                # the run's settings, as its checkpoint keeps them
    channels_last: bool = False  # the memory layout the run computed in

    def preprocess(self, image) -> torch.Tensor:
        """One image (a PIL image, an image file's path, or a uint8 tensor (3, H, W)) as the
        normalized float tensor (3, 32, 32) the model takes."""
        return preprocess(image)

    @torch.no_grad()
    def logits(self, images) -> torch.Tensor:
        """The model's logits of a list of images (each as `preprocess` takes it), shape (n, classes)."""
        batch = torch.stack([self.preprocess(image) for image in images])
        network = fast_network(self.model, channels_last=self.channels_last)
        return network(batch).float()

    def predict(self, images) -> list[int]:
        """The predicted class number of each image of a list."""
        return self.logits(images).argmax(1).tolist()


def pixels(image) -> torch.Tensor:
    """An image as uint8 (3, 32, 32), resized as a folder dataset's images are (`datasets.read_image`)."""
    from PIL import Image

    if isinstance(image, (str, Path)):
        image = datasets.resized_image(Path(image))
    if isinstance(image, Image.Image):
        resized = image.convert("RGB").resize((datasets.IMAGE_SIZE, datasets.IMAGE_SIZE), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.asarray(resized).transpose(2, 0, 1).copy())
    if isinstance(image, torch.Tensor) and image.dtype == torch.uint8 and image.dim() == 3 and image.shape[0] == 3:
        return pixels(Image.fromarray(image.permute(1, 2, 0).numpy())) if image.shape[1:] != (32, 32) else image
    raise TypeError(f"expected a PIL image, an image file's path or a uint8 tensor (3, H, W), got {type(image).__name__}")


def preprocess(image) -> torch.Tensor:
    """`pixels`, scaled to [0, 1] and normalized with the run's constants (`batching.normalize`)."""
    return batching.normalize(pixels(image)[None])[0]


def class_names(state: dict) -> list[str]:
    """The class names a checkpoint keeps (runs on class folders), else the class numbers as text."""
    return list(state.get("class_names") or (str(label) for label in range(state["config"]["num_classes"])))


def load_model(path: str | Path) -> LoadedModel:
    """The model of the run whose checkpoint is at `path`, with its architecture and width, in eval
    mode on the CPU, with its class names; raises UsageError for a file that is not a checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"checkpoint {path} not found; give a run's .pt file from its --checkpoint-dir")
    state = checkpoints.load_checkpoint(path, "cpu", advice="give a run's .pt file from its --checkpoint-dir")
    config = state["config"]
    model = create_model(config["model"], config["scale"], config["num_classes"])
    model.load_state_dict(state["model"])
    return LoadedModel(model.eval(), class_names(state), config, bool(config.get("channels_last")))


def checkpoint_named(path: Path) -> Path:
    """The checkpoint itself, or the one a `--pick --json` file recommends."""
    if path.suffix != ".json":
        return path
    try:
        return Path(json.loads(path.read_text(encoding="utf-8"))["checkpoint"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UsageError(f"cannot read the recommended checkpoint from {path} ({error}); give the output of "
                         f"python -m analysis FOLDER --pick --json, or the checkpoint itself")


def predict_folder(loaded: LoadedModel, folder: Path, batch_size: int = 256) -> list[dict]:
    """Per image file below `folder`, sorted by path: its path relative to `folder`, the predicted
    class number and name, and the model's probability of it."""
    files = datasets.image_files(folder)
    if not files:
        raise UsageError(f"no image files ({', '.join(datasets.IMAGE_EXTENSIONS)}) below {folder}")
    rows = []
    for start in range(0, len(files), batch_size):
        chunk = files[start:start + batch_size]
        probabilities = loaded.logits(chunk).softmax(1)
        confidence, predicted = probabilities.max(1)
        rows += [{"path": path.relative_to(folder).as_posix(), "predicted": label,
                  "class_name": loaded.class_names[label], "probability": round(p, 6)}
                 for path, label, p in zip(chunk, predicted.tolist(), confidence.tolist())]
    return rows


def write_csv(rows: list[dict], output: Path) -> None:
    """The predictions as a CSV file with a header line."""
    with open(output, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (2 with one line on stderr for bad input)."""
    parser = argparse.ArgumentParser(description="Label a folder of images with a finished run's model.",
                                     allow_abbrev=False)
    parser.add_argument("checkpoint", type=Path,
                        help="the run's checkpoint (.pt), or the JSON of python -m analysis FOLDER --pick --json")
    parser.add_argument("images", type=Path, help="folder of images (searched recursively)")
    parser.add_argument("--output", type=Path, required=True, help="CSV file to write")
    args = parser.parse_args(argv)
    try:
        if not args.images.is_dir():
            raise UsageError(f"{args.images} is not a folder; give the folder of the images to label")
        rows = predict_folder(load_model(checkpoint_named(args.checkpoint)), args.images)
    except UsageError as error:
        print(f"predict: error: {error}", file=sys.stderr)
        return 2
    try:
        write_csv(rows, args.output)
    except OSError as error:
        print(f"predict: error: cannot write {args.output} ({error.strerror}); give a writable path", file=sys.stderr)
        return 2
    print(f"wrote {len(rows)} predictions to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
