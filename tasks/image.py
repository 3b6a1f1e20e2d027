"""Image tasks on the offline image datasets or files on disk: MLP and conv net classifiers, and an MLP
autoencoder."""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import ClassVar

import jax

from tasks.base import PARAMETERIZATIONS, TaskConfig, require_choice, require_positive_int
from tasks.datasets import check_image_dataset_name, load_image_dataset
from tasks.models import ACTIVATIONS, MLP, AutoencoderMLP, ConvNet
from tasks.array_task import ArrayTask
from tasks.supervised import built_once, classification_loss_scale, supervised_task


@functools.lru_cache(maxsize=16)
def image_device_data(dataset: str, image_size: int | None):
    """The splits of an image dataset as device arrays, uploaded once per process."""
    with jax.ensure_compile_time_eval():  # concrete arrays even when first asked for inside a trace
        arrays = load_image_dataset(dataset, image_size).device_arrays()
    return {split: {"input": a["image"], "target": a["label"]} for split, a in arrays.items()}


@functools.lru_cache(maxsize=16)
def autoencoder_device_data(dataset: str, image_size: int | None):
    """The images of each split as both input and target (labels unused)."""
    return {split: {"input": arrays["input"], "target": arrays["input"]}
            for split, arrays in image_device_data(dataset, image_size).items()}


def _validate_image_fields(config, *sizes: str) -> None:
    """The fields every image task has, and the positive integer `sizes` of its model."""
    check_image_dataset_name(config.dataset)
    if config.image_size is not None:
        require_positive_int(config, "image_size")
    require_positive_int(config, *sizes, "batch_size")
    require_choice(config, "activation", tuple(ACTIVATIONS))
    require_choice(config, "parameterization", PARAMETERIZATIONS)


def _image_task(config, model_type) -> ArrayTask:
    dataset = load_image_dataset(config.dataset, config.image_size)
    model = model_type(width=config.width, depth=config.depth, num_outputs=dataset.num_classes,
                       activation=config.activation, parameterization=config.parameterization)
    return supervised_task(config, model, image_device_data(config.dataset, config.image_size), dataset.image_shape,
                           "cross_entropy", classification_loss_scale(dataset.num_classes))


@dataclasses.dataclass(frozen=True)
class ImageClassifierConfig(TaskConfig):
    """A classifier on an image dataset: the fields of the MLP and the conv net, whose subclasses name
    the model (`model`) and change the defaults of their sizes."""

    model: ClassVar[type]
    dataset: str = "mnist"  # "digits", "mnist", "idx:DIR", "cifar10:DIR" or "npz:FILE"
    image_size: int | None = 14  # images resized to this many pixels a side; None keeps their size
    width: int = 128  # units (MLP) or channels (conv net) of every hidden layer
    depth: int = 2  # number of hidden layers (MLP) or 3x3 convolutions (conv net)
    activation: str = "relu"  # one of tasks.models.ACTIVATIONS
    batch_size: int = 128  # examples a training step
    parameterization: str = "mup"  # "mup" or "sp" (standard)

    def __post_init__(self):
        _validate_image_fields(self, "width", "depth")

    @built_once
    def build(self) -> ArrayTask:
        return _image_task(self, self.model)


@dataclasses.dataclass(frozen=True)
class ImageMLPConfig(ImageClassifierConfig):
    """An MLP classifier on an image dataset."""

    kind = "image_mlp"
    model = MLP


@dataclasses.dataclass(frozen=True)
class ConvConfig(ImageClassifierConfig):
    """A small conv net classifier on an image dataset."""

    kind = "image_conv"
    model = ConvNet
    width: int = 16  # channels of every convolution
    batch_size: int = 64


@dataclasses.dataclass(frozen=True)
class MaxPoolConvConfig(ConvConfig):
    """A conv net as practitioners write one: wider, max-pooling after each convolution, global average
    pooling before the readout."""

    kind = "image_conv_maxpool"
    model = functools.partial(ConvNet, pool="max")
    width: int = 64  # channels of every convolution
    depth: int = 3  # 3x3 convolutions


@dataclasses.dataclass(frozen=True)
class ImageAutoencoderConfig(TaskConfig):
    """An MLP autoencoder reconstructing images (standardized pixels) through a narrow code; the loss is
    the mean squared error per pixel."""

    kind = "image_autoencoder"
    dataset: str = "mnist"  # "digits", "mnist", "idx:DIR", "cifar10:DIR" or "npz:FILE"
    image_size: int | None = 14  # images resized to this many pixels a side; None keeps their size
    width: int = 128  # units of the encoder's and the decoder's hidden layer
    code_size: int = 16  # units of the code between them
    activation: str = "relu"  # one of tasks.models.ACTIVATIONS
    batch_size: int = 64  # images a training step
    parameterization: str = "mup"  # "mup" or "sp" (standard)

    def __post_init__(self):
        _validate_image_fields(self, "width", "code_size")

    @built_once
    def build(self) -> ArrayTask:
        dataset = load_image_dataset(self.dataset, self.image_size)
        model = AutoencoderMLP(width=self.width, code_size=self.code_size,
                               num_outputs=math.prod(dataset.image_shape), activation=self.activation,
                               parameterization=self.parameterization)
        # Pixels are standardized, so predicting 0 everywhere (a muP model's start) has a loss of about 1.
        return supervised_task(self, model, autoencoder_device_data(self.dataset, self.image_size),
                               dataset.image_shape, "mse", 1.0)
