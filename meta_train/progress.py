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
        self.compiling = True

    def update(self, step: int, metrics: dict[str, float]) -> None:
        summary = f"meta-loss {metrics['meta_loss']:.4f}"
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix_str(summary)
        elif step % self.every == 0 or step == self.total:
            now = time.perf_counter()
            elapsed, steps = now - self.window_time, step - self.window_step
            if self.compiling:  # the first window's time is mostly compilation: no rate to extrapolate
                timing = f"{elapsed:.0f}s, compilation included"
            else:  # the rate over the last window
                rate = steps / max(elapsed, 1e-9)
                timing = f"{rate:.1f} steps/s  eta {(self.total - step) / rate if rate else float('nan'):.0f}s"
            self.window_time, self.window_step, self.compiling = now, step, False
            print(f"step {step}/{self.total}  {summary}  {timing}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
