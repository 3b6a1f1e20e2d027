"""Offline datasets with deterministic splits, loaders for files on disk, and on-device batching."""

from tasks.datasets.arrays import (
    ImageDataset,
    HELD_OUT_EXAMPLES,
    HELD_OUT_WINDOWS,
    TextDataset,
    held_out_examples,
    held_out_windows,
    image_dataset,
    resize_images,
    sample_examples,
    sample_windows,
    split_indices,
    text_dataset,
)
from tasks.datasets.builtin import (
    check_image_dataset_name,
    check_text_dataset_name,
    image_dataset_names,
    load_image_dataset,
    load_text_dataset,
    shakespeare_play_files,
    text_dataset_names,
)
from tasks.datasets.files import (
    DataFileError,
    load_cifar10_directory,
    load_idx_directory,
    load_npz,
    load_text_file,
    read_idx,
)
