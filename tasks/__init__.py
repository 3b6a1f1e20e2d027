"""Training tasks for learned optimizers: models in muP and standard parameterization on offline data.

    task = tasks.get_task("mlp_mnist_14x14", width=256)
    params = task.init(key)
    loss = task.loss(params, task.batch(task.data, key), key)
"""

from tasks.base import (
    PARAMETERIZATIONS,
    ROLES,
    SPLITS,
    ConfigError,
    Task,
    TaskConfig,
    TaskFamily,
)
from tasks.augment import REPARAM_LEVELS, Augmentation, AugmentedTask
from tasks.families import FixedTaskFamily, ImageMLPFamily, MixedFamily, QuadraticFamily
from tasks.image import ConvConfig, ImageAutoencoderConfig, ImageMLPConfig, MaxPoolConvConfig
from tasks.language import LanguageModelConfig, LanguageModelTask, RecurrentLMConfig
from tasks.procedural import QuadraticConfig, QuadraticTask, TeacherStudentConfig
from tasks.tabular import TabularClassificationConfig, TabularRegressionConfig
from tasks.registry import FAMILIES, TASKS, config_from_dict, get_family, get_task, task_config
from tasks.memory import TooLargeError
from tasks.train import TrainResult, steps_from_python, train_each, train_step
from tasks.array_task import ArrayTask, CustomTaskConfig, TaskError
from tasks.custom import from_functions
from tasks.custom_flax import from_flax
from tasks.custom_family import CustomFamily, family
