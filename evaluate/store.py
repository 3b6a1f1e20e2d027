"""Finished runs on disk, one JSON file each, named by a hash of everything that determines the run
(task config, optimizer rule and hyperparameters, seed, budget, record stride). They live in a cache
shared by every sweep, so no run is trained twice and an interrupted sweep resumes where it stopped.
The shards of a sweep also put their runs in the workdir, which then holds all that the summary is
built from, whichever machine builds it."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import tasks
from checkpoints.files import write_atomically
from evaluate.optimizers import Candidate, EvalOptimizer
from evaluate.runner import Curves
from tasks.datasets import HELD_OUT_EXAMPLES, HELD_OUT_WINDOWS

# Bumped whenever a change of code changes what a run records: in evaluate/, and in the tasks' models,
# data preparation or the optimizers' update rules (the test suite keeps a fingerprint of a run; see
# tests/test_evaluate.py).
STORE_VERSION = 3  # 3: a conv net's steps on CPU dispatched from Python (tasks.steps_from_python)
DEFAULT_CACHE = Path(os.environ.get("LOPT_BASELINE_CACHE", Path.home() / ".cache" / "lopt" / "baselines"))
RUNS_DIR = "runs"  # a sharded sweep's runs, in its workdir


def data_fingerprint(config: tasks.TaskConfig) -> list | None:
    """For a task on the user's files ("npz:FILE", "idx:DIR", ...): their absolute paths, sizes and
    modification times, so a run on other or edited files is never taken from the cache."""
    dataset = getattr(config, "dataset", "")
    if ":" not in dataset:
        return None  # the shipped datasets never change under a given version
    root = Path(dataset.split(":", 1)[1]).expanduser().absolute()
    files = sorted(root.rglob("*")) if root.is_dir() else [root]
    return [[str(path), path.stat().st_size, path.stat().st_mtime_ns] for path in files if path.is_file()]


def run_key(config: tasks.TaskConfig, optimizer: EvalOptimizer, candidate: Candidate, seed: int,
            num_steps: int, stride: int, group: list[list[Any]]) -> dict[str, Any]:
    """`group` is the [candidate label, seed] of every row of the program the run is vmapped in: a run
    computed in another group differs in rounding, and is not the same run."""
    return {"version": STORE_VERSION, "task": config.to_dict(), "data": data_fingerprint(config),
            "optimizer": optimizer.identity, "candidate": candidate.label, "seed": seed, "steps": num_steps,
            "stride": stride, "held_out": [HELD_OUT_EXAMPLES, HELD_OUT_WINDOWS], "group": group}


class RunStore:
    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    def _path(self, key: dict[str, Any]) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
        return self.directory / f"{digest}.json"

    def get(self, key: dict[str, Any]) -> Curves | None:
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None  # unreadable: the run is simply done again (files are written atomically)
        if not isinstance(record, dict) or record.get("key") != key or "curves" not in record:
            return None
        try:
            os.utime(path)  # its last use, which prune_cache reads
        except OSError:
            pass  # a read-only cache is still read
        return Curves.from_dict(record["curves"])

    def put(self, key: dict[str, Any], curves: Curves) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        write_atomically(self._path(key), json.dumps({"key": key, "curves": curves.to_dict()}))


class CacheAndWorkdir:
    """The store of a sweep: the shared cache first, then the sweep's workdir (where the shards of a sweep
    on other machines leave their runs). With `mirror`, what is put goes to both, so a
    sharded sweep's workdir holds every run its summary needs."""

    def __init__(self, cache: RunStore, workdir: RunStore, mirror: bool):
        self.cache, self.workdir, self.mirror = cache, workdir, mirror

    def get(self, key: dict[str, Any]) -> Curves | None:
        found = self.cache.get(key)
        return found if found is not None else self.workdir.get(key)

    def put(self, key: dict[str, Any], curves: Curves) -> None:
        self.cache.put(key, curves)
        if self.mirror:
            self.workdir.put(key, curves)


def _matches(key: Any, optimizer: str | None, task: str | None) -> bool:
    if not isinstance(key, dict):
        return False
    # A baseline's or user optimizer's key begins "NAME: " (see EvalOptimizer.identity); a task object's
    # record holds its name (evaluate.task_objects.ObjectTaskConfig).
    if optimizer is not None and not str(key.get("optimizer", "")).startswith(f"{optimizer}: "):
        return False
    record = key.get("task") if isinstance(key.get("task"), dict) else {}
    return task is None or (record.get("kind") == "object" and record.get("name") == task)


def clear_cache(workdir: str | os.PathLike | None = None, *, optimizer: str | None = None, task: str | None = None,
                cache_dir: str | os.PathLike | None = None) -> int:
    """Removes the stored runs of an optimizer (a baseline's name without "@RATE", or an
    `evaluate.optimizer`'s name: every rate and version of it) and/or of a task passed as an object (its
    name), from the shared cache (cache_dir, default DEFAULT_CACHE) and from the runs a sharded sweep
    left in workdir; given both, only the runs of that optimizer on that task. Returns how many were
    removed: the next sweep trains them anew. What a run is stored under is what a user can change: the
    name, and for `evaluate.optimizer` its rates and version; for a task object its name, class, config,
    parameter shapes and evaluation, never their code. A learned optimizer's runs need no clearing: they
    are stored under hashes of its theta and of its rule's code, which an edit of either changes."""
    if optimizer is None and task is None:
        raise ValueError("clear_cache: name an optimizer=, a task= or both")
    directories = [Path(cache_dir or DEFAULT_CACHE)] + ([Path(workdir) / RUNS_DIR] if workdir is not None else [])
    removed = 0
    for directory in directories:
        for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
            try:
                key = json.loads(path.read_text(encoding="utf-8")).get("key")
            except (OSError, ValueError, AttributeError):
                continue  # unreadable or not a run: not ours to judge
            if _matches(key, optimizer, task):
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def prune_cache(unused_days: float, cache_dir: str | os.PathLike | None = None) -> int:
    """Removes from the shared cache (cache_dir, default DEFAULT_CACHE) the runs no sweep has written or
    read in `unused_days` days (0: every run), and every run an older STORE_VERSION wrote (no key of this
    code reads them; a newer version's are kept). Returns how many were removed. A read refreshes a run
    where this user may set its modification time; a file this user may not remove is left. Without
    pruning the cache only grows: an edited rule's or task's runs are stored under new keys."""
    if not (isinstance(unused_days, (int, float)) and unused_days >= 0):
        raise ValueError(f"prune_cache: unused_days={unused_days!r} must be a number of days, 0 or more")
    directory, cutoff, removed = Path(cache_dir or DEFAULT_CACHE), time.time() - unused_days * 86400, 0
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            key = json.loads(path.read_text(encoding="utf-8")).get("key")
            last_used = path.stat().st_mtime
        except (OSError, ValueError, AttributeError):
            continue  # unreadable or not a run: not ours to judge
        if not isinstance(key, dict):
            continue
        version = key.get("version")
        if last_used <= cutoff or (isinstance(version, int) and version < STORE_VERSION):
            try:
                path.unlink(missing_ok=True)
                removed += 1
            except OSError:
                continue  # another user's file in a shared cache
    return removed
