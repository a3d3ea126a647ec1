"""Where ``objective.compile`` keeps compiled steps on disk.

``torch.compile`` caches what it builds (the FX-graph cache of inductor's kernels and
the AOTAutograd cache) under one folder, keyed by the traced graph, its inputs' shapes,
dtypes and devices, the compiler options and the torch version. A hit loads the kernels
a miss would build, so a cached run gives the same numbers as an uncached one; the
runs of a sweep with the same shapes compile once, in whichever process or launcher
(joblib's workers, submitit's jobs on a shared file system) runs them. Deleting the
folder clears the cache.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The environment variable torch reads the cache folder from.
CACHE_VARIABLE = "TORCHINDUCTOR_CACHE_DIR"


def use_compile_cache(directory: str | Path) -> Path:
    """Cache compiled steps in ``directory`` (created if missing) from now on, in this
    process and the processes it starts; returns it as an absolute path."""
    path = Path(directory).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    os.environ[CACHE_VARIABLE] = str(path)
    return path


def compile_cache_dir() -> Path:
    """The folder compiled steps are cached in now (torch's default unless set)."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    return Path(cache_dir())
