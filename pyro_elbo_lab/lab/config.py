"""The typed schema of a lab run (Hydra structured config) and the sweep-dir resolvers."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from pyro_elbo_lab.evaluation import EvaluationSettings
from pyro_elbo_lab.evaluation.checkpoints import CheckpointSettings
from pyro_elbo_lab.lab.budget import BudgetSettings
from pyro_elbo_lab.lab.convergence import ConvergenceSettings
from pyro_elbo_lab.lab.robust_schedule import ScheduleSettings
from pyro_elbo_lab.lab.tuning import TuneSettings
from pyro_elbo_lab.lab.vsbc import VSBCSettings

T = TypeVar("T")


@dataclass
class LabConfig:
    """One run: ``model × guide × fitter (objective × optim, or another method) × seed``.

    ``model``/``guide``/``objective``/``fitter`` hold a registered ``name`` and that
    component's parameters; ``optim`` a ``name`` and a Hydra ``_target_`` with its
    arguments. ``fitter=svi`` steps the objective with the optimiser; other fitters
    ignore both.
    """

    model: Any = MISSING
    guide: Any = MISSING
    objective: Any = MISSING
    optim: Any = MISSING
    fitter: Any = MISSING
    tracker: Any = MISSING
    seed: int = 0
    #: the step budget, and the cap of every other budget
    steps: int = 500
    budget: BudgetSettings = field(default_factory=BudgetSettings)
    convergence: ConvergenceSettings = field(default_factory=ConvergenceSettings)
    checkpoints: CheckpointSettings = field(default_factory=CheckpointSettings)
    #: learning rates end at this fraction of their start, geometric in the budget spent
    final_lr_fraction: float = 1.0
    #: where the fit starts: median | map | laplace | pathfinder (null: the model's default)
    init: str | None = None
    #: the coordinates it moves in: none | diagonal | full (null: the model's default)
    precondition: str | None = None
    #: the learning-rate schedule: the optimiser's own, or RAABBVI-style phases
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    device: str = "cpu"
    #: where compiled steps are cached on disk, shared by a sweep's jobs (None: torch's default)
    compile_cache_dir: str | None = None
    progress_bar: bool = True
    num_threads: int | None = None
    loss_history_points: int = 200
    #: a sweep directory to resume: only its configurations without an ok record run
    resume: str | None = None
    #: tune each configuration's ``tuning.params`` before the reported runs
    tune: bool = False
    tuning: TuneSettings = field(default_factory=TuneSettings)
    #: guide draws written as ArviZ data (posterior.nc) beside the record; 0: none
    posterior_draws: int = 0
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    #: > 0 data sets: VSBC (simulate, fit, calibrate) instead of one fit
    vsbc: VSBCSettings = field(default_factory=VSBCSettings)


def settings(node: Any, kind: type[T]) -> T:
    """A config node as its checked settings dataclass (its ``__post_init__`` validates)."""
    return kind(**OmegaConf.to_container(node, resolve=True))


def register_configs() -> None:
    """Put the schema into Hydra's ConfigStore (``lab_schema``) and add resolvers."""
    ConfigStore.instance().store(name="lab_schema", node=LabConfig)
    if not OmegaConf.has_resolver("lab_unique"):
        # Cached, and Hydra copies resolver caches into every job's config, so a sweep
        # resolves one suffix: two sweeps started in the same second still differ.
        OmegaConf.register_new_resolver("lab_unique", lambda: uuid.uuid4().hex[:6], use_cache=True)
    if not OmegaConf.has_resolver("lab_or"):
        # ``oc.select`` returns a key's null as null (only a missing key gets the
        # default), and ``hydra.sweep.dir`` is a string: ``resume: null`` must give the
        # fresh directory.
        OmegaConf.register_new_resolver("lab_or", _value_or_default)


def _value_or_default(value: Any, default: Any) -> Any:
    return default if value is None else value


register_configs()
