"""python -m meta_train [--config NAME] [--workdir DIR] [--set FIELD=VALUE ...] [--resume | --force]
                        [--no-compare] [--coordinator HOST:PORT --num-processes N --process-id I]

Meta-trains a learned optimizer from a named preset, saves it for `lopt.load`, and compares it with
tuned Adam, warmup-cosine AdamW and Muon on a held-out task. With no arguments: the default preset,
minutes on a 2-core CPU. With a process layout (flags, their environment variables, or a cluster
manager that JAX detects), one such command per process meta-trains one run over all their devices.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from checkpoints.files import enable_compilation_cache
from meta_train.config import (PRESET_DESCRIPTIONS, PRESETS, ConfigError, describe_fields, preset, resolve_own_objects,
                               with_overrides)
from meta_train import distributed
from meta_train.checkpointing import WorkdirError
from meta_train.train import MetaTrainingError, export_checkpoint, meta_train


def _parser() -> argparse.ArgumentParser:
    summaries = _preset_summaries()
    width = max(map(len, summaries))
    presets = "\n".join(f"  {name:{width}s} {text}" for name, text in summaries.items())
    parser = argparse.ArgumentParser(
        prog="python -m meta_train", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Meta-train a learned optimizer with PES, ES or truncated backprop.",
        epilog=f"presets:\n{presets}\n\nThe workdir receives config.json, checkpoints/ (orbax), tensorboard/ "
               "(tensorboard --logdir WORKDIR/tensorboard), optimizer/ (lopt.load reads it) and comparison.json. "
               "--fields lists every config field with its comment.")
    parser.add_argument("--config", default="default", help="preset name (default: %(default)s)")
    parser.add_argument("--workdir", default="workdir", help="output directory (default: %(default)s)")
    parser.add_argument("--set", dest="assignments", action="extend", nargs="+", default=[], metavar="FIELD=VALUE",
                        help="change config fields, e.g. --set outer_steps=500 curriculum=regret (repeatable)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true",
                       help="continue the run in --workdir from its newest readable checkpoint")
    group.add_argument("--force", action="store_true",
                       help="start over in a --workdir that holds another run (its checkpoints are deleted)")
    parser.add_argument("--fields", action="store_true",
                        help="list every config field with its value in --config (and --set) and its comment, and exit")
    parser.add_argument("--no-compare", action="store_true", help="skip the comparison with the tuned baselines at the end")
    group = parser.add_argument_group(
        "several processes", "one command per process, the same but for --process-id; the workdir must be one "
        "directory that every process sees (a shared file system across machines). Under a cluster manager "
        "that JAX detects (SLURM, Open MPI), none of these is needed")
    group.add_argument("--coordinator", metavar="HOST:PORT",
                       help="address of process 0, where the group meets ($JAX_COORDINATOR_ADDRESS)")
    group.add_argument("--num-processes", type=int, metavar="N", help="processes in the group ($JAX_NUM_PROCESSES)")
    group.add_argument("--process-id", type=int, metavar="I", help="this process's index, 0..N-1 ($JAX_PROCESS_ID)")
    group.add_argument("--distributed-timeout", type=int, default=distributed.DEFAULT_TIMEOUT, metavar="SECONDS",
                       help="how long the group may take to assemble, and a silent process to be noticed "
                            "(default: %(default)s)")
    parser.add_argument("--export", nargs="?", const=-1, type=int, metavar="STEP",
                        help="write the theta of --workdir's newest checkpoint (or of STEP) for lopt.load, to "
                             "WORKDIR/optimizer_step_N, and exit: evaluate a run while it goes on")
    return parser


def _preset_summaries() -> dict[str, str]:
    return {name: PRESET_DESCRIPTIONS.get(name, "") for name in PRESETS}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    enable_compilation_cache()
    try:
        if args.fields:  # the values of the preset given with --config, --set applied
            print(describe_fields(with_overrides(preset(args.config), args.assignments)))
            return 0
        if args.export is not None:  # one process's job, with or without a layout
            export_checkpoint(args.workdir, None if args.export == -1 else args.export)
            return 0
        # Bad input is refused before the process waits for a group.
        config = with_overrides(preset(args.config), args.assignments)
        layout = distributed.ProcessLayout.from_flags(args.coordinator, args.num_processes, args.process_id,
                                                      args.distributed_timeout)
        if not layout.several:  # one process: the user's own objects too, before anything is touched
            resolve_own_objects(config)
    except (ConfigError, WorkdirError, distributed.DistributedError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        distributed.join(layout)
        resolve_own_objects(config)  # a group's processes import the user's module only once joined
        meta_train(config, args.workdir, resume=args.resume, force=args.force, compare=not args.no_compare,
                   preset=args.config)
    except (ConfigError, WorkdirError, MetaTrainingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except distributed.DistributedError as error:
        print(f"error: {error}", file=sys.stderr)
        distributed.exit_now(2)
    except KeyboardInterrupt:
        again = ["--config", args.config, "--workdir", args.workdir]
        for flag, value in (("--coordinator", args.coordinator), ("--num-processes", args.num_processes),
                            ("--process-id", args.process_id)):
            again += [flag, str(value)] if value is not None else []
        again += [part for field in args.assignments for part in ("--set", field)] + ["--resume"]
        print(f"\ninterrupted; `python -m meta_train {shlex.join(again)}` continues from the last checkpoint",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
