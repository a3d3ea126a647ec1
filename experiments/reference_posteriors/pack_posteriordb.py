"""Copy posteriordb's data and reference draws into the package (run once per update).

    python experiments/reference_posteriors/pack_posteriordb.py ../shared/data/posteriordb

Each posterior's ``data.json.zip`` is copied as is (``{name}.data.json.zip``); its
``reference_draws.json.zip`` (10 chains of Stan names → draws) becomes
``{name}.draws.npz`` with ``names`` and ``draws`` ``[S, P]`` in float32: the same draws,
about a tenth of the JSON's size, read without parsing JSON.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

from pyro_elbo_lab.models.posteriordb.files import read_reference_draws

POSTERIORS = (
    "arK-arK",
    "arma-arma11",
    "diamonds-diamonds",
    "earnings-logearn_interaction",
    "garch-garch11",
    "gp_pois_regr-gp_pois_regr",
    "kidiq-kidscore_momiq",
    "kidiq_with_mom_work-kidscore_interaction_c",
    "mesquite-logmesquite_logvas",
    "nes1976-nes",
    "sblrc-blr",
)


def main(source: Path) -> None:
    target = Path(__file__).resolve().parents[2] / "pyro_elbo_lab" / "data" / "posteriordb"
    target.mkdir(exist_ok=True)
    for name in POSTERIORS:
        folder = source / name
        shutil.copyfile(folder / "data.json.zip", target / f"{name}.data.json.zip")
        names, draws = read_reference_draws(folder / "reference_draws.json.zip", "source")
        np.savez_compressed(
            target / f"{name}.draws.npz", names=np.array(names), draws=draws.astype(np.float32)
        )
        print(f"{name}: {draws.shape[0]} draws of {len(names)} parameters")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
