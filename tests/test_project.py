"""The README's commands are the ones CI runs."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST_COMMAND = "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest"


def test_ci_runs_exactly_the_readme_test_command():
    assert TEST_COMMAND in (ROOT / "README.md").read_text()
    ci_commands = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
                   if line and not line.startswith("#")]
    assert TEST_COMMAND in ci_commands


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


def test_the_floors_ci_pins_each_dependency_at_the_lowest_version_setup_cfg_allows():
    import configparser
    import re

    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    floors = dict(re.fullmatch(r"([\w.-]+)>=([\w.]+)", line.strip()).groups()
                  for line in config["options"]["install_requires"].splitlines()
                  if line.strip() and not line.strip().startswith("#"))
    floors.update(dict(re.fullmatch(r"([\w.-]+)>=([\w.]+)", line.strip()).groups()
                       for line in config["options.extras_require"]["test"].splitlines() if line.strip()))
    pinned = dict(line.split("==") for line in (ROOT / ".ci" / "floors.txt").read_text().splitlines()
                  if line and not line.startswith("#"))

    def padded(version):  # 0.10 and 0.10.0 are one version
        parts = version.split(".")
        return ".".join(parts + ["0"] * (3 - len(parts)))
    assert {name: padded(version) for name, version in floors.items()} == \
        {name: padded(version) for name, version in pinned.items() if name != "jaxlib"}
    assert pinned["jaxlib"] == pinned["jax"]
