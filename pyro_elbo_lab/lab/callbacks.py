"""Hydra callback that writes the sweep report when a multirun ends."""

from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from pyro_elbo_lab.lab.report import build_report

log = logging.getLogger(__name__)


class SweepReport(Callback):
    """``on_multirun_end``: aggregate every record under the sweep dir into the report."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = config.hydra.sweep.dir
        try:
            build_report(sweep_dir)
        except FileNotFoundError as error:
            log.error("no report: %s", error)
        else:
            log.info("comparison.md, comparison.csv and plots written to %s", sweep_dir)
