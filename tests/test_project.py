"""The README's commands are the ones CI runs."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST_COMMAND = "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest"


def test_ci_runs_exactly_the_readme_test_command():
    assert TEST_COMMAND in (ROOT / "README.md").read_text()
    ci_commands = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
                   if line and not line.startswith("#")]
    assert TEST_COMMAND in ci_commands


def test_readme_quickstart_runs(tmp_path, monkeypatch):
    """The README's Optax example, verbatim, against a real checkpoint named as it names one."""
    import jax

    import lopt

    text = (ROOT / "README.md").read_text()
    start = text.index("```python\nimport jax, jax.numpy as jnp, optax, lopt") + len("```python\n")
    snippet = text[start:text.index("```", start)]
    optimizer = lopt.MLPLOpt(hidden_size=4)
    monkeypatch.chdir(tmp_path)
    lopt.save("my_optimizer", optimizer, optimizer.init(jax.random.key(0)))
    namespace = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    params, opt_state, loss = namespace["train_step"](namespace["params"], namespace["opt_state"],
                                                      namespace["x"], namespace["y"])
    assert float(loss) > 0 and jax.tree.structure(params) == jax.tree.structure(namespace["params"])


def test_readme_quickstart_trains_with_the_shipped_optimizer():
    """The README's quickstart, verbatim but for a shorter run, with the shipped muP optimizer."""
    text = (ROOT / "README.md").read_text()
    start = text.index("```python\nimport jax, jax.numpy as jnp, optax, flax.linen as nn, lopt") + len("```python\n")
    snippet = text[start:text.index("```", start)]
    assert len(snippet.strip().splitlines()) <= 15
    assert "range(1000)" in snippet
    namespace = {}
    exec(compile(snippet.replace("range(1000)", "range(30)"), "README.md", "exec"), namespace)
    first_loss = float(namespace["loss_fn"](namespace["model"](1024).init(
        namespace["jax"].random.key(0), namespace["x"])["params"]))
    assert float(namespace["loss"]) < 0.5 * first_loss, (first_loss, float(namespace["loss"]))


def test_console_scripts_run_the_command_lines():
    """`lopt-meta-train` etc. (setup.cfg's console scripts) beside `python -m`, in the environment the
    tests run in (the README's install puts them beside its python)."""
    import configparser
    import subprocess
    import sys

    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    scripts = dict(line.split(" = ") for line in config["options.entry_points"]["console_scripts"].strip().splitlines())
    assert {"lopt", "lopt-meta-train", "lopt-evaluate", "lopt-tasks"} <= set(scripts)
    for name, expected in (("lopt-meta-train", "--config"), ("lopt-evaluate", "--suite")):
        result = subprocess.run([str(Path(sys.executable).parent / name), "--help"], capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0 and expected in result.stdout, result.stderr
