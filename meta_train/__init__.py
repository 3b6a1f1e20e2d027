"""Meta-training of learned optimizers: truncated unrolls, PES / ES / truncated backprop, the outer loop.

    config = meta_train.with_overrides(meta_train.preset("default"), ["outer_steps=500"])
    result = meta_train.meta_train(config, "workdir")   # result.optimizer_path is what lopt.load reads

Your own tasks: `meta_train.meta_train(config, "workdir", family=tasks.family([...]), eval_task=task)`,
or by import path, which the command line, --resume and several processes rebuild from the record:
`with_overrides(config, ["task_family=my_module:FAMILY", "eval_task=my_module:HELD_OUT"])`.
"""

from meta_train.config import PRESETS, ConfigError, MetaTrainConfig, preset, with_overrides
from meta_train.estimators import ESTIMATORS, PES, Estimator, FullES, TruncatedBackprop, TruncatedES
from meta_train.sharding import task_mesh
from meta_train.train import MetaTrainingError, MetaTrainResult, meta_train
from meta_train.trainer import MetaState, MetaTrainer
from meta_train.truncation import ConstantLength, LogUniformLength
from meta_train.unroll import Unroller
