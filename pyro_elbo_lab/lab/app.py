"""The ``elbo-lab`` command: compose the config with Hydra and hand it to :func:`run`."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from pyro_elbo_lab.lab import config as _config  # noqa: F401  (registers schema and resolvers)
from pyro_elbo_lab.lab.listing import component_listing
from pyro_elbo_lab.lab.run import run
from pyro_elbo_lab.lab.threads import threads_per_job
from pyro_elbo_lab.lab.tuning import run_trial

log = logging.getLogger("elbo-lab")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def hydra_main(config: DictConfig) -> str | float:
    """One job of a sweep (or a single run with ``hydra.mode=RUN``); returns its status
    (the sweep's console counts the failures), or a tuning trial's validation score."""
    hydra_config = HydraConfig.get()
    in_sweep = hydra_config.mode == RunMode.MULTIRUN
    torch.set_num_threads(threads_per_job(config.num_threads, hydra_config.launcher))
    if config.tuning.trial:
        return run_trial(config, Path(hydra_config.runtime.output_dir))
    if config.tune and not in_sweep and _overridden("tune", hydra_config.overrides.task):
        log.warning("tune=true tunes the configurations of a sweep; this single run is not tuned")
    record = run(
        config,
        output_dir=hydra_config.runtime.output_dir,
        catch_errors=in_sweep,
        sweep_dir=hydra_config.sweep.dir if in_sweep else hydra_config.runtime.output_dir,
    )
    summary = f"{record['status']}: {record['components']} seed={record['seed']}"
    if record["status"] == "ok":
        metrics = record["metrics"]
        log.info("%s elbo=%.4f iwae=%.4f", summary, metrics["elbo"], metrics["iwae"])
    else:
        log.error("%s — %s", summary, record["message"])
    return record["status"]


def _overridden(key: str, overrides: list[str]) -> bool:
    """Whether the command line set ``key`` (the fair protocol's ``tune=true`` is a
    default, which a single run ignores without a word)."""
    return any(override.lstrip("+~").split("=", 1)[0] == key for override in overrides)


def main() -> None:
    """Console entry: ``elbo-lab --list`` lists components, anything else goes to Hydra."""
    if "--list" in sys.argv[1:]:
        print(component_listing())
        return
    hydra_main()


if __name__ == "__main__":
    main()
