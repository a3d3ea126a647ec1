"""What a sweep shows on a terminal: one progress bar for the sweep, one per run inside
it, none in CI logs; warnings from Pyro and PyTorch summed up once at the end."""

from __future__ import annotations

import collections
import logging
import math
import os
import sys
import warnings
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

#: Libraries whose warnings the lab has understood: counted, then summed up per sweep.
COLLECTED_FROM = (f"{os.sep}pyro{os.sep}", f"{os.sep}torch{os.sep}")
#: set in the parallel launcher's worker processes, whose bars would share one terminal
WORKER_ENVIRONMENT = "ELBO_LAB_PARALLEL_WORKER"


def interactive() -> bool:
    """Whether progress bars belong on stderr: a terminal, not a CI run, not a worker of
    the parallel launcher."""
    return sys.stderr.isatty() and not os.environ.get("CI") and WORKER_ENVIRONMENT not in os.environ


def count_jobs(config: DictConfig) -> int | None:
    """How many jobs the basic sweeper makes of the sweep's parameters and the command
    line's overrides (the product of every swept key's values); None if unknown."""
    params = OmegaConf.to_container(config.hydra.sweeper.get("params") or {}, resolve=False)
    overrides = [f"{key}={value}" for key, value in params.items()]
    overrides += list(config.hydra.overrides.task)
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        counts = {
            override.get_key_element(): len(list(override.sweep_string_iterator()))
            for override in parsed
            if override.is_sweep_override()
        }
    except Exception:  # e.g. glob() needs Hydra's config loader: show no total then
        return None
    return math.prod(counts.values())


class WarningCollector:
    """Counts the warnings Pyro and PyTorch raise (shown once each at the end, with their
    count) and shows any other warning once, as Python would."""

    def __init__(self) -> None:
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self._shown: set[tuple[str, str]] = set()

    def __enter__(self) -> WarningCollector:
        self._context = warnings.catch_warnings()
        self._context.__enter__()
        warnings.simplefilter("always")
        self._previous = warnings.showwarning
        warnings.showwarning = self._show
        return self

    def __exit__(self, *exc: Any) -> None:
        self._context.__exit__(*exc)

    def _show(self, message, category, filename, lineno, file=None, line=None) -> None:
        key = (category.__name__, str(message).splitlines()[0])
        if any(part in filename for part in COLLECTED_FROM):
            self.counts[key] += 1
        elif key not in self._shown:
            self._shown.add(key)
            self._previous(message, category, filename, lineno, file, line)

    def summary(self) -> list[str]:
        """One line per distinct collected warning, most frequent first."""
        return [
            f"{count}x {category}: {message}"
            for (category, message), count in self.counts.most_common()
        ]


class SweepConsole(Callback):
    """Hydra callback: the sweep's progress bar (jobs done, failed, ETA) and its
    collected warnings. Job callbacks of launchers that run jobs in other processes land
    there, without the bar, and do nothing; the lab's parallel launcher reports its jobs
    here through :meth:`job_finished` (submitit's jobs are not counted)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.failed = 0
        self.bar = tqdm(
            total=count_jobs(config), desc="sweep", unit="job", disable=not interactive()
        )
        self.collector = WarningCollector().__enter__()

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        self._count(config, job_return)

    def job_finished(self, job_return: Any, warning_counts: collections.Counter) -> None:
        """A job that ran in a worker process: count it and add the warnings it raised."""
        if hasattr(self, "bar"):
            self.collector.counts.update(warning_counts)
        self._count(job_return.cfg, job_return)

    def _count(self, config: DictConfig, job_return: Any) -> None:
        if not hasattr(self, "bar") or config.tuning.trial:  # trials are not the sweep's jobs
            return
        ok = job_return.status == JobStatus.COMPLETED and job_return.return_value == "ok"
        self.failed += not ok
        self.bar.set_postfix(failed=self.failed, refresh=False)
        self.bar.update()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not hasattr(self, "bar"):
            return
        self.bar.close()
        self.collector.__exit__(None, None, None)
        lines = self.collector.summary()
        if lines:
            log.warning(
                "warnings from Pyro and PyTorch during the sweep (each once):\n  %s",
                "\n  ".join(lines),
            )
