"""The meta-training state on disk: an orbax CheckpointManager in WORKDIR/checkpoints keeps the last K
states; WORKDIR/config.json records the config that the run belongs to.

orbax stores neither typed PRNG keys nor zero-size arrays (the unused fields of some optimizer
states), so the saved tree holds the keys' raw data and a one-element placeholder for each empty array;
`restored` turns them back against a template of the live state.

With several processes every process takes part in each save and restore (orbax writes each array's
shards from the process that holds them, and process 0 commits the step); the placeholders are NumPy
arrays, which orbax writes from process 0 alone.
"""

from __future__ import annotations

import json
import shlex
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from checkpoints.files import write_atomically
from meta_train import distributed
from meta_train.config import BOOKKEEPING_FIELDS, ConfigError, MetaTrainConfig

CONFIG_FILE = "config.json"
TASKS_FILE = "tasks.json"  # the family's tasks, each bucket's configs in order, as the run trained them
CHECKPOINT_DIR = "checkpoints"
OPTIMIZER_DIR = "optimizer"  # the final theta, in the format lopt.load reads
DAMAGED_DIR = "damaged_checkpoints"


class WorkdirError(ValueError):
    """A workdir that holds something this run must not overwrite, or nothing to resume."""


def _is_key(x) -> bool:
    return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def savable(state: Any) -> Any:
    def leaf(x):
        if _is_key(x):
            return jax.random.key_data(x)
        if x.size == 0:
            return np.zeros((1,), x.dtype)
        return x
    return jax.tree.map(leaf, state)


def restored(saved: Any, template: Any) -> Any:
    def leaf(s, t):
        if _is_key(t):
            return jax.random.wrap_key_data(s)
        if t.size == 0:
            return jnp.zeros(t.shape, t.dtype, device=t.sharding)
        return s
    return jax.tree.map(leaf, saved, template)


def manager(workdir: Path, keep: int) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    # The handler named up front lets `item_metadata` read a checkpoint before anything is restored.
    return ocp.CheckpointManager(workdir / CHECKPOINT_DIR, options=options,
                                 item_handlers=ocp.StandardCheckpointHandler())


def save(checkpoint_manager: ocp.CheckpointManager, step: int, state: Any) -> None:
    """Starts writing state (the device-to-host copy happens now; the file writing goes on in the
    background, and orbax renames the step's directory into place only once it is complete)."""
    if not checkpoint_manager.save(step, args=ocp.args.StandardSave(savable(state))):
        raise RuntimeError(f"orbax declined to save step {step} in {checkpoint_manager.directory} "
                           f"(it holds steps {sorted(checkpoint_manager.all_steps())})")


def named_arrays(tree: Any) -> dict[str, Any]:
    """{array name: array} of a savable state or a restored one, each named as orbax names it (its
    dotted path): a NamedTuple's fields and orbax's dicts give the same names."""
    def name(path) -> str:
        return ".".join(str(getattr(key, "name", getattr(key, "key", getattr(key, "idx", key)))) for key in path)
    return {name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def layout(state: Any) -> dict[str, tuple[int, ...]]:
    """{array name: shape} of a savable state."""
    return {name: tuple(leaf.shape) for name, leaf in named_arrays(state).items()}


def saved_layout(checkpoint_manager: ocp.CheckpointManager, step: int) -> dict[str, tuple[int, ...]] | None:
    """`layout` of a checkpoint as its metadata records it; None if the metadata does not read."""
    try:
        metadata = checkpoint_manager.item_metadata(step)
        if metadata is None:
            return None
        return {leaf.name: tuple(leaf.shape) for leaf in jax.tree.leaves(getattr(metadata, "tree", metadata))}
    except Exception:  # a damaged checkpoint: the restore reports it
        return None


def check_layout(checkpoint_manager: ocp.CheckpointManager, step: int, expected: dict) -> None:
    """Refuses a checkpoint whose arrays are not those of this version's state (written by another
    version of meta_train): it is intact, so it is neither read nor moved aside as damaged."""
    saved = saved_layout(checkpoint_manager, step)
    if saved is None or saved == expected:
        return
    differences = [f"{name}: {saved.get(name, 'absent')} there, {expected.get(name, 'absent')} here"
                   for name in sorted(saved.keys() | expected.keys()) if saved.get(name) != expected.get(name)]
    raise WorkdirError(
        f"the checkpoint at step {step} in {checkpoint_manager.directory} holds a meta-training state of "
        f"another layout ({len(differences)} arrays differ, e.g. {'; '.join(differences[:2])}): it was written "
        "by another version of meta_train. Resume it with that version, or start over with --force")


def restore_newest_good(checkpoint_manager: ocp.CheckpointManager, template: Any,
                        log: Callable[[str], None]) -> Any | None:
    """The newest checkpoint that reads, placed like template; a damaged one is reported and the one
    before it tried, one of another version's state layout refused. None if there is no checkpoint."""
    steps = sorted(checkpoint_manager.all_steps(), reverse=True)
    if not steps:
        return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, savable(template))
    for step in steps:
        check_layout(checkpoint_manager, step, layout(abstract))
        try:
            saved = checkpoint_manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as error:  # orbax and tensorstore raise many types for a damaged file
            # Moved aside, not deleted (someone may want to look at it), and out of orbax's way: orbax
            # saves no step at or below its newest, so a damaged newest step would block every save.
            aside = Path(checkpoint_manager.directory).parent / DAMAGED_DIR / f"{step}-{time.time_ns()}"
            if distributed.is_main():
                aside.parent.mkdir(exist_ok=True)
                shutil.move(str(Path(checkpoint_manager.directory) / str(step)), str(aside))
            distributed.barrier(f"checkpoint {step} moved aside")
            checkpoint_manager.reload()
            log(f"checkpoint at step {step} is unreadable ({type(error).__name__}: {str(error)[:200]}); "
                f"moved it to {aside} and falling back to the one before it")
            continue
        log(f"resuming from the checkpoint at step {step}")
        return restored(saved, template)
    raise WorkdirError(f"--resume: none of the checkpoints at steps {steps} in "
                       f"{checkpoint_manager.directory} can be read")


def read_saved(checkpoint_manager: ocp.CheckpointManager, step: int) -> Any:
    """A checkpoint's saved tree as orbax gives it back (dicts), every array on this process's first
    device, whatever devices and processes wrote it."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    metadata = checkpoint_manager.item_metadata(step)
    target = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
                          getattr(metadata, "tree", metadata))
    return checkpoint_manager.restore(step, args=ocp.args.StandardRestore(target))


def restore_theta(workdir: Path, step: int | None = None) -> tuple[int, Any]:
    """(step, theta) of a checkpoint, the newest if step is None, read without building the trainer
    (theta holds no keys or empty arrays)."""
    with ocp.CheckpointManager(workdir / CHECKPOINT_DIR, item_handlers=ocp.StandardCheckpointHandler()
                               ) as checkpoint_manager:
        steps = sorted(checkpoint_manager.all_steps())
        if not steps:
            raise WorkdirError(f"{workdir} holds no checkpoint yet")
        if step is None:
            step = steps[-1]
        elif step not in steps:
            raise WorkdirError(f"{workdir} holds no checkpoint of step {step}; it holds steps {steps}")
        saved = read_saved(checkpoint_manager, step)
    return step, saved["theta"]


def check_workdir(workdir: Path, config: MetaTrainConfig, *, resume: bool, force: bool) -> None:
    """Refuses to mix runs: a workdir of another config, or one that already holds this run without
    --resume, is left untouched unless `force` says to start over."""
    config_path = workdir / CONFIG_FILE
    if not config_path.exists():
        # Even --force starts over only on a meta-training run: a mistyped path loses nothing.
        if workdir.exists() and any(workdir.iterdir()):
            raise WorkdirError(f"{workdir} is not empty and holds no meta-training run ({CONFIG_FILE} is "
                               "missing); use an empty or new --workdir")
        return
    if force:
        return
    try:
        saved = MetaTrainConfig.from_record(json.loads(config_path.read_text())).to_record()
    except (json.JSONDecodeError, ConfigError, TypeError) as error:
        raise WorkdirError(f"{config_path} is corrupt or of no config this version reads ({error}); "
                           "use --force to start over") from None
    current = config.to_record()
    changed = sorted(name for name in saved.keys() | current.keys()
                     if saved.get(name) != current.get(name) and name not in BOOKKEEPING_FIELDS)
    if changed:
        raise WorkdirError(
            f"{workdir} holds a run of another config (it differs in "
            + ", ".join(f"{name}: {saved.get(name)!r} there, {current.get(name)!r} here" for name in changed)
            + "); use another --workdir, or --force to start over there"
            + (f" (to meta-train its result further: init_from={shlex.quote(str(workdir / OPTIMIZER_DIR))} "
               "in another workdir)"
               if (workdir / OPTIMIZER_DIR).is_dir() else ""))
    if not resume and (workdir / CHECKPOINT_DIR).exists():
        raise WorkdirError(f"{workdir} already holds a run of this config: --resume continues it, "
                           "--force starts over")


def check_recorded_tasks(workdir: Path, task_configs) -> None:
    """Refuses to resume a run whose family now gives other tasks than it recorded (a user's family edited
    since, or another object under the same name): its checkpoints hold workers of those tasks."""
    path = workdir / TASKS_FILE
    if not path.exists():
        return
    recorded = json.loads(path.read_text())
    now = [config.to_dict() for config in task_configs]
    if json.loads(json.dumps(now)) != recorded:
        gone = [record.get("name") or json.dumps(record, sort_keys=True) for record in recorded if record not in now]
        raise WorkdirError(f"{workdir} holds a run on other tasks than its family gives now (recorded, not given "
                           f"now: {', '.join(map(str, gone)) or 'their order'}); use another --workdir, or --force "
                           "to start over there")


def write_tasks(workdir: Path, task_configs) -> None:
    write_atomically(workdir / TASKS_FILE, json.dumps([config.to_dict() for config in task_configs], indent=2))


def write_config(workdir: Path, config: MetaTrainConfig) -> None:
    write_atomically(workdir / CONFIG_FILE, config.to_json())
