"""Build a run's components from its config, and check they fit together before compute."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyro.optim
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pyro import poutine

from pyro_elbo_lab.devices import resolve_device
from pyro_elbo_lab.engine import refuse_model_parameters, require_reparameterized
from pyro_elbo_lab.engine.program import random_streams_restored
from pyro_elbo_lab.errors import ConfigError, require
from pyro_elbo_lab.fitters.gaussian import require_gaussian_guide
from pyro_elbo_lab.guides.pyro_builtin import latent_sites
from pyro_elbo_lab.lab.learned import model_parameter_names
from pyro_elbo_lab.models.base import LatentVariableModel
from pyro_elbo_lab.registry import (
    Component,
    check_parameters,
    fitters,
    guides,
    models,
    objectives,
    parameter_names,
)


@dataclass
class Components:
    """Everything a run fits and measures, built and checked."""

    model: LatentVariableModel
    guide: Any
    objective: Any
    optim: pyro.optim.PyroOptim
    device: torch.device
    model_entry: Component
    guide_entry: Component
    objective_entry: Component
    #: ``svi`` (the objective and optimiser step the guide) or a registered fitter
    fitter_name: str = "svi"
    fitter_params: dict[str, Any] = field(default_factory=dict)


def _params(node: Any, group: str) -> tuple[str, dict[str, Any]]:
    params = (
        OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    )
    require(isinstance(params, dict) and "name" in params, f"{group} config needs a 'name' entry")
    name = params.pop("name")
    return name, params


def build_components(config: Any) -> Components:
    """Model, guide, objective and optimiser of ``config``, on its device.

    Raises :class:`ConfigError` before any fitting when a name is unknown, a value is
    out of range or the combination cannot work.
    """
    device = resolve_device(config.device)
    model_name, model_params = _params(config.model, "model")
    guide_name, guide_params = _params(config.guide, "guide")
    objective_name, objective_params = _params(config.objective, "objective")
    model_entry = models.get(model_name)
    guide_entry = guides.get(guide_name)
    objective_entry = objectives.get(objective_name)

    model = models.build(model_name, device=str(device), **model_params)
    if (
        "max_plate_nesting" in parameter_names(objective_entry.factory)
        and objective_params.get("max_plate_nesting") is None
    ):
        objective_params["max_plate_nesting"] = model.max_plate_nesting
    with random_streams_restored():  # tracing the model leaves the run's random stream alone
        sites = latent_sites(model)
    if "per_datapoint" in objective_params and objective_params["per_datapoint"] is None:
        objective_params["per_datapoint"] = per_datapoint_default(model, objective_entry, sites)
    require_guide_fits(model, model_entry, guide_name, guide_entry, sites)
    objective = objectives.build(objective_name, **objective_params)
    guide = guides.build(guide_name, model, **guide_params)
    optim = _build_optim(config.optim)
    fitter_name, fitter_params = _params(config.get("fitter") or {"name": "svi"}, "fitter")
    components = Components(
        model=model,
        guide=guide,
        objective=objective,
        optim=optim,
        device=device,
        model_entry=model_entry,
        guide_entry=guide_entry,
        objective_entry=objective_entry,
        fitter_name=fitter_name,
        fitter_params=fitter_params,
    )
    check_compatible(components)
    return components


def per_datapoint_default(model: Any, objective_entry: Component, sites: dict[str, dict]) -> bool:
    """The bound the papers mean: per datapoint where every latent of the model (``sites``,
    from :func:`latent_sites`) is local to its data plate (a VAE's codes, an SBN's units)
    and the objective has that form; the joint bound otherwise (a global latent would
    count once per point)."""
    if not getattr(objective_entry.factory, "supports_per_datapoint", False):
        return False
    return bool(sites) and all(
        any(frame.name == model.data_plate for frame in site["cond_indep_stack"])
        for site in sites.values()
    )


def require_guide_fits(
    model: Any,
    model_entry: Component,
    guide_name: str,
    guide_entry: Component,
    sites: dict[str, dict],
) -> None:
    """A guide that cannot serve the model's latents fails here, before any step, naming
    the one that fits (the model's ``example_guide``, else ``normal``): no guide for a
    model with latents, a continuous guide on discrete latents, a Bernoulli guide on
    continuous ones, or a guide with parameters per training point on a model that
    learns θ from many of them. ``sites``: the model's latents (:func:`latent_sites`)."""
    fits = model_entry.trait("example_guide", None) or "normal"
    hidden = set(getattr(model, "enumerated_sites", ()))
    sites = {n: site for n, site in sites.items() if n not in hidden}
    if guide_entry.trait("no_latents", False):
        if sites:
            raise ConfigError(
                f"guide={guide_name} is for models without latents, but model "
                f"'{model_entry.name}' has {list(sites)}: use guide={fits}, or marginalise "
                "them in the model"
            )
        return
    discrete = [n for n, site in sites.items() if site["fn"].support.is_discrete]
    if guide_entry.trait("binary_latents", False):
        continuous = [n for n in sites if n not in discrete]
        if continuous:
            raise ConfigError(
                f"guide={guide_name} draws binary latents, but model '{model_entry.name}' "
                f"has continuous ones {continuous}; use guide={fits}"
            )
    elif discrete and not guide_entry.trait("discrete_latents", False):
        raise ConfigError(
            f"guide={guide_name} draws continuous latents, but model '{model_entry.name}' "
            f"has discrete ones {discrete}; use guide={fits}"
        )
    if (
        model.learns_parameters
        and model.has_local_latents
        and not guide_entry.trait("local_latents", False)
    ):
        raise ConfigError(
            f"guide={guide_name} keeps parameters per training image, so model "
            f"'{model_entry.name}' (θ learned from many images) could not be judged on new "
            f"ones; use guide={fits} (an encoder)"
        )


def _build_optim(node: Any) -> pyro.optim.PyroOptim:
    settings = OmegaConf.to_container(node, resolve=True)
    require(
        isinstance(settings, dict) and "_target_" in settings and "name" in settings,
        "optim config needs 'name' and '_target_' (e.g. _target_: pyro.optim.Adam)",
    )
    name = settings.pop("name")
    learning_rate = settings.get("optim_args", {}).get("lr")
    if learning_rate is not None:
        require(
            isinstance(learning_rate, int | float) and learning_rate > 0,
            f"optim.optim_args.lr must be a number > 0, got {learning_rate!r}",
        )
    try:
        optim = instantiate(settings, _convert_="all")
    except Exception as error:  # Hydra wraps the constructor's own error
        raise ConfigError(f"optim '{name}' could not be built: {error}") from None
    require(
        isinstance(optim, pyro.optim.PyroOptim),
        f"optim '{name}' must build a pyro.optim optimiser, got {type(optim).__name__}",
    )
    return optim


def check_compatible(components: Components) -> None:
    """Combinations that cannot work fail here, naming the fix."""
    if components.fitter_name != "svi":
        _check_fitter(components)
        return
    model, objective_entry = components.model, components.objective_entry
    if model.enumerated_sites and not getattr(components.objective, "enumerates", False):
        raise ConfigError(
            f"model '{components.model_entry.name}' has discrete latents "
            f"{list(model.enumerated_sites)} that objective '{objective_entry.name}' cannot "
            "enumerate; use objective=trace_enum, or marginalise them "
            "(e.g. model.assignment=marginalized)"
        )
    objective = components.objective
    if getattr(objective, "model_gradient", "bound") is None:
        names = model_parameter_names(model, model.train_data)
        if names:
            raise refuse_model_parameters(f"objective '{objective_entry.name}'", names[0])
    if getattr(objective, "requires_reparam", False):
        with poutine.block():
            guide_trace = poutine.trace(components.guide).get_trace(model.train_data)
        require_reparameterized(
            guide_trace,
            f"objective '{objective_entry.name}'",
            stratified=getattr(objective, "supports_stratified", False),
        )


def _check_fitter(components: Components) -> None:
    """A non-SVI fitter: a known name, its own options, a Gaussian guide, no θ to learn."""
    name = components.fitter_name
    if name not in fitters:
        raise ConfigError(
            f"unknown fitter '{name}'; choose svi or one of {', '.join(fitters.names())}"
        )
    entry = fitters.get(name)
    check_parameters(f"fitter '{name}'", entry.factory, components.fitter_params, num_positional=2)
    if not entry.trait("any_reparameterised_guide", False):
        require_gaussian_guide(components.guide, name)
    names = model_parameter_names(components.model, components.model.train_data)
    if names:
        raise ConfigError(
            f"fitter={name} fits the guide only, but model '{components.model_entry.name}' "
            f"has parameters to learn ({names[0]}, ...); use fitter=svi"
        )


def evaluation_guide(components: Components) -> Any:
    """The guide to measure: itself, or what its registry entry names (e.g. Laplace's Gaussian)."""
    method = components.guide_entry.trait("evaluate_with", None)
    if method is None:
        return components.guide
    return getattr(components.guide, method)(components.model.train_data)
