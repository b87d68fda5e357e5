"""The datasets a run reads: CIFAR-10 and CIFAR-100 in their official python format, or a folder of
images with label lists or in class folders (real noisy data such as Clothing1M, whose ground truth
is unknown).

What a run draws from them (its subset, noisy labels, probe sets and hold-out set) is in
`runner.noisy_data`; how labels are corrupted in `runner.label_noise`; batching and augmentation in
`runner.batching`; the safe reading of batch files in `runner.batch_pickle`.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from runner import safe_files
from runner.batch_pickle import ForbiddenObject, OversizedBatch, load_batch
from runner.errors import DataError
from runner.file_kinds import irregular_kind
from runner.label_noise import label_problem

IMAGE_SIZE = 32  # every image is 32x32, the models' input size; a folder's images are resized to it


@dataclass(frozen=True)
class CifarSource:
    """Where one CIFAR variant lives and how its official python batches are named."""

    folder: str
    archive: str
    url: str
    md5: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    num_classes: int


CIFAR = {
    "cifar10": CifarSource(
        folder="cifar-10-batches-py", archive="cifar-10-python.tar.gz",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)), test_files=("test_batch",),
        label_key="labels", num_classes=10),
    "cifar100": CifarSource(
        folder="cifar-100-python", archive="cifar-100-python.tar.gz",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        train_files=("train",), test_files=("test",), label_key="fine_labels", num_classes=100),
}


DEFAULT_DATA_DIR = "./data"  # where CIFAR is downloaded when --data-dir is left out


# --------------------------------------------------------------------------------------------------
# Reading the official python batches


@dataclass
class ImageSet:
    """uint8 images of shape (n, 3, 32, 32) with their int64 labels, and the class names where the
    dataset gives them (a folder of class folders)."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.labels)


def read_batch(path: Path, label_key: str, num_classes: int | None = None) -> ImageSet:
    """Read one pickled batch of the official python format, or say which file is broken.

    With `num_classes`, every label must be one of these classes (CIFAR-10's ten, say), so that a
    stray label cannot silently widen the run's class count."""
    kind = irregular_kind(path)
    if kind:
        raise DataError(f"CIFAR batch {path} is {kind}, not a file; replace it with the batch file from "
                        f"the official archive")
    try:
        with open(path, "rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            batch = load_batch(f, label_key, file_size)
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key])
        images = data.reshape(len(data), 3, IMAGE_SIZE, IMAGE_SIZE)
    except ForbiddenObject as error:
        raise DataError(f"CIFAR batch {path} refers to {error}, which an official batch never holds; "
                        f"it was not loaded, since it could run code. Replace it from the official archive")
    except OversizedBatch as error:
        raise DataError(f"CIFAR batch {path} would unpack to {error} from a file of {file_size:,} bytes, "
                        f"which no official batch does; it was not loaded. Replace it from the official "
                        f"archive")
    except Exception as error:  # any unpickling or shape failure means the same thing to the user
        raise DataError(f"cannot read CIFAR batch {path} ({type(error).__name__}: {error}); "
                        f"the file is corrupt or truncated, replace it from the official archive")
    check_batch(path, images, labels, num_classes)
    return ImageSet(images, labels.astype(np.int64))


def check_batch(path: Path, images: np.ndarray, labels: np.ndarray, num_classes: int | None) -> None:
    """Refuse a batch that no official archive holds: one without images, or whose labels are not
    one integer class per image."""
    problem = label_problem(labels, num_classes)
    if problem is None and len(images) != len(labels):
        problem = f"{len(images)} images but {len(labels)} labels"
    if problem is None and len(images) == 0:
        problem = "no images"
    if problem:
        raise DataError(f"CIFAR batch {path} holds {problem}; replace it from the official archive")


def read_batches(folder: Path, names: tuple[str, ...], source: CifarSource) -> ImageSet:
    """Concatenate whichever of the named batches exist in `folder` (a subset may hold fewer)."""
    present = [folder / name for name in names if (folder / name).exists()]
    if not present:
        raise DataError(f"no batch files ({', '.join(names)}) in {folder}; "
                        f"extract the official archive there")
    parts = [read_batch(path, source.label_key, source.num_classes) for path in present]
    return ImageSet(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]))


def download(source: CifarSource, data_dir: Path) -> None:
    """Fetch the official archive into `data_dir` (unless the one there is intact), verify its MD5
    checksum and extract it. A failure leaves nothing it made behind: neither the archive, nor a
    partly extracted folder, nor the folder made for them."""
    archive = data_dir / source.archive
    new_paths = [path for path in (archive, data_dir / source.folder, data_dir) if not path.exists()]
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fetch_verified(source, archive)
        with tarfile.open(archive) as tar:
            tar.extractall(data_dir, filter="data")
    except Exception as error:
        remove(new_paths)
        raise DataError(
            f"{source.folder} not found in {data_dir} and the download failed ({error}); "
            f"place {source.archive} from {source.url} in {data_dir} and extract it there")


def fetch_verified(source: CifarSource, archive: Path) -> None:
    """Download `archive` unless it is there with the official MD5 checksum (a damaged one, such as
    an interrupted download, is fetched again), and refuse a download without that checksum."""
    from torchvision.datasets.utils import check_integrity, download_url

    if check_integrity(str(archive), source.md5):
        return
    archive.unlink(missing_ok=True)
    download_url(source.url, str(archive.parent), archive.name)
    if not check_integrity(str(archive), source.md5):
        raise OSError(f"{archive.name} does not have the official MD5 checksum {source.md5}")


def remove(paths: list[Path]) -> None:
    """Delete the files and folders of `paths` that exist."""
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def check_data_dir(data_dir: Path, source: CifarSource) -> None:
    """Refuse a --data-dir that cannot be meant: a file, a missing folder (only the default one is
    made, for the download), or the batch folder itself instead of its parent."""
    if data_dir.exists() and not data_dir.is_dir():
        raise DataError(f"--data-dir {data_dir} is a file, not a folder; give the folder that holds "
                        f"{source.folder}")
    if not data_dir.exists() and data_dir != Path(DEFAULT_DATA_DIR):
        raise DataError(f"--data-dir {data_dir} does not exist; give the folder that holds "
                        f"{source.folder}, or leave --data-dir out to download into {DEFAULT_DATA_DIR}")
    if any((data_dir / name).is_file() for name in source.train_files):
        raise DataError(f"--data-dir {data_dir} holds the batch files themselves; point --data-dir at "
                        f"its parent, {data_dir.resolve().parent}")


def load_cifar(data_dir: str | Path, dataset: str = "cifar10") -> tuple[ImageSet, ImageSet]:
    """Training and test sets of `dataset` from `data_dir`, downloaded only if the folder is missing."""
    source = CIFAR[dataset]
    data_dir = Path(data_dir)
    check_data_dir(data_dir, source)
    folder = data_dir / source.folder
    if not folder.is_dir():
        download(source, data_dir)
    try:
        next(folder.iterdir(), None)
    except OSError as error:
        raise DataError(f"cannot read {folder} ({error.strerror}); check its permissions")
    train = read_batches(folder, source.train_files, source)
    test = read_batches(folder, source.test_files, source)
    return train, test


# --------------------------------------------------------------------------------------------------
# A folder of images: label lists, or one subfolder per class (real noisy data, ground truth unknown)

FOLDER = "folder"
DATASETS = (*CIFAR, FOLDER)
LIST_FORMAT = "one `relative/path/to/image.jpg <label>` per line"
LAYOUTS = (f"train.txt and test.txt ({LIST_FORMAT}), or one subfolder per class (<class>/<image>), "
           f"or train/<class>/<image> with an optional test/<class>/<image>")
# The image files a class folder lists, as torchvision's ImageFolder finds them.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Listing:
    """The images of one split of a folder dataset: paths relative to `root`, their labels, and what
    lists them (a list file, or the class folders), for messages and for the cache's key."""

    root: Path
    names: list[str]
    labels: np.ndarray
    source: Path
    key: str


def read_image_list(path: Path) -> tuple[list[str], np.ndarray]:
    """Image paths (relative to the list's folder) and integer labels of one list file."""
    kind = irregular_kind(path)
    if kind:
        raise DataError(f"image list {path} is {kind}, not a text file; replace it with a file of "
                        f"{LIST_FORMAT}")
    if not path.is_file():
        raise DataError(f"image list {path} not found; a folder dataset needs train.txt and "
                        f"test.txt there, {LIST_FORMAT}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read image list {path} ({error}); it must be UTF-8 text, {LIST_FORMAT}")
    names, labels = [], []
    for number, line in enumerate(lines, 1):
        parts = line.strip().rsplit(maxsplit=1)
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].isdigit():
            raise DataError(f"{path}, line {number}: expected {LIST_FORMAT} with a label of 0 or "
                            f"more, got {line.strip()!r}")
        names.append(parts[0])
        labels.append(int(parts[1]))
    if not names:
        raise DataError(f"image list {path} lists no images; {LIST_FORMAT}")
    return names, np.array(labels, dtype=np.int64)


def list_file(folder: Path, split: str) -> Listing:
    """The images `<folder>/<split>.txt` lists; the cache's key is the list's own bytes."""
    path = folder / f"{split}.txt"
    names, labels = read_image_list(path)
    return Listing(folder, names, labels, path, hashlib.sha256(path.read_bytes()).hexdigest())


def class_names(folder: Path) -> list[str]:
    """The class subfolders of `folder`, sorted by name as torchvision's ImageFolder sorts them."""
    return sorted(entry.name for entry in folder.iterdir() if entry.is_dir() and not entry.name.startswith("."))


def image_files(folder: Path) -> list[Path]:
    """The image files anywhere below `folder`, sorted by path."""
    return sorted(path for path in folder.rglob("*")
                  if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file())


def class_folders(root: Path, folder: Path, classes: list[str]) -> Listing:
    """The images of `folder/<class>/...`, labelled by the class's position in `classes`; paths
    relative to `root`. The cache's key is the listing itself."""
    names, labels = [], []
    for label, name in enumerate(classes):
        files = image_files(folder / name) if (folder / name).is_dir() else []
        names += [path.relative_to(root).as_posix() for path in files]
        labels += [label] * len(files)
    if not names:
        raise DataError(f"the class folders of {folder} hold no images ({', '.join(IMAGE_EXTENSIONS)})")
    text = "".join(f"{name} {label}\n" for name, label in zip(names, labels))
    return Listing(root, names, np.array(labels, dtype=np.int64), folder,
                   hashlib.sha256(text.encode()).hexdigest())


def read_image(path: Path, list_path: Path) -> np.ndarray:
    """One image file as uint8 RGB of shape (3, 32, 32): squeezed to the models' input size."""
    kind = irregular_kind(path)
    if kind:
        raise DataError(f"image {path} (listed in {list_path}) is {kind}, not an image file; replace "
                        f"it or remove its line")
    try:
        pixels = resized_image(path)
    except FileNotFoundError:
        raise DataError(f"image {path} (listed in {list_path}) not found")
    except Exception as error:  # PIL raises several types for a truncated or foreign file
        raise DataError(f"cannot read image {path} (listed in {list_path}): {error}; replace the "
                        f"file or remove its line")
    return np.asarray(pixels).transpose(2, 0, 1)


def resized_image(path: Path):
    """The PIL image of a file, RGB and squeezed to 32x32 as a run's images are (see `read_image`)."""
    from PIL import Image

    with Image.open(path) as image:
        image.draft("RGB", (IMAGE_SIZE, IMAGE_SIZE))  # JPEG: decode at a reduced scale, far faster
        return image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)


def cached_images(cache: Path, key: str) -> np.ndarray | None:
    """The resized images stored in `cache` if it was made from the list with this `key` (and is a
    regular file: anything else is replaced)."""
    if irregular_kind(cache):
        return None
    try:
        with np.load(cache) as stored:
            return stored["images"] if str(stored["key"]) == key else None
    except Exception:  # a missing, outdated or damaged cache is rebuilt
        return None


def store_images(cache: Path, key: str, images: np.ndarray) -> None:
    """Keep the resized images next to the list, so the next run skips decoding; optional."""
    try:
        safe_files.atomic_write(cache, lambda f: np.savez(f, images=images, key=np.array(key)))
    except OSError as error:
        print(f"note: cannot write the image cache {cache} ({error.strerror}); the images will be "
              f"decoded again next time", file=sys.stderr)


@dataclass
class FolderSplit:
    """One split of a folder dataset, with the cache its images belong in and whether they were
    decoded now (so that the cache is to be written, once the dataset is known to be good)."""

    data: ImageSet
    cache: Path
    key: str
    decoded: bool


def read_listing(listing: Listing, split: str, classes: tuple[str, ...] | None = None) -> FolderSplit:
    """The images of a listing with their labels, from the cache `<split>_32px.npz` in its root or
    decoded."""
    cache = listing.root / f"{split}_{IMAGE_SIZE}px.npz"
    images = cached_images(cache, listing.key)
    if images is not None:
        return FolderSplit(ImageSet(images, listing.labels, classes), cache, listing.key, decoded=False)
    listed = tqdm(listing.names, desc=f"resizing the {split} images", unit="image", leave=False, disable=None)
    images = np.stack([read_image(listing.root / name, listing.source) for name in listed])
    return FolderSplit(ImageSet(images, listing.labels, classes), cache, listing.key, decoded=True)


def no_images(classes: tuple[str, ...] | None) -> ImageSet:
    """An empty image set: a folder dataset without a test set."""
    return ImageSet(np.zeros((0, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8), np.zeros(0, dtype=np.int64), classes)


def folder_listings(folder: Path) -> tuple[Listing, Listing | None, tuple[str, ...] | None]:
    """The training and (where there is one) test listing of a folder dataset, and its class names
    where the classes are folders: train.txt and test.txt; else train/<class>/ (and test/<class>/);
    else <class>/ (no test set)."""
    if (folder / "train.txt").exists() or (folder / "test.txt").exists():
        return list_file(folder, "train"), list_file(folder, "test"), None
    if (folder / "test").is_dir() and not (folder / "train").is_dir():
        raise DataError(f"--data-dir {folder} has a test/ folder but no train/; put the training class "
                        f"folders in {folder / 'train'}")
    train_folder = folder / "train" if (folder / "train").is_dir() else folder
    classes = class_names(train_folder)
    if not classes:
        raise DataError(f"--data-dir {folder} holds neither train.txt nor class subfolders; a folder "
                        f"dataset needs {LAYOUTS}")
    test_folder = folder / "test" if train_folder != folder else None
    if test_folder is not None and test_folder.is_dir():
        strangers = sorted(set(class_names(test_folder)) - set(classes))
        if strangers:
            raise DataError(f"{test_folder} has class folders that {train_folder} lacks ({', '.join(strangers)}); "
                            f"give both the same classes")
        test = class_folders(folder, test_folder, classes)
    else:
        test = None
    return class_folders(folder, train_folder, classes), test, tuple(classes)



def load_folder(data_dir: str | Path, num_classes: int | None = None) -> tuple[ImageSet, ImageSet]:
    """Training images with their given (noisy) labels and the test images of a folder dataset.

    `data_dir` holds `train.txt` and `test.txt`, each with one `relative/path label` line per
    image; or one subfolder per class (labels in the sorted order of their names, as torchvision's
    ImageFolder gives them), directly or under `train/`, with the test set's under `test/`. Without
    a test set the test set is empty. Images are converted to RGB and resized to 32x32; the result
    is cached as `<split>_32px.npz` in `data_dir`, and rebuilt when the listing changes. The caches
    are written only once every split is read and its labels fit `num_classes` (see `class_count`),
    so that a dataset refused as bad input leaves the folder as it was.
    """
    folder = Path(data_dir)
    if not folder.is_dir():
        raise DataError(f"--data-dir {folder} is not a folder; a folder dataset needs {LAYOUTS}")
    train_listing, test_listing, classes = folder_listings(folder)
    splits = [read_listing(train_listing, "train", classes)]
    if test_listing is not None:
        splits.append(read_listing(test_listing, "test", classes))
    train, test = splits[0].data, splits[1].data if len(splits) == 2 else no_images(classes)
    class_count(train, test, num_classes)
    for split in splits:
        if split.decoded:
            store_images(split.cache, split.key, split.data.images)
    return train, test


def load_dataset(data_dir: str | Path, dataset: str,
                 num_classes: int | None = None) -> tuple[ImageSet, ImageSet]:
    """Training and test sets of a CIFAR variant or of a folder dataset (whose labels are checked
    against `num_classes` before its caches are written)."""
    return load_folder(data_dir, num_classes) if dataset == FOLDER else load_cifar(data_dir, dataset)


def class_count(train: ImageSet, test: ImageSet, num_classes: int | None) -> int:
    """The number of classes: `num_classes` checked against the labels, or the number of class
    folders, or the largest label + 1."""
    largest = int(max(train.labels.max(), test.labels.max(initial=0)))
    if num_classes is None:
        num_classes = len(train.classes) if train.classes else largest + 1
    if largest >= num_classes:
        raise DataError(f"the labels go up to {largest}, but there are {num_classes} classes; "
                        f"set --num_classes to {largest + 1} or more")
    if num_classes < 2:
        raise DataError(f"the labels hold a single class ({largest}); a classifier needs two or more")
    return num_classes
