"""Every ```python block of the README runs as written (with a shorter budget where a block takes
minutes), so a README edit that breaks an example fails here."""

import json
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCKS = re.findall(r"^```python\n(.*?)^```$", (ROOT / "README.md").read_text(), flags=re.S | re.M)
VELO_FIXTURE = ROOT.parent / "shared" / "fixtures" / "learned_optimization" / "hyper_v2_velo_arch"

# A block is recognized by a line of it; its budget is cut by plain text replacements.
SHORTER = {
    'lopt.load("orthogonal_mixed_kinds", num_steps=1000': [("range(1000)", "range(30)"), ("num_steps=1000", "num_steps=30")],
    "evaluate.run_suite(": [('"ood"', "TINY_SUITE"), ("seeds=1)", 'seeds=1, baselines=["adam"])')],
}
KNOWN = ['lopt.load("orthogonal_mixed_kinds", num_steps=1000', 'tasks.get_task("mlp_mnist_14x14"',
         'lopt.load("sp_small_fc"', 'lopt.load("velo/params"', "evaluate.run_suite("]


def test_every_block_is_known():
    """A new block is run below like the others; this names the ones whose checks are written."""
    assert [next(mark for mark in KNOWN if mark in block) for block in BLOCKS] == KNOWN


@pytest.mark.parametrize("block", BLOCKS, ids=[next((m for m in KNOWN if m in b), "new") for b in BLOCKS])
def test_the_readme_block_runs(block, tmp_path, monkeypatch, capsys):
    for mark, replacements in SHORTER.items():
        if mark in block:
            for old, new in replacements:
                assert old in block, f"the README block with {mark} no longer holds {old}"
                block = block.replace(old, new)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    if 'lopt.load("velo/params"' in block:
        if not VELO_FIXTURE.is_dir():
            pytest.skip(f"a VeLO-architecture checkpoint is read from {VELO_FIXTURE}, not found")
        shutil.copytree(VELO_FIXTURE, tmp_path / "velo")
    if "TINY_SUITE" in block:
        suite = tmp_path / "tiny.json"
        suite.write_text(json.dumps({"name": "tiny", "tasks": [{"task": "mlp_digits_8x8", "set": {"width": 8},
                                                                 "steps": 20}]}))
        namespace["TINY_SUITE"] = str(suite)
        monkeypatch.setenv("HOME", str(tmp_path))  # the baseline cache under ~/.cache: this test's own
    exec(compile(block, "README.md", "exec"), namespace)
    printed = capsys.readouterr().out
    if 'lopt.load("orthogonal_mixed_kinds"' in block:
        first = float(namespace["loss_fn"](namespace["model"](256).init(
            namespace["jax"].random.key(0), namespace["x"])["params"], namespace["x"][:1500], namespace["y"][:1500]))
        assert float(namespace["loss"]) < 0.5 * first, (first, float(namespace["loss"]))
        assert "train loss" in printed and "held-out loss" in printed
    if 'lopt.load("sp_small_fc"' in block:
        assert "loss after 100 steps" in printed and float(namespace["loss"]) < 1.0
    if 'lopt.load("velo/params"' in block:
        updates, jnp = namespace["updates"], namespace["jnp"]
        assert updates["w"].shape == (8, 4) and bool(jnp.all(jnp.isfinite(updates["w"])) & jnp.any(updates["w"] != 0))
    if "TINY_SUITE" in block:
        assert "mulo_small_fc" in printed and "adam" in printed  # the per-task and the overall tables
