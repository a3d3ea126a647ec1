"""Tuning each configuration's step size (and any knob the user names) before comparing.

One learning rate for every objective favours whichever it happens to suit; the
black-box VI literature tunes each method's step size (Agrawal, Sheldon & Domke 2020).
``tune=true`` runs two phases in one sweep (:mod:`hydra_plugins.elbo_lab_sweeper`):

1. per configuration of the sweep (everything but the seed), a study of Hydra's Optuna
   sweeper (TPE) over ``tuning.params``; each trial fits on the *validation* seeds
   ``tuning.seeds`` and scores ``tuning.metric`` there (:func:`run_trial`);
2. the reported runs, on their own seeds, with the best trial's values.

The validation seeds give other initialisations and other Monte Carlo draws than the
reported seeds (the data are ``model.seed``'s in both), and the validation metric is
``tuning.metric``, so the reported figure is not the one tuned on. Every reported
record carries ``tuning``: the values, the validation score, the trials, seeds and
metric, and the model evaluations and seconds tuning cost.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from pyro_elbo_lab.errors import ConfigError, require, require_positive_int
from pyro_elbo_lab.lab.metrics import BY_KEY
from pyro_elbo_lab.lab.record import read_records

TUNING_FILE = "tuned.json"


@dataclass
class TuneSettings:
    """The ``tuning`` node of the lab's config (``tune=true`` switches tuning on).

    ``params`` lists ``KEY=SPACE``: a config key and an Optuna sweeper search space
    (``tag(log, interval(1e-3, 0.3))``, ``choice(1, 4, 16)``, ``range(...)``), e.g.
    ``tuning.params=['optim.optim_args.lr=tag(log, interval(0.001, 0.3))',
    'objective.alpha=interval(0.1, 0.9)']``; a key a configuration does not have
    (``objective.alpha`` of a non-Rényi objective) is not tuned there. ``trial`` and
    ``result`` are set by the sweeper, not by hand.
    """

    trials: int = 8
    seeds: list[int] = field(default_factory=lambda: [1000, 1001])
    metric: str = "elbo"
    params: list[str] = field(
        default_factory=lambda: ["optim.optim_args.lr=tag(log, interval(0.001, 0.3))"]
    )
    sampler_seed: int = 0
    trial: bool = False
    result: str | None = None

    def __post_init__(self) -> None:
        require_positive_int("tuning.trials", self.trials)
        require(
            bool(self.seeds) and all(isinstance(s, int) and s >= 0 for s in self.seeds),
            f"tuning.seeds must be a non-empty list of seeds, got {self.seeds!r}",
        )
        require(
            self.metric in BY_KEY,
            f"tuning.metric must be one of {', '.join(sorted(BY_KEY))}, got {self.metric!r}",
        )
        require(
            bool(self.params) and all("=" in entry for entry in self.params),
            "tuning.params must list at least one KEY=SPACE to tune, e.g. "
            f"'optim.optim_args.lr=tag(log, interval(0.001, 0.3))'; got {self.params!r}",
        )

    @property
    def spaces(self) -> dict[str, str]:
        """``params`` as ``{key: search space}``."""
        return dict(entry.split("=", 1) for entry in self.params)

    @property
    def direction(self) -> str:
        return "minimize" if BY_KEY[self.metric].lower_is_better else "maximize"

    def worst(self) -> float:
        """The score of a trial that failed or diverged: worse than any finite one."""
        return 1e300 if self.direction == "minimize" else -1e300


def run_trial(config: DictConfig, output_dir: Path) -> float:
    """One tuning trial: fit on every validation seed, return the mean validation metric
    (the worst score if any seed failed or diverged)."""
    from pyro_elbo_lab.lab.run import run

    tune = TuneSettings(**OmegaConf.to_container(config.tuning, resolve=True))
    metric = BY_KEY[tune.metric]
    scores = []
    for seed in tune.seeds:
        trial_config = config.copy()
        with open_dict(trial_config):
            trial_config.seed = seed
        record = run(trial_config, output_dir / f"seed-{seed}", catch_errors=True)
        value = record.get(metric.section, {}).get(metric.key) if record["status"] == "ok" else None
        if not isinstance(value, int | float) or not math.isfinite(value):
            return tune.worst()
        scores.append(float(value))
    return statistics.fmean(scores)


def tuning_summary(
    directory: Path, tune: TuneSettings, best_params: dict[str, Any], best_value: float
) -> dict[str, Any]:
    """What a study chose and what it cost, read from its trials' records."""
    fits = [record.get("fit") or {} for record in read_records(directory)]
    return {
        "values": best_params,
        "best_value": best_value,
        "metric": tune.metric,
        "direction": tune.direction,
        "trials": tune.trials,
        "seeds": list(tune.seeds),
        "sampler": f"TPE(seed={tune.sampler_seed})",
        "model_evals": sum(int(fit.get("model_evals") or 0) for fit in fits),
        "seconds": sum(float(fit.get("wall_time_s") or 0.0) for fit in fits),
    }


def require_disjoint_seeds(tune: TuneSettings, reported_seeds: set[int]) -> None:
    overlap = sorted(reported_seeds & set(tune.seeds))
    if overlap:
        raise ConfigError(
            f"tuning.seeds {tune.seeds} overlap the reported seeds {overlap}: tuning on the "
            "seeds you report reuses their data; pick other tuning.seeds"
        )
