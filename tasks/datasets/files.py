"""Loaders for datasets a user keeps on disk: MNIST-format IDX files, CIFAR-10 python batches, `.npz`
arrays and plain text. Every failure names the file and what was expected."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np

from tasks.datasets.arrays import ImageDataset, TextDataset, image_dataset, text_dataset


class DataFileError(ValueError):
    """A data file exists but does not hold what its format promises."""


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise DataFileError(f"{path}: not a valid gzip file ({error})") from None
    return raw


# IDX type codes (the third byte of the magic number) and the NumPy dtypes they denote, big-endian.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """One IDX file (the format of the MNIST and Fashion-MNIST distributions), optionally gzipped."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataFileError(f"{path}: not an IDX file (expected the magic bytes 00 00 <type> <ndim>)")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFileError(f"{path}: IDX header truncated")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise DataFileError(f"{path}: IDX header promises shape {shape} ({expected} bytes), "
                            f"the file has {len(raw)} bytes")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find(directory: Path, stems: tuple[str, ...]) -> Path:
    for stem in stems:
        for candidate in (directory / stem, directory / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"{directory}: expected one of {', '.join(stems)} (optionally .gz)")


def load_idx_directory(directory: str | Path) -> ImageDataset:
    """MNIST-format files in a directory: train-images-idx3-ubyte, train-labels-idx1-ubyte and the
    t10k-* pair (the names of the MNIST and Fashion-MNIST downloads; dots or dashes, .gz or not)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"IDX dataset directory {directory} does not exist")
    arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        for part, suffix in (("images", "idx3-ubyte"), ("labels", "idx1-ubyte")):
            path = _find(directory, (f"{prefix}-{part}-{suffix}", f"{prefix}-{part}.{suffix}"))
            arrays[split, part] = read_idx(path)
            expected_ndim = 3 if part == "images" else 1
            if arrays[split, part].ndim != expected_ndim:
                raise DataFileError(f"{path}: expected {expected_ndim} dimensions of {part}, "
                                    f"found shape {arrays[split, part].shape}")
    return image_dataset(f"idx:{directory}", arrays["train", "images"], arrays["train", "labels"],
                         test=(arrays["test", "images"], arrays["test", "labels"]))


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and NumPy arrays and nothing else, so a crafted file cannot run code."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only arrays are allowed")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = _ArraysOnlyUnpickler(io.BytesIO(_read_bytes(path)), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise DataFileError(f"{path}: not a CIFAR-10 python batch ({error})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataFileError(f"{path}: a CIFAR-10 batch is a dict with b'data' and b'labels'")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"])
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DataFileError(f"{path}: expected data of shape (N, 3072) and N labels, "
                            f"found {data.shape} and {labels.shape}")
    # Rows are channel-major (1024 red, 1024 green, 1024 blue); the models take NHWC.
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def load_cifar10_directory(directory: str | Path) -> ImageDataset:
    """CIFAR-10 "python version": data_batch_1 ... data_batch_5 and test_batch in a directory.
    Any subset of the five training batches is accepted (at least data_batch_1)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"CIFAR-10 directory {directory} does not exist")
    train_paths = sorted(directory.glob("data_batch_[1-5]"))
    if not train_paths:
        raise FileNotFoundError(f"{directory}: expected CIFAR-10 batches data_batch_1 ... data_batch_5")
    train = [_read_cifar_batch(path) for path in train_paths]
    test = _read_cifar_batch(_find(directory, ("test_batch",)))
    return image_dataset(f"cifar10:{directory}", np.concatenate([x for x, _ in train]),
                         np.concatenate([y for _, y in train]), test=test)


# Key names accepted in .npz files: Keras style with an official test split, or one pool of examples.
_NPZ_LAYOUTS = ((("x_train", "y_train"), ("x_test", "y_test")), (("images", "labels"), None), (("x", "y"), None))


def load_npz(path: str | Path) -> ImageDataset:
    """Images and labels from an `.npz` file (read without pickle). Keys: x_train, y_train, x_test,
    y_test (Keras style), or images and labels, or x and y."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as error:
        raise DataFileError(f"{path}: not a readable .npz file ({error})") from None
    for (images_key, labels_key), test_keys in _NPZ_LAYOUTS:
        if images_key in arrays and labels_key in arrays:
            test = None
            if test_keys and all(key in arrays for key in test_keys):
                test = (arrays[test_keys[0]], arrays[test_keys[1]])
            try:
                return image_dataset(f"npz:{path}", arrays[images_key], arrays[labels_key], test=test)
            except ValueError as error:
                raise DataFileError(f"{path}: {error}") from None
    expected = "; ".join(" and ".join(keys) for keys, _ in _NPZ_LAYOUTS)
    raise DataFileError(f"{path}: found arrays {sorted(arrays)}, expected {expected}")


def load_text_file(path: str | Path) -> TextDataset:
    """A UTF-8 text file as a character-level corpus."""
    path = Path(path)
    try:
        text = _read_bytes(path).decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataFileError(f"{path}: not UTF-8 text ({error})") from None
    try:
        return text_dataset(f"text:{path}", text)
    except ValueError as error:
        raise DataFileError(f"{path}: {error}") from None
