"""Every ```python block of the README runs as written (with a shorter budget where a block takes
minutes), and every concrete `python -m meta_train` / `python -m evaluate` line of its ```bash blocks
parses, names known presets, fields, optimizers, suites and baselines, so a README edit, or a change of
the code under it, that breaks an example fails here."""

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^```python\n(.*?)^```$", README, flags=re.S | re.M)
BASH_LINES = [line.split("  #")[0].strip() for block in re.findall(r"^```bash\n(.*?)^```$", README, flags=re.S | re.M)
              for line in block.splitlines()]
VELO_FIXTURE = ROOT.parent / "shared" / "fixtures" / "learned_optimization" / "hyper_v2_velo_arch"

# A block is recognized by a line of it; its budget is cut by plain text replacements.
SHORTER = {
    'lopt.load("orthogonal_mlp", num_steps=1000': [("range(1000)", "range(30)"), ("num_steps=1000", "num_steps=30")],
    'lopt.load("mulo"': [("range(200)", "range(20)"), ("num_steps=200", "num_steps=20")],
    "evaluate.run_suite(": [('"ood"', "TINY_SUITE"), ("seeds=3)", 'seeds=1, baselines=["adam"])')],
}
KNOWN = ['lopt.load("orthogonal_mlp", num_steps=1000', 'lopt.load_rule("orthogonal_mlp"', 'lopt.load("mulo"',
         "evaluate.run_suite(", 'lopt.load("velo/params"']


def test_every_block_is_known():
    """A new block is run below like the others; this names the ones whose checks are written."""
    assert [next((mark for mark in KNOWN if mark in block), "new") for block in BLOCKS] == KNOWN


def test_the_quickstart_loads_the_default_by_name():
    import lopt

    assert f'lopt.load("{lopt.DEFAULT}", num_steps=1000' in BLOCKS[0]


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
    check = next((mark for mark in KNOWN if mark in block), None)
    if check is not None:
        CHECKS[check](namespace, printed)


def _quickstart(namespace, printed):
    jax = namespace["jax"]
    first = float(namespace["loss_fn"](namespace["model"](256).init(jax.random.key(0), namespace["x"])["params"],
                                       namespace["x"][:1500], namespace["y"][:1500]))
    assert float(namespace["loss"]) < 0.5 * first, (first, float(namespace["loss"]))
    assert "train loss" in printed and "held-out loss" in printed


def _settings(namespace, printed):
    """Both transforms of the block step the params: finite, the shapes of params, moving by step 2 (the
    first step of a warmup from 0 is 0)."""
    jax, jnp, params, grads = namespace["jax"], namespace["jnp"], namespace["params"], namespace["grads"]
    for optimizer in (namespace["variant"], namespace["mine"]):
        opt_state = optimizer.init(params)
        for _ in range(2):
            updates, opt_state = optimizer.update(grads, opt_state, params)
        assert jax.tree.map(jnp.shape, updates) == jax.tree.map(jnp.shape, params)
        leaves = jax.tree.leaves(updates)
        assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in leaves)
        assert any(bool(jnp.any(leaf != 0)) for leaf in leaves)


def _mulo(namespace, printed):
    jax, task = namespace["jax"], namespace["task"]
    held_out = task.held_out(task.data)
    first, _ = task.loss_and_aux(task.init(jax.random.key(0)), held_out, jax.random.key(0))
    assert float(namespace["valid_loss"]) < float(first), (float(first), float(namespace["valid_loss"]))
    assert "held-out loss" in printed and "accuracy" in printed


def _run_suite(namespace, printed):
    assert "orthogonal_mlp" in printed and "adam" in printed  # the per-task and the overall tables


def _velo(namespace, printed):
    updates, jnp = namespace["updates"], namespace["jnp"]
    assert updates["w"].shape == (8, 4) and bool(jnp.all(jnp.isfinite(updates["w"])) & jnp.any(updates["w"] != 0))


CHECKS = dict(zip(KNOWN, (_quickstart, _settings, _mulo, _run_suite, _velo)))


def _concrete(prefix):
    """The README's command lines that start with prefix and hold no placeholder (NAME, DIR, [...], ...) or
    --help."""
    return [line for line in BASH_LINES if line.startswith(prefix)
            and not re.search(r"\[|\.\.\.|--help|\b[A-Z][A-Z_]+\b", line)]


def test_the_readme_meta_train_commands_name_known_presets_and_fields():
    from meta_train.__main__ import _parser
    from meta_train.config import preset, with_overrides

    lines = _concrete("python -m meta_train ")
    assert len(lines) >= 4, lines
    for line in lines:
        args = _parser().parse_args(shlex.split(line)[3:])
        with_overrides(preset(args.config), args.assignments)  # ConfigError names what the README got wrong


def test_the_readme_evaluate_commands_name_known_optimizers_suites_and_baselines():
    import evaluate
    from evaluate.__main__ import _parser
    from evaluate.optimizers import resolve

    lines = _concrete("python -m evaluate ")
    assert len(lines) >= 2, lines
    for line in lines:
        args = _parser().parse_args(shlex.split(line)[3:])
        assert args.suite in evaluate.SUITES, line
        assert args.baselines is None or set(args.baselines.split(",")) <= set(evaluate.BASELINES), line
        assert args.tuning in (None, "external", "same-seeds", "none"), line
        for name in args.optimizer:
            resolve(name)  # a shipped name, NAME@SCALE, NAME@tuned, a baseline: as the command line reads it
