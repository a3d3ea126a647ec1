"""elbo-lab's Hydra sweeper (``hydra/sweeper=lab``): Hydra's basic sweep, tuned and resumable."""
