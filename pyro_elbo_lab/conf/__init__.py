"""The lab's Hydra config tree (shipped as package data; the repository's ``conf/`` links here)."""
