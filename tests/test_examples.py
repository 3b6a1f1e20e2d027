"""The example launch script runs as a user runs it, at a small budget."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_the_own_model_example_meta_trains_loads_and_evaluates(tmp_path):
    command = [sys.executable, "-m", "examples.own_model", "--workdir", str(tmp_path), "--outer-steps", "4",
               "--eval-steps", "40"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "meta_train"
    config = json.loads((run / "config.json").read_text())
    assert config["task_family"] == "examples.own_model:FAMILY"  # recorded, so --resume rebuilds it
    assert (run / "optimizer" / "spec.json").is_file() and list((run / "tensorboard").iterdir())
    assert "loaded" in done.stdout and "lion" in done.stdout and "adam" in done.stdout
    again = subprocess.run(command + ["--resume"], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert again.returncode == 0, again.stderr[-3000:]
