"""Each optimum's draws (posterior.nc of the SAA runs) as a reference for the lab.

Writes OUT/{model}_{guide}.json.zip in posteriordb's reference-draws layout (one chain:
Stan name -> draws), with the parameters of the model's own NUTS reference, so that
``model.reference_path=`` measures every distance against the family's optimum.
    python experiments/reference_posteriors/optimum_reference.py OPTIMUM_SWEEP OUT
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import xarray

from pyro_elbo_lab.registry import models


def main(sweep: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for record_file in sorted(sweep.glob("*/record.json")):
        record = json.loads(record_file.read_text())
        if record["status"] != "ok":
            continue
        model_name, guide = record["components"]["model"], record["components"]["guide"]
        reference = models.build(model_name).reference_posterior_draws()
        draws = xarray.open_dataset(record_file.parent / "posterior.nc", group="posterior")
        chain = {}
        for group, values in reference.items():
            ours = draws[group].values[0].reshape(draws[group].shape[1], -1)  # [S, k]
            if values.dim() == 1:
                chain[group] = ours[:, 0].tolist()
            else:
                for index in range(values.shape[1]):
                    chain[f"{group}[{index + 1}]"] = ours[:, index].tolist()
        target = out / f"{model_name}_{guide}.json.zip"
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(f"{model_name}_{guide}.json", json.dumps([chain]))
        print(target)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
