"""Shared fixtures: composing lab configs, temporary registrations, small fast settings."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pyro
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

import pyro_elbo_lab.lab.config  # noqa: F401  (registers the schema with Hydra)
from pyro_elbo_lab.lab.threads import cpu_budget
from pyro_elbo_lab.registry import Registry

#: Overrides that keep a run to well under a second.
FAST = [
    "protocol=plain",  # fixed steps, no checkpoints: tests that need the fair protocol ask
    "model=gmm",  # the tests' default model (the main job's is normal_normal); later wins
    "steps=5",
    "progress_bar=false",
    "evaluation.elbo_particles=20",
    "evaluation.iwae_particles=5",
    "evaluation.iwae_repeats=4",
    "evaluation.heldout_particles=20",
]


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``-n auto``, the default), each worker's torch gets its share of
    the CPU budget: two workers with two threads each on two cores would oversubscribe."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        torch.set_num_threads(max(1, cpu_budget() // int(workers)))


@pytest.fixture(autouse=True)
def _fresh_pyro_state() -> Iterator[None]:
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    with pyro.validation_enabled(True):
        yield
    pyro.clear_param_store()


@pytest.fixture
def compose_config() -> Callable[..., DictConfig]:
    """``compose_config(*overrides)``: the lab's config, as the CLI would build it."""

    def compose_with(*overrides: str, fast: bool = True) -> DictConfig:
        with initialize_config_module("pyro_elbo_lab.conf", version_base="1.3"):
            return compose("config", overrides=[*(FAST if fast else []), *overrides])

    return compose_with


@pytest.fixture
def temporary_component() -> Iterator[Callable[..., None]]:
    """Register a component for one test only."""
    added: list[tuple[Registry, str]] = []

    def register(registry: Registry, name: str, factory: Callable[..., Any], **traits: Any) -> None:
        registry.add(name, factory, **traits)
        added.append((registry, name))

    yield register
    for registry, name in added:
        registry._components.pop(name, None)
