"""Compositions: different families for different latents (AutoStructured, AutoGuideList)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pyro import poutine
from pyro.infer import autoguide
from torch.distributions import biject_to

from pyro_elbo_lab.engine import distribution_name
from pyro_elbo_lab.errors import ConfigError, require, require_positive_float
from pyro_elbo_lab.guides.pyro_builtin import guide_target, latent_sites
from pyro_elbo_lab.guides.quantiles import SampledQuantiles
from pyro_elbo_lab.registry import guides

CONDITIONALS = ("delta", "normal", "mvn")


class AutoStructuredGuide(SampledQuantiles, autoguide.AutoStructured):
    """Pyro's AutoStructured with sampled ``quantiles`` (Pyro gives it only ``median``)."""


class ModelPart:
    """``model`` with only ``sites`` exposed to a guide; other attributes pass through,
    so a part can be built by any registered guide factory."""

    def __init__(self, model: Any, sites: Sequence[str]) -> None:
        self.model = model
        self.sites = list(sites)
        self._blocked = poutine.block(model, expose=self.sites)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._blocked(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


def _check_conditional(site: str, kind: Any) -> None:
    require(
        kind in CONDITIONALS,
        f"guide.conditionals[{site}] must be one of {CONDITIONALS}, got {kind!r}",
    )


@guides.register("structured")
def structured(
    model: Callable[..., Any],
    conditionals: str | Mapping[str, str] = "mvn",
    dependencies: str | Mapping[str, Mapping[str, str]] = "linear",
    init_scale: float = 0.1,
) -> AutoStructuredGuide:
    """Pyro's AutoStructured: per-site delta/normal/mvn, linear dependencies between sites."""
    require_positive_float("guide.init_scale", init_scale)
    if isinstance(conditionals, str):
        _check_conditional("*", conditionals)
    else:
        conditionals = dict(conditionals)
        for site, kind in conditionals.items():
            _check_conditional(site, kind)
    if isinstance(dependencies, str):
        require(
            dependencies == "linear",
            f"guide.dependencies must be 'linear' or a mapping, got {dependencies!r}",
        )
    else:
        dependencies = {site: dict(upstream) for site, upstream in dependencies.items()}
    for name, site in latent_sites(model).items():
        # Pyro's AutoStructured asserts this as it samples; say so before any step
        if biject_to(site["fn"].support).codomain.event_dim != site["fn"].event_dim:
            raise ConfigError(
                f"guide=structured (Pyro's AutoStructured) needs each site's support to span "
                f"its event dims, which site '{name}' ({distribution_name(site['fn'])}, "
                "e.g. a flat prior) does not; use guide=mvn or guide=normal"
            )
    return AutoStructuredGuide(
        guide_target(model),
        conditionals=conditionals,
        dependencies=dependencies,
        init_scale=init_scale,
    )


@guides.register("guide_list")
def guide_list(
    model: Callable[..., Any], parts: Sequence[Mapping[str, Any]] = ()
) -> autoguide.AutoGuideList:
    """Pyro's AutoGuideList: each part a registered guide over the latents it names.

    ``parts`` is a list of ``{guide: NAME, sites: [...], ...options}``; the sites of
    the parts must not overlap, and any latent no part names gets ``guide=normal``.
    """
    require(len(parts) > 0, "guide.parts needs at least one {guide: NAME, sites: [...]} entry")
    target = guide_target(model)
    latents = list(latent_sites(model))
    claimed: list[str] = []
    composed = autoguide.AutoGuideList(target)
    for index, part in enumerate(parts):
        options = dict(part)
        name, sites = options.pop("guide", None), list(options.pop("sites", []))
        require(
            isinstance(name, str) and sites,
            f"guide.parts[{index}] needs 'guide' (a registered name) and a non-empty 'sites' list",
        )
        unknown = sorted(set(sites) - set(latents))
        if unknown:
            raise ConfigError(
                f"guide.parts[{index}] names {unknown}, not latents of the model {latents}; "
                "give guide.parts over the model's own latents"
            )
        twice = sorted(set(sites) & set(claimed))
        if twice:
            raise ConfigError(
                f"guide.parts[{index}]: sites {twice} already belong to an earlier part"
            )
        claimed += sites
        composed.append(guides.build(name, ModelPart(model, sites), **options))
    rest = [site for site in latents if site not in claimed]
    if rest:
        composed.append(guides.build("normal", ModelPart(model, rest)))
    return composed
