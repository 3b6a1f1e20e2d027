"""Learned-optimizer checkpoints from the command line.

    python -m lopt convert SRC DST    a learned_optimization checkpoint (SRC: its params file or the
                                      directory holding params and config.gin) written in our format
"""

from __future__ import annotations

import argparse
import sys

from checkpoints import CheckpointError
from lopt.gin_config import GinError
from lopt.loading import convert_learned_optimization, load_optimizer
from lopt.registry import SpecError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lopt", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert", help="write a learned_optimization checkpoint in our format")
    convert.add_argument("source", help="learned_optimization params file, or the directory holding params and config.gin")
    convert.add_argument("destination", help="directory for the converted checkpoint (replaced if it is one of ours)")
    args = parser.parse_args(argv)
    try:
        directory = convert_learned_optimization(args.source, args.destination)
    except (CheckpointError, SpecError, GinError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    optimizer, _, _ = load_optimizer(directory)
    print(f"wrote {directory}: {optimizer.architecture} {optimizer.settings()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
