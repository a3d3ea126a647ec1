r"""Markovian score climbing: inclusive-KL VI driven by a conditional importance sampler."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from pyro_elbo_lab.engine import detached_values, particle_plate
from pyro_elbo_lab.errors import ConfigError, require_positive_int
from pyro_elbo_lab.objectives.base import ParticleBatch, ParticleObjective
from pyro_elbo_lab.registry import objectives


@objectives.register("msc")
class MarkovianScoreClimbing(ParticleObjective):
    r"""Markovian score climbing (Naesseth, Lindsten & Blei 2020).

    Minimises the inclusive KL(p(z|x) ‖ q), i.e. maximises
    :math:`\mathbb E_{p(z\mid x)}[\log q_\phi(z)]`, by stochastic gradient ascent with
    :math:`\nabla_\phi \log q_\phi(z[t])` at the state :math:`z[t]` of a Markov chain
    whose kernel leaves the posterior invariant, so the gradients are asymptotically
    unbiased (unlike RWS's self-normalised ones, biased at every step). The kernel is
    conditional importance sampling (CIS): keep the chain's state as particle 1, draw
    K − 1 fresh particles from the current q, weigh all K by
    :math:`w_k = p(x, z_k)/q(z_k)` and pick the new state with probability
    :math:`\propto w_k`. Model parameters follow :math:`\nabla_\theta \log p_\theta(x, z[t])`.

    ``num_chains`` independent chains run side by side (K × chains particles in one
    vectorised pass) and their gradients are averaged. The states live in the objective
    across ``svi.step`` calls; :meth:`reset` forgets them (e.g. before fitting a new
    model). ``loss`` and ``evaluate_loss`` never move the chains. The reported loss is
    the self-normalised estimate of the cross-entropy
    :math:`-\mathbb E_{p(z\mid x)}[\log q(z)] = \mathrm{KL}(p\,\|\,q) + H[p(z\mid x)]`.
    The gradient is the score form, so any guide works (no reparameterisation). The
    chains hold every latent, so local latents of a subsampled data plate are refused.

    :param num_particles: K per chain (>= 2: the state plus K − 1 proposals).
    :param num_chains: independent CIS chains.
    :param compile: run the step compiled; the chain states go in and out of it.

    References: C. A. Naesseth, F. Lindsten, D. M. Blei, "Markovian Score Climbing:
    Variational Inference with KL(p||q)", NeurIPS 2020.
    """

    requires_reparam = False
    #: refuses a model with parameters: θ follows log p at the chain's state, a biased
    #: estimate of no bound's gradient
    model_gradient = None
    supports_per_datapoint = False
    carries_state = True

    def __init__(self, num_particles: int = 8, num_chains: int = 1, **options: Any) -> None:
        require_positive_int("objective.num_particles", num_particles, minimum=2)
        require_positive_int("objective.num_chains", num_chains)
        super().__init__(num_particles=num_particles * num_chains, **options)
        self.particles_per_chain = num_particles
        self.num_chains = num_chains
        self._state: dict[str, torch.Tensor] | None = None
        self._state_names: tuple[str, ...] = ()

    def reset(self) -> None:
        """Forget the chains' states: the next step starts them from fresh draws of q."""
        self._state = None

    def compile_state(self) -> tuple:
        return (self._state is not None,)  # fresh chains, or chains to continue

    def compile_carry(self) -> list[torch.Tensor]:
        return [] if self._state is None else list(self._state.values())

    def load_compile_carry(self, values: list[torch.Tensor]) -> None:
        self._state = dict(zip(self._state_names, values, strict=True)) if values else None

    @property
    def _state_indices(self) -> torch.Tensor:
        return torch.arange(self.num_chains) * self.particles_per_chain

    def _particle_axis(self, site: dict) -> int:
        return site["value"].dim() - site["fn"].event_dim - (self.model_plate_nesting + 1)

    def guide_values(self, guide: Callable, args: tuple, kwargs: dict) -> poutine.Trace:
        """Fresh detached draws of q, with each chain's state as its first particle."""
        plate = particle_plate(self.num_particles, self.model_plate_nesting)
        draws = detached_values(poutine.trace(plate(guide)).get_trace(*args, **kwargs))
        if self._state is None:
            return draws
        for name, state in self._state.items():
            site = draws.nodes.get(name)
            if site is None:
                raise ConfigError(
                    f"msc chain state has a site '{name}' this guide does not draw; call "
                    "objective.reset() before fitting another guide"
                )
            axis = self._particle_axis(site)
            value = site["value"]
            expected = torch.Size((*value.shape[:axis], self.num_chains, *value.shape[axis + 1 :]))
            if state.shape != expected:
                raise ConfigError(
                    f"msc chain state for '{name}' has shape {tuple(state.shape)} but the guide "
                    f"now draws {tuple(expected)} per chain (different data?); call "
                    "objective.reset() before fitting another model or dataset"
                )
            indices = self._state_indices.to(value.device)
            draws.nodes[name] = {**site, "value": value.index_copy(axis, indices, state)}
        return draws

    def _chain_view(self, per_particle: torch.Tensor) -> torch.Tensor:
        return per_particle.reshape(self.num_chains, self.particles_per_chain)

    def bound(self, batch: ParticleBatch) -> torch.Tensor:
        weights = batch.weights
        self._require_global_latents(weights.replay_trace)
        normalized = torch.softmax(self._chain_view(weights.log_weights.detach()), -1)
        return (normalized * self._chain_view(weights.log_q)).sum(-1).mean()

    def surrogate(self, batch: ParticleBatch) -> torch.Tensor:
        weights = batch.weights
        log_weights = self._chain_view(weights.log_weights.detach())
        # Categorical(logits) by Gumbel-max, from uniforms of a fixed shape (a compiled
        # step draws those outside its graph, in the eager engine's order)
        uniform = torch.rand(log_weights.shape, dtype=log_weights.dtype, device=log_weights.device)
        tiny = torch.finfo(log_weights.dtype).tiny
        picked = (log_weights - torch.log(-torch.log(uniform.clamp(min=tiny)))).argmax(-1)
        chosen = self._state_indices.to(picked.device) + picked
        self._state = self._next_state(weights.replay_trace, chosen)
        return (weights.log_q[chosen] + weights.log_p[chosen]).mean()

    def _next_state(self, trace: poutine.Trace, chosen: torch.Tensor) -> dict[str, torch.Tensor]:
        state = {}
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site["is_observed"]:
                continue
            if site_is_subsample(site):
                continue
            axis = self._particle_axis(site)
            state[name] = site["value"].detach().index_select(axis, chosen.to(site["value"].device))
        self._state_names = tuple(state)
        return state

    def _require_global_latents(self, trace: poutine.Trace) -> None:
        """Chains cannot keep latents of a minibatch: refuse (loss and step alike)."""
        for name, site in trace.nodes.items():
            latent = site["type"] == "sample" and not site["is_observed"]
            if not latent or site_is_subsample(site):
                continue
            for frame in site["cond_indep_stack"]:
                if frame.full_size is not None and frame.size < frame.full_size:
                    raise ConfigError(
                        f"msc keeps each chain's latents across steps, but '{name}' is local to "
                        f"the subsampled plate '{frame.name}' (a new minibatch each step); fit "
                        "on the full data (no subsample_size) or use objective=rws_dreg"
                    )
