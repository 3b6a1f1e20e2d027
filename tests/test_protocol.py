"""The rulesets a sweep judges optimizers by (evaluate.protocol), called as a user calls them: a rate chosen
on tuning seeds and reported on evaluation seeds it was not chosen on, the self-tuning track with every
baseline once at its starting point, the per-family wins / ties / losses, and `--tuning` on the command line."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import evaluate
import lopt
import tasks
from evaluate import counts
from evaluate.__main__ import main
from evaluate.summary import format_cell
from evaluate.optimizers import STARTING_WEIGHT_DECAY
from lopt.baselines import ADAMW_WEIGHT_DECAY, BASELINES
from tests.lopt_helpers import normalized_descent_theta

STEPS = 20
NEAR, FAR = 0.05, 5.0  # where a seed starts: a small rate suits the near start, a large one the far start


class Distance(tasks.Task):
    """mean |w| from a start that is NEAR or FAR from 0, as the init key falls: plain SGD steps by exactly
    its rate, so the best rate of a seed is set by how far it starts."""

    def __init__(self, name: str):
        self.name = name

    def init(self, key):
        return {"w": jnp.where(jax.random.uniform(key) < 0.5, NEAR, FAR) * jnp.ones((2,))}

    def loss_and_aux(self, params, batch, key):
        return jnp.mean(jnp.abs(params["w"])), {}

    @property
    def data(self):
        return {"unused": jnp.zeros((1,))}

    def batch(self, data, key, split="train"):
        return data

    def held_out(self, data, split="valid"):
        return data

    def roles(self, params):
        return {"w": "input"}

    def normalize_loss(self, loss):
        return loss


TASK = Distance("distance")
SGD = evaluate.optimizer("sgd", lambda rate, num_steps: optax.sgd(rate), rates=(0.01, 0.3))
FIXED = evaluate.optimizer("fixed", lambda rate, num_steps: optax.sgd(rate), rates=(0.03,))  # one setting: no grid


def quiet(line):
    pass


def start(seed: int) -> float:
    """Where seed starts: its init key split off as evaluate.runner splits it (the test checks the
    recorded starts too)."""
    return float(TASK.init(jax.random.split(jax.random.key(seed), 3)[0])["w"][0])


def first_seed_starting(at: float, after: int) -> int:
    return next(seed for seed in range(after, after + 100) if start(seed) == pytest.approx(at))


def test_a_rate_is_chosen_on_tuning_seeds_and_reported_on_evaluation_seeds_it_was_not_chosen_on(tmp_path):
    near, far = first_seed_starting(NEAR, 0), first_seed_starting(FAR, 1000)
    arguments = dict(steps=STEPS, seeds=1, first_seed=near, baselines=[], cache_dir=tmp_path / "cache", log=quiet)
    external = evaluate.run_suite([SGD, FIXED], [TASK], tmp_path / "external", tuning_seeds=1, tuning_first_seed=far,
                                  **arguments)
    same = evaluate.run_suite([SGD, FIXED], [TASK], tmp_path / "same", tuning="same_seeds", **arguments)
    tuned, fixed = external.units
    assert (tuned.tuning_seeds, tuned.seeds) == ((far,), (near,))
    assert [runs[0].train_loss[0] for runs in tuned.tuning_runs.values()] == pytest.approx([FAR, FAR])
    assert tuned.runs["lr=0.3"][0].train_loss[0] == pytest.approx(NEAR)
    # The far tuning seed wants the large rate, the near evaluation seed the small one: the external
    # ruleset reports the rate its tuning seed chose, the same-seed ruleset the one the reported seed favours.
    assert tuned.chosen == tuned.chosen_on_valid == "lr=0.3" and list(tuned.runs) == ["lr=0.3"]
    assert same.units[0].chosen == "lr=0.01" and sorted(same.units[0].runs) == ["lr=0.01", "lr=0.3"]
    assert external.summary[0]["final_train_loss"] > same.summary[0]["final_train_loss"]
    # A single setting gets no grid under either ruleset; every row says what it cost.
    assert fixed.tuning_runs is None and list(fixed.runs) == ["lr=0.03"]
    assert [row["runs"] for row in external.summary] == [2 + 1, 1]
    assert [row["runs"] for row in same.summary] == [2, 1]
    summary = json.loads((tmp_path / "external" / "summary.json").read_text())
    assert summary["protocol"] == {"tuning": "external", "seeds": [near], "tuning_seeds": [far]}
    records = json.loads((tmp_path / "external" / "runs.json").read_text())
    assert {(r["candidate"], r["seed"], r["split"]) for r in records if r["optimizer"] == "sgd"} == {
        ("lr=0.01", far, "tuning"), ("lr=0.3", far, "tuning"), ("lr=0.3", near, "evaluation")}
    assert "Ruleset: **externally tuned**. A tuned optimizer's" in (tmp_path / "external" / "summary.md").read_text()
    assert "Ruleset: **tuned on the evaluation seeds (same seeds)**" in (tmp_path / "same" / "summary.md").read_text()
    with pytest.raises(evaluate.TuningError, match=r"^tuning seeds 2-3 overlap the evaluation seeds 0-2: choose"):
        evaluate.run_suite([FIXED], [TASK], tmp_path / "bad", seeds=3, tuning_first_seed=2, baselines=[])
    with pytest.raises(evaluate.TuningError, match=r"^tuning='sometimes': one of 'external', 'same_seeds', 'none'"):
        evaluate.run_suite([FIXED], [TASK], tmp_path / "bad", tuning="sometimes", baselines=[])
    assert not (tmp_path / "bad").exists()


def test_a_sharded_sweep_reads_back_the_other_shards_tuning_and_evaluation_runs(tmp_path):
    two = [Distance("first"), Distance("second")]
    arguments = dict(steps=STEPS, seeds=2, baselines=[], cache_dir=tmp_path / "cache", log=quiet)
    whole = evaluate.run_suite([SGD, FIXED], two, tmp_path / "whole", **arguments)
    # Both optimizers' runs are in the cache: the shards train nothing, and the last builds the same summary.
    assert not evaluate.run_suite([SGD, FIXED], two, tmp_path / "sharded", shard="0/2", **arguments).complete
    sharded = evaluate.run_suite([SGD, FIXED], two, tmp_path / "sharded", shard="1/2", **arguments)
    drop = lambda table: [{k: v for k, v in row.items() if "seconds" not in k} for row in table]  # noqa: E731
    assert drop(sharded.summary) == drop(whole.summary) and list(sharded.counts) == list(whole.counts)


@pytest.fixture(scope="module")
def self_tuning(tmp_path_factory):
    """A learned optimizer and FIXED beside the self-tuning baselines, on two seeds that start apart (one
    near, one far), so every side has a wide spread."""
    root = tmp_path_factory.mktemp("self_tuning")
    learned = lopt.MLPLOpt(hidden_size=16)  # above 8, matmuls: compiles faster than the elementwise MLP
    checkpoint = lopt.save(root / "descent", learned, normalized_descent_theta(learned, 0.05))
    first = next(seed for seed in range(100) if start(seed) != start(seed + 1))
    result = evaluate.run_suite([checkpoint, FIXED], [TASK], root / "work", steps=STEPS, seeds=2, first_seed=first,
                                tuning="none", cache_dir=root / "cache", log=quiet)
    return result, root


def test_the_self_tuning_track_runs_each_baseline_once_at_its_starting_point(self_tuning, tmp_path):
    result, root = self_tuning
    assert [unit.optimizer.name for unit in result.units] == ["descent", "fixed", "adam", "adamw_cosine", "muon"]
    for unit in result.units[2:]:
        assert list(unit.runs) == ["lr=0.001"] and unit.tuning_runs is None and len(unit.runs["lr=0.001"]) == 2
    assert [row["runs"] for row in result.summary] == [2] * 5
    identities = {unit.optimizer.name: unit.optimizer.identity for unit in result.units}
    # Adam and Muon are their baselines at one rate (so they share cache entries); AdamW decays by 0.1.
    assert identities["adam"] == evaluate.baseline("adam").identity
    assert identities["muon"] == evaluate.baseline("muon").identity
    assert identities["adamw_cosine"].endswith("; weight_decay=0.1 in place of 0.01")
    text = (root / "work" / "summary.md").read_text()
    assert "Ruleset: **self-tuning" in text and "| train / default Adam |" in text
    assert [(entry["optimizer"], entry["against"]) for entry in result.counts] == [
        (name, f"default {family}") for name in ("descent", "fixed") for family in ("Adam", "AdamW-cosine", "Muon")]
    # Nothing is tuned: a baseline without a starting point, or a grid of the user's, is refused.
    with pytest.raises(evaluate.TuningError, match=r"^sgdm would be tuned over 8 settings, .* tunes nothing"):
        evaluate.run_suite([FIXED], [TASK], tmp_path / "refused", tuning="none", baselines=["sgdm"])
    with pytest.raises(evaluate.TuningError, match=r"^sgd would be tuned over 2 settings"):
        evaluate.run_suite([SGD], [TASK], tmp_path / "refused", tuning="none")
    assert not (tmp_path / "refused").exists()


def test_the_starting_adamw_is_the_adamw_cosine_baseline_at_another_weight_decay():
    params = {"w": jnp.arange(4.0).reshape(2, 2)}

    def third_update(transform):
        state = transform.init(params)
        for _ in range(3):
            updates, state = transform.update({"w": jnp.full((2, 2), 0.5)}, state, params)
        return updates["w"]
    starting = third_update(evaluate.optimizers.starting_point("adamw_cosine").make(0.01, 10, None))
    baseline = third_update(BASELINES["adamw_cosine"][0](0.01, 10, None))
    # The same Adam direction; only the decoupled decay differs: -rate(step 2) * decay * params.
    rate = lopt.harness.warmup_decay("cosine", 0.01, 10)(2)
    np.testing.assert_allclose(starting - baseline, -rate * (STARTING_WEIGHT_DECAY - ADAMW_WEIGHT_DECAY)
                               * params["w"], rtol=1e-5, atol=1e-9)


def test_wins_ties_and_losses_are_counted_as_documented(self_tuning):
    assert counts.spread([1.0, 3.0]) == (2.0, 1.0)  # sample std sqrt(2), over sqrt(2) seeds
    assert counts.spread([2.0]) == (2.0, 0.0) and counts.spread([1.0, float("inf")]) == (float("inf"), 0.0)
    # A difference of means up to the sum of the standard errors is a tie; beyond it the lower mean wins.
    assert counts.outcome((1.0, 0.125), (1.25, 0.125)) == "tie"
    assert counts.outcome((1.0, 0.125), (1.5, 0.125)) == "win"
    assert counts.outcome((1.5, 0.125), (1.0, 0.125)) == "loss"
    assert counts.outcome((1.0, 0.0), (float("inf"), 0.0)) == "win"
    assert counts.outcome((float("inf"), 0.0), (float("inf"), 0.0)) == "tie"
    # The sweep's counts are those of the per-seed final losses its rows record. Its seeds start apart, so
    # the learned optimizer's lower mean than Adam's lies inside their spread: a tie, not a win.
    result, root = self_tuning
    train = next(c for c in result.counts[0]["comparisons"] if c["metric"] == "train")  # descent against Adam
    assert train["mean"] < train["family_mean"] and train["outcome"] == "tie" and result.counts[0]["train_ties"] == 1
    summary = json.loads((root / "work" / "summary.json").read_text())
    rows = {(row["task"], row["optimizer"]): row for row in summary["rows"]}
    for entry in result.counts:
        for metric in ("train", "valid"):
            field = f"final_{metric}_losses"
            outcomes = [counts.outcome(counts.spread(rows[(task.label, entry["optimizer"])][field]),
                                       counts.spread(rows[(task.label, entry["family"])][field]))
                        for task in result.suite.tasks]
            assert [entry[f"{metric}_{name}"] for name in ("wins", "ties", "losses")] == [
                outcomes.count(outcome) for outcome in ("win", "tie", "loss")]
    text = (root / "work" / "summary.md").read_text()
    assert counts.RULE in text and "| descent | default Muon |" in text
    mine, theirs = [f"{format_cell(train[mean])} ± {format_cell(train[error], 2)}" for mean, error in
                    (("mean", "standard_error"), ("family_mean", "family_standard_error"))]
    cell = f"{mine} vs {theirs}: {train['outcome']}"
    assert f"| {TASK.name} | descent | default Adam | {cell} |" in text


def test_the_command_line_takes_a_ruleset_and_refuses_a_bad_one_in_one_line(tmp_path, capsys):
    suite = tmp_path / "one.json"
    suite.write_text(json.dumps({"name": "one", "tasks": [{"task": "quadratic_10d", "steps": STEPS}]}))
    common = ["--suite", str(suite), "--seeds", "1", "--cache", str(tmp_path / "cache")]
    assert main(common + ["--workdir", str(tmp_path / "none"), "--tuning", "none", "--baselines", "adam"]) == 0
    summary = json.loads((tmp_path / "none" / "summary.json").read_text())
    assert summary["protocol"]["tuning"] == "none" and [row["chosen"] for row in summary["rows"]] == ["lr=0.001"]
    assert main(common + ["--workdir", str(tmp_path / "same"), "--tuning", "same-seeds",
                          "--baselines", "adam@0.01"]) == 0
    assert json.loads((tmp_path / "same" / "summary.json").read_text())["protocol"]["tuning"] == "same_seeds"
    printed = capsys.readouterr().out  # ends with the table of one row per optimizer
    assert f"each task trained for {STEPS} steps (its file's" in printed
    assert printed.rstrip().splitlines()[-1].startswith("| adam@0.01 |")
    for flags, message in ((["--tuning", "sometimes"], "error: --tuning sometimes: one of external, same-seeds, none"),
                           (["--tuning-first-seed", "0"], "error: tuning seeds 0-1 overlap the evaluation seeds 0")):
        assert main(common + ["--workdir", str(tmp_path / "bad"), *flags]) == 2
        err = capsys.readouterr().err
        assert err.startswith(message) and err.count("\n") == 1, err
    assert not (tmp_path / "bad").exists()
