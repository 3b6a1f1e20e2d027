"""MLPs on tabular datasets that ship with scikit-learn (no download): regression on standardized
targets, and classification. Features are standardized with the training split's statistics."""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import jax
import numpy as np

from tasks.base import PARAMETERIZATIONS, TaskConfig, require_choice, require_positive_int
from tasks.datasets import split_indices
from tasks.models import ACTIVATIONS, MLP
from tasks.array_task import ArrayTask
from tasks.supervised import built_once, classification_loss_scale, supervised_task


def _sklearn(name: str):
    """A loader of (features, targets) from scikit-learn's bundled datasets (scikit-learn, imported only
    when a dataset is loaded, comes with `pip install 'lopt[train]'`)."""
    def load() -> tuple[np.ndarray, np.ndarray]:
        from checkpoints.optional import require  # here: the checkpoints package brings orbax

        datasets = require("sklearn.datasets", f"the {name!r} dataset", "train")
        return getattr(datasets, f"load_{name}")(return_X_y=True)
    return load


# Regression: name -> loader of (features, float targets).
TABULAR_DATASETS = {"diabetes": _sklearn("diabetes")}  # 442 patients, 10 features, disease progression after a year
# Classification: name -> loader of (features, class ids). Small enough that an MLP overfits them within
# a few hundred steps: what makes held-out loss part of what an optimizer is judged on.
TABULAR_CLASSIFICATION_DATASETS = {
    "breast_cancer": _sklearn("breast_cancer"),  # 569 tumours, 30 features, benign or malignant
    "wine": _sklearn("wine"),  # 178 wines, 13 chemical features, 3 cultivars
}


@functools.lru_cache(maxsize=8)
def tabular_device_data(dataset: str):
    """Splits of a tabular dataset as device arrays, features standardized with the training split's mean
    and std. Regression targets are standardized the same way (an untrained model that predicts 0 has a
    loss of about 1); class ids are kept."""
    classification = dataset in TABULAR_CLASSIFICATION_DATASETS
    features, targets = (TABULAR_CLASSIFICATION_DATASETS if classification else TABULAR_DATASETS)[dataset]()
    parts = split_indices(len(targets))
    train_x, train_y = features[parts["train"]], targets[parts["train"]]
    x_mean, x_std = train_x.mean(axis=0), np.where(train_x.std(axis=0) > 0, train_x.std(axis=0), 1.0)
    if classification:
        targets = targets.astype(np.int32)
    else:
        targets = ((targets - train_y.mean()) / (train_y.std() or 1.0)).astype(np.float32)
    with jax.ensure_compile_time_eval():  # concrete arrays even when first asked for inside a trace
        return jax.device_put({split: {"input": ((features[index] - x_mean) / x_std).astype(np.float32),
                                       "target": targets[index]}
                               for split, index in parts.items()})


@dataclasses.dataclass(frozen=True)
class _TabularMLPConfig(TaskConfig):
    """The fields every tabular task has (a subclass gives `dataset` its default, which keeps its place
    first, and `datasets`, the sets it may name)."""

    dataset: str = ""
    width: int = 64  # units of every hidden layer
    depth: int = 2  # number of hidden layers
    activation: str = "relu"  # one of tasks.models.ACTIVATIONS
    batch_size: int = 32  # examples a training step
    parameterization: str = "mup"  # "mup" or "sp" (standard)

    datasets: ClassVar[dict] = {}

    def __post_init__(self):
        require_choice(self, "dataset", tuple(self.datasets))
        require_positive_int(self, "width", "depth", "batch_size")
        require_choice(self, "activation", tuple(ACTIVATIONS))
        require_choice(self, "parameterization", PARAMETERIZATIONS)

    def _task(self, num_outputs: int, loss: str, loss_scale: float) -> ArrayTask:
        data = tabular_device_data(self.dataset)
        model = MLP(width=self.width, depth=self.depth, num_outputs=num_outputs, activation=self.activation,
                    parameterization=self.parameterization)
        return supervised_task(self, model, data, data["train"]["input"].shape[1:], loss, loss_scale)


@dataclasses.dataclass(frozen=True)
class TabularRegressionConfig(_TabularMLPConfig):
    """An MLP regressor on a scikit-learn tabular dataset; mean squared error on standardized targets."""

    kind = "tabular_regression"
    datasets = TABULAR_DATASETS
    dataset: str = "diabetes"  # one of tasks.tabular.TABULAR_DATASETS

    @built_once
    def build(self) -> ArrayTask:
        return self._task(1, "mse", 1.0)


@dataclasses.dataclass(frozen=True)
class TabularClassificationConfig(_TabularMLPConfig):
    """An MLP classifier on a scikit-learn tabular dataset; cross-entropy."""

    kind = "tabular_classification"
    datasets = TABULAR_CLASSIFICATION_DATASETS
    dataset: str = "breast_cancer"  # one of tasks.tabular.TABULAR_CLASSIFICATION_DATASETS

    @built_once
    def build(self) -> ArrayTask:
        num_classes = int(np.max(np.asarray(tabular_device_data(self.dataset)["train"]["target"]))) + 1
        return self._task(num_classes, "cross_entropy", classification_loss_scale(num_classes))
