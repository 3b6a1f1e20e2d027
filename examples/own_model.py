"""Meta-train a learned optimizer on your own Flax model and data, then use and evaluate it.

    python -m examples.own_model --workdir runs/own_model [--outer-steps 200]

Nothing here is registered in the library: a Flax CNN of this file's own, on scikit-learn's 8x8 digits
(offline, in the `train` extra), at two widths, makes the meta-training family; a third width is the
held-out task. The command line names them by import path (`examples.own_model:FAMILY`), so the run
resumes (`--resume`), runs under several processes and records where its tasks came from like a
built-in run. Then the result loads with `lopt.load` and is compared with tuned Adam and tuned Lion.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import flax.linen as nn
import numpy as np
import optax

import tasks


class SmallCNN(nn.Module):
    """Two 3x3 convolutions, global average pooling and a linear readout: the shape of a practitioner's
    conv net, at any width."""

    width: int

    @nn.compact
    def __call__(self, images):
        x = images[..., None]  # (batch, 8, 8, 1)
        for _ in range(2):
            x = nn.relu(nn.Conv(self.width, (3, 3))(x))
        return nn.Dense(10)(x.mean(axis=(1, 2)))


def digits() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(train, valid) splits of the 1,797 digits, pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits
    images, labels = load_digits(return_X_y=True)
    images = (images / 16.0).reshape(-1, 8, 8).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(labels))
    train, valid = order[:1400], order[1400:]
    return (images[train], labels[train].astype(np.int32)), (images[valid], labels[valid].astype(np.int32))


def cnn_task(width: int) -> tasks.Task:
    train, valid = digits()
    return tasks.from_flax(SmallCNN(width), train, valid, loss="cross_entropy", batch_size=32,
                           name=f"digits_cnn_w{width}")


# What the command line names: the family meta-trained on, and a wider held-out model.
FAMILY = tasks.family([cnn_task(8), cnn_task(16)], name="digits_cnns")
HELD_OUT = cnn_task(24)


def main(argv: list[str] | None = None) -> int:
    import evaluate
    import lopt
    import meta_train

    parser = argparse.ArgumentParser(prog="python -m examples.own_model", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/own_model", type=Path)
    parser.add_argument("--outer-steps", type=int, default=200)
    parser.add_argument("--eval-steps", type=int, default=300)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)

    # 1. Meta-train the default's rule on FAMILY: any preset works with your family as it is.
    config = meta_train.with_overrides(meta_train.preset("default"), [
        "task_family=examples.own_model:FAMILY", "eval_task=examples.own_model:HELD_OUT",
        f"outer_steps={args.outer_steps}", f"eval_steps={args.eval_steps}", "min_inner_length=50",
        "max_inner_length=300", "checkpoint_every=50", "log_every=25"])
    meta_train.meta_train(config, args.workdir / "meta_train", resume=args.resume)

    # 2. Use it like optax.adam on your own training loop.
    optimizer_path = args.workdir / "meta_train" / "optimizer"
    tx = lopt.load(optimizer_path, num_steps=args.eval_steps)
    print(f"loaded {optimizer_path} as an Optax transform: {type(tx).__name__}")

    # 3. Evaluate it on the held-out width against tuned Adam and a tuned optimizer of your choice.
    lion = evaluate.optimizer("lion", lambda rate, steps: optax.lion(optax.cosine_decay_schedule(rate, steps)),
                              rates=(1e-4, 3e-4, 1e-3, 3e-3))
    result = evaluate.run_suite([f"learned={optimizer_path}", "adam", lion], [HELD_OUT],
                                args.workdir / "evaluate", seeds=2, steps=args.eval_steps, baselines=[])
    print(result.summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
