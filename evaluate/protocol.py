"""How a sweep sets each optimizer's hyperparameters before judging it: AlgoPerf's two rulesets, and the
older same-seed choice kept as an option.

    external    (the default) a tuned optimizer's grid runs on tuning seeds, a range apart from the
                evaluation seeds; the setting chosen there, per metric, runs on the evaluation seeds, which
                every figure reports. A learned optimizer gets no grid and runs on the evaluation seeds.
    same_seeds  the grid runs on the evaluation seeds and is reported at its best there: the best of
                eight candidates' draws favours a tuned baseline over an optimizer run once.
    none        self-tuning: nothing is tuned. Every baseline runs once, at the setting its users start
                from (evaluate.optimizers.starting_point), beside the learned optimizers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from evaluate.optimizers import starting_points_text

TUNINGS = ("external", "same_seeds", "none")
DEFAULT_TUNING = "external"
DEFAULT_TUNING_SEEDS = 2
# Far from the small seeds sweeps are evaluated on, so that a tuning run is never also an evaluation run.
DEFAULT_TUNING_FIRST_SEED = 1000


class TuningError(ValueError):
    """An unknown ruleset, or tuning seeds that are not apart from the evaluation seeds."""


def _seed_range(seeds: tuple[int, ...]) -> str:
    return f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"


@dataclasses.dataclass(frozen=True)
class Protocol:
    tuning: str  # one of TUNINGS
    seeds: tuple[int, ...]  # the evaluation seeds: every reported figure is a mean over them
    tuning_seeds: tuple[int, ...]  # where a grid is run and chosen from; () unless tuning is "external"

    @property
    def label(self) -> str:
        return {"external": "externally tuned", "same_seeds": "tuned on the evaluation seeds (same seeds)",
                "none": "self-tuning (no tuning: every baseline at its starting point)"}[self.tuning]

    @property
    def reference(self) -> str:
        """How the summary names the baselines: tuned, or at their starting points."""
        return "default" if self.tuning == "none" else "tuned"

    def to_dict(self) -> dict[str, Any]:
        return {"tuning": self.tuning, "seeds": list(self.seeds), "tuning_seeds": list(self.tuning_seeds)}

    @property
    def caveat(self) -> str:
        """What the counts cannot tell on these seeds ("" where they can): run_suite logs it, summary.md says it."""
        if len(self.seeds) > 1:
            return ""
        return ("One evaluation seed gives no standard error, so every difference counts as a win or a loss, "
                "however small; 3 or more seeds (--seeds) give counts with a spread.")

    def describe(self) -> str:
        """The paragraph of summary.md that says how every optimizer was set and on which seeds."""
        return " ".join(filter(None, (self._ruleset(), self.caveat)))

    def _ruleset(self) -> str:
        seeds = f"evaluation seeds {_seed_range(self.seeds)}"
        if self.tuning == "external":
            return (f"Ruleset: **{self.label}**. A tuned optimizer's grid (a baseline's learning rates, a learned "
                    f"optimizer's step multipliers with @tuned) runs on tuning seeds "
                    f"{_seed_range(self.tuning_seeds)} only; the setting with the lowest mean there is chosen per "
                    f"task and metric (final training loss, final validation loss, lowest validation loss) and "
                    f"then runs on the {seeds}, which every figure reports. An optimizer with one setting (a "
                    f"learned one) runs on the evaluation seeds alone: no optimizer is reported on the seeds its "
                    "setting was chosen on.")
        if self.tuning == "same_seeds":
            return (f"Ruleset: **{self.label}**. Every setting of a tuned optimizer's grid runs on the {seeds}, and "
                    "each is reported at the setting with the lowest mean on those very seeds: an oracle over "
                    "its grid's draws, which favours tuned baselines over an optimizer with one setting "
                    "(`--tuning external`, the default, chooses on separate tuning seeds).")
        return (f"Ruleset: **{self.label}**. Every optimizer runs once per seed on the {seeds}, at one setting: a "
                f"baseline at the setting its users start from ({starting_points_text()}; the rest of each "
                "baseline as its description says), a learned optimizer as meta-trained. Nothing is tuned.")


def protocol(tuning: str, seeds: int, first_seed: int, tuning_seeds: int, tuning_first_seed: int) -> Protocol:
    """The ruleset as given to run_suite, checked; TuningError in one line otherwise."""
    if tuning not in TUNINGS:
        raise TuningError(f"tuning={tuning!r}: one of {', '.join(map(repr, TUNINGS))} "
                          "(on the command line: --tuning external, same-seeds or none)")
    evaluation = tuple(range(first_seed, first_seed + seeds))
    if tuning != "external":
        return Protocol(tuning, evaluation, ())
    for name, value, least in (("tuning_seeds", tuning_seeds, 1), ("tuning_first_seed", tuning_first_seed, 0)):
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= least):
            raise TuningError(f"{name}={value!r}: must be an integer of at least {least}")
    tuning_range = tuple(range(tuning_first_seed, tuning_first_seed + tuning_seeds))
    if set(tuning_range) & set(evaluation):
        raise TuningError(f"tuning seeds {_seed_range(tuning_range)} overlap the evaluation seeds "
                          f"{_seed_range(evaluation)}: choose a tuning_first_seed (--tuning-first-seed) apart "
                          "from them")
    return Protocol(tuning, evaluation, tuning_range)
