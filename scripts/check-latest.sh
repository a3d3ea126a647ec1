#!/usr/bin/env bash
# Install the newest versions pyproject.toml allows (no lock) into a scratch venv and run
# the fast test selection: what a user who installs the library into their own
# environment gets today. Run it before refreshing requirements/lock.txt (pip-compile),
# and whenever a release of Pyro, Hydra, OmegaConf or Optuna comes out.
#   bash scripts/check-latest.sh            # scratch venv in a temporary directory
#   KEEP=1 bash scripts/check-latest.sh     # and leave it there to look into
# torch stays at the README's 2.13.0: a newer one is a CUDA build of several GB here.
set -euo pipefail
repository="$(cd "$(dirname "$0")/.." && pwd)"
scratch="$(mktemp -d)"
[ -n "${KEEP:-}" ] || trap 'rm -rf "$scratch"' EXIT
python3 -m venv "$scratch/venv"
# shellcheck disable=SC1091
. "$scratch/venv/bin/activate"
pip install -q --upgrade pip
pip install -q torch==2.13.0
pip install -q --upgrade --upgrade-strategy eager "$repository[test,dev,tune]"
pip list --format=freeze > "$scratch/installed.txt"
python - "$repository/requirements/lock.txt" "$scratch/installed.txt" <<'PY'
import re
import sys

def pins(path):
    found = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", open(path).read(), re.M)
    return {re.sub(r"[-_.]+", "-", name).lower(): pin for name, pin in found}

locked, newest = pins(sys.argv[1]), pins(sys.argv[2])
changed = [f"  {name}: {locked[name]} -> {newest[name]}"
           for name in sorted(locked.keys() & newest.keys()) if locked[name] != newest[name]]
print("newest allowed versions that differ from requirements/lock.txt:")
print("\n".join(changed) or "  none")
PY
cd "$repository"
python -m pytest -m "not slow" -q -p no:cacheprovider
