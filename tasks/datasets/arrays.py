"""In-memory datasets with deterministic train / valid / test splits, and on-device batch sampling."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from tasks.base import SPLITS

# Fractions of examples held out for validation and test; the rest is training data.
VALID_FRACTION = 0.1
TEST_FRACTION = 0.1
# Seed of the split permutation: fixed, so every run and every machine sees the same splits.
SPLIT_SEED = 0


def split_indices(num_examples: int, seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
    """Disjoint index sets covering range(num_examples), the same for the same arguments."""
    order = np.random.default_rng(seed).permutation(num_examples)
    num_valid = int(round(num_examples * VALID_FRACTION))
    num_test = int(round(num_examples * TEST_FRACTION))
    if num_examples - num_valid - num_test < 1 or num_valid < 1 or num_test < 1:
        raise ValueError(f"{num_examples} examples are too few to split into train, valid and test")
    return {
        "test": np.sort(order[:num_test]),
        "valid": np.sort(order[num_test:num_test + num_valid]),
        "train": np.sort(order[num_test + num_valid:]),
    }


@dataclasses.dataclass(frozen=True, eq=False)
class ImageDataset:
    """Images in [0, 1] as float32 NHWC and integer labels, already split."""

    name: str
    images: dict[str, np.ndarray]  # split -> (N, H, W, C) float32
    labels: dict[str, np.ndarray]  # split -> (N,) int32
    num_classes: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images["train"].shape[1:])

    def device_arrays(self) -> dict[str, dict[str, jax.Array]]:
        """Splits as device arrays, standardized with the training set's mean and std."""
        mean = float(self.images["train"].mean())
        std = float(self.images["train"].std()) or 1.0
        return {
            split: {"image": jnp.asarray((self.images[split] - mean) / std, jnp.float32),
                    "label": jnp.asarray(self.labels[split], jnp.int32)}
            for split in SPLITS
        }


def image_dataset(name: str, images: np.ndarray, labels: np.ndarray,
                  test: tuple[np.ndarray, np.ndarray] | None = None) -> ImageDataset:
    """Splits images (N, H, W[, C], any numeric range) and labels (N,) into an ImageDataset.

    With `test` (images, labels) given, those are the test split (a dataset's official test set) and
    validation is carved from the rest; otherwise all three splits are carved from `images`.
    """
    images, labels = _checked_images(name, images, labels)
    if test is None:
        parts = split_indices(len(images))
        split_images = {s: images[i] for s, i in parts.items()}
        split_labels = {s: labels[i] for s, i in parts.items()}
    else:
        test_images, test_labels = _checked_images(name, *test)
        if test_images.shape[1:] != images.shape[1:]:
            raise ValueError(f"dataset {name!r}: test images are {test_images.shape[1:]}, "
                             f"training images {images.shape[1:]}")
        parts = split_indices(len(images))
        train = np.sort(np.concatenate([parts["train"], parts["test"]]))
        split_images = {"train": images[train], "valid": images[parts["valid"]], "test": test_images}
        split_labels = {"train": labels[train], "valid": labels[parts["valid"]], "test": test_labels}
    # Pixels to [0, 1] with the training split's range, the same map for every split.
    low, high = split_images["train"].min(), split_images["train"].max()
    scale = max(float(high - low), 1e-12)
    return ImageDataset(name=name, images={s: (x - low) / scale for s, x in split_images.items()},
                        labels=split_labels,
                        num_classes=int(max(y.max() for y in split_labels.values())) + 1)


def _checked_images(name: str, images, labels) -> tuple[np.ndarray, np.ndarray]:
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"dataset {name!r}: expected images (N, H, W[, C]) and N labels, "
                         f"got images {images.shape} and labels {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) and not np.all(labels == np.round(labels)):
        raise ValueError(f"dataset {name!r}: labels must be integers")
    labels = labels.astype(np.int32)
    if len(labels) and labels.min() < 0:
        raise ValueError(f"dataset {name!r}: labels must be non-negative, found {labels.min()}")
    if not np.all(np.isfinite(images)):
        raise ValueError(f"dataset {name!r}: images contain NaN or infinite values")
    return images, labels


def resize_images(dataset: ImageDataset, size: int) -> ImageDataset:
    """The dataset at size x size pixels (area-averaging, antialiased), or itself if already that size."""
    height, width, channels = dataset.image_shape
    if (height, width) == (size, size):
        return dataset
    resize = jax.jit(lambda x: jax.image.resize(x, (x.shape[0], size, size, channels), "linear",
                                                antialias=True))
    return dataclasses.replace(
        dataset, name=f"{dataset.name}_{size}x{size}",
        images={split: np.asarray(resize(jnp.asarray(x))) for split, x in dataset.images.items()})


@dataclasses.dataclass(frozen=True, eq=False)
class TextDataset:
    """A character-level corpus: contiguous train / valid / test token streams and the vocabulary."""

    name: str
    tokens: dict[str, np.ndarray]  # split -> (N,) int32
    vocab: str  # the characters, index = token id

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def device_arrays(self) -> dict[str, dict[str, jax.Array]]:
        return {split: {"tokens": jnp.asarray(self.tokens[split], jnp.int32)} for split in SPLITS}

    def decode(self, tokens) -> str:
        return "".join(self.vocab[int(t)] for t in tokens)


def text_dataset(name: str, text: str) -> TextDataset:
    """Splits text into contiguous blocks: the last 10% for test, the 10% before it for validation.

    Contiguous rather than shuffled, so no training window overlaps a held-out one.
    """
    if len(text) < 100:
        raise ValueError(f"text dataset {name!r} has {len(text)} characters; at least 100 are needed")
    vocab = "".join(sorted(set(text)))
    lookup = {char: index for index, char in enumerate(vocab)}
    tokens = np.fromiter((lookup[c] for c in text), np.int32, len(text))
    num_test = int(len(text) * TEST_FRACTION)
    num_valid = int(len(text) * VALID_FRACTION)
    train_end = len(text) - num_test - num_valid
    return TextDataset(name=name, vocab=vocab, tokens={
        "train": tokens[:train_end],
        "valid": tokens[train_end:train_end + num_valid],
        "test": tokens[train_end + num_valid:]})


def sample_examples(arrays: dict[str, jax.Array], key: jax.Array, batch_size: int) -> dict[str, jax.Array]:
    """batch_size random rows (with replacement) of every array; runs on device inside jit."""
    num_examples = jax.tree.leaves(arrays)[0].shape[0]
    index = jax.random.randint(key, (batch_size,), 0, num_examples)
    return jax.tree.map(lambda array: array[index], arrays)


# A held-out batch is the whole split up to this many examples, else a fixed sample of this many (enough
# for a validation loss whose spread between samples is small next to the gaps between optimizers).
HELD_OUT_EXAMPLES = 2048
# Windows of a text split in its held-out batch, evenly spaced over the split.
HELD_OUT_WINDOWS = 64
HELD_OUT_SEED = 1


def held_out_examples(arrays: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """The whole split when it has at most HELD_OUT_EXAMPLES rows, else a fixed sample of that many."""
    num_examples = jax.tree.leaves(arrays)[0].shape[0]
    if num_examples <= HELD_OUT_EXAMPLES:
        return arrays
    index = np.sort(np.random.default_rng(HELD_OUT_SEED).choice(num_examples, HELD_OUT_EXAMPLES, replace=False))
    return jax.tree.map(lambda array: array[index], arrays)


def held_out_windows(tokens: jax.Array, length: int) -> jax.Array:
    """HELD_OUT_WINDOWS windows of `length` tokens evenly spaced from the split's start to its end (all
    the windows there are, if fewer fit)."""
    if tokens.shape[0] < length:
        raise ValueError(f"a text split of {tokens.shape[0]} tokens is shorter than one window of {length}")
    starts = np.unique(np.linspace(0, tokens.shape[0] - length, HELD_OUT_WINDOWS).astype(np.int64))
    return tokens[starts[:, None] + np.arange(length)[None, :]]


def sample_windows(tokens: jax.Array, key: jax.Array, batch_size: int, length: int) -> jax.Array:
    """batch_size random windows of `length` consecutive tokens; runs on device inside jit."""
    if tokens.shape[0] < length:
        raise ValueError(f"a text split of {tokens.shape[0]} tokens is shorter than one window of {length}")
    starts = jax.random.randint(key, (batch_size,), 0, tokens.shape[0] - length + 1)
    return jax.vmap(lambda start: jax.lax.dynamic_slice_in_dim(tokens, start, length))(starts)
