"""Progress reporting: a tqdm bar with ETA on a terminal, plain lines otherwise (CI, log files).
TensorBoard scalars are written by `checkpoints.files.ScalarWriter`."""

from __future__ import annotations

import sys
import time

from checkpoints.optional import require

tqdm = require("tqdm", "meta-training's progress bar", "train").tqdm


class Progress:
    """Progress over outer steps: a bar on a terminal, a line every `every` steps elsewhere."""

    def __init__(self, total: int, start: int, every: int, stream=sys.stderr):
        self.total, self.every, self.stream = total, every, stream
        self.bar = tqdm(total=total, initial=start, unit="step", file=stream, dynamic_ncols=True) \
            if stream.isatty() else None
        self.window_time, self.window_step = time.perf_counter(), start

    def update(self, step: int, metrics: dict[str, float]) -> None:
        summary = f"meta-loss {metrics['meta_loss']:.4f}"
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix_str(summary)
        elif step % self.every == 0 or step == self.total:
            # The rate over the last window: the first window includes the compilation.
            now = time.perf_counter()
            rate = (step - self.window_step) / max(now - self.window_time, 1e-9)
            self.window_time, self.window_step = now, step
            eta = (self.total - step) / rate if rate else float("nan")
            print(f"step {step}/{self.total}  {summary}  {rate:.1f} steps/s  eta {eta:.0f}s",
                  file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
