"""Regression on a tabular dataset that ships with scikit-learn: an MLP on standardized features."""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np

from tasks.base import PARAMETERIZATIONS, TaskConfig, require_choice, require_positive_int
from tasks.datasets import split_indices
from tasks.models import ACTIVATIONS, MLP
from tasks.supervised import SupervisedTask


def _diabetes() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_diabetes

    features, targets = load_diabetes(return_X_y=True)
    return features, targets


# Regression datasets bundled in scikit-learn's wheel (no download): name -> loader of (features, targets).
TABULAR_DATASETS = {"diabetes": _diabetes}  # 442 patients, 10 features, disease progression after a year


@functools.lru_cache(maxsize=8)
def tabular_device_data(dataset: str):
    """Splits of a tabular dataset as device arrays; features and targets standardized with the training
    split's mean and std, so an untrained model that predicts 0 has a loss of about 1."""
    features, targets = TABULAR_DATASETS[dataset]()
    parts = split_indices(len(targets))
    train_x, train_y = features[parts["train"]], targets[parts["train"]]
    x_mean, x_std = train_x.mean(axis=0), np.where(train_x.std(axis=0) > 0, train_x.std(axis=0), 1.0)
    y_mean, y_std = train_y.mean(), train_y.std() or 1.0
    with jax.ensure_compile_time_eval():  # concrete arrays even when first asked for inside a trace
        return jax.device_put({split: {"input": ((features[index] - x_mean) / x_std).astype(np.float32),
                                       "target": ((targets[index] - y_mean) / y_std).astype(np.float32)}
                               for split, index in parts.items()})


@dataclasses.dataclass(frozen=True)
class TabularRegressionConfig(TaskConfig):
    """An MLP regressor on a scikit-learn tabular dataset; mean squared error on standardized targets."""

    kind = "tabular_regression"
    dataset: str = "diabetes"  # one of tasks.tabular.TABULAR_DATASETS
    width: int = 64  # units of every hidden layer
    depth: int = 2  # number of hidden layers
    activation: str = "relu"  # one of tasks.models.ACTIVATIONS
    batch_size: int = 32  # examples a training step
    parameterization: str = "mup"  # "mup" or "sp" (standard)

    def __post_init__(self):
        require_choice(self, "dataset", tuple(TABULAR_DATASETS))
        require_positive_int(self, "width", "depth", "batch_size")
        require_choice(self, "activation", tuple(ACTIVATIONS))
        require_choice(self, "parameterization", PARAMETERIZATIONS)

    def build(self) -> SupervisedTask:
        data = functools.partial(tabular_device_data, self.dataset)
        model = MLP(width=self.width, depth=self.depth, num_outputs=1, activation=self.activation,
                    parameterization=self.parameterization)
        num_features = data()["train"]["input"].shape[1]
        return SupervisedTask(self, model, data, (num_features,), self.batch_size, None, 1.0)
