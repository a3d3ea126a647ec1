"""``python -m pyro_elbo_lab [list | Hydra overrides...]``."""

import sys

from pyro_elbo_lab.lab.app import main

if __name__ == "__main__":
    if sys.argv[1:2] == ["list"]:
        sys.argv[1] = "--list"
    main()
