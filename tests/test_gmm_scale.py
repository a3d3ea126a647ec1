"""GMM at scale: minibatch scaling, enumerated = marginalised, compiled = eager, bad data.

Statistical checks use 4 Monte Carlo standard errors estimated from the draws themselves.
"""

from __future__ import annotations

import inspect
import math
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO
from pyro.infer.autoguide import AutoNormal

from pyro_elbo_lab.engine import WARNING_PREFIX, CompiledSVI
from pyro_elbo_lab.errors import ConfigError
from pyro_elbo_lab.models import GaussianMixture
from pyro_elbo_lab.objectives import (
    IWAE,
    VIMCO,
    BetaELBO,
    MarkovianScoreClimbing,
    ParticleObjective,
)
from pyro_elbo_lab.optim import FusedAdam
from pyro_elbo_lab.registry import objectives

FAST_COMPILE = {"backend": "aot_eager"}  # the traced graph without inductor's C++ build


def _fitted_guide(model: GaussianMixture, steps: int = 30) -> AutoNormal:
    guide = AutoNormal(poutine.block(model.marginal_model, hide=["assignment"]))
    svi = SVI(model.marginal_model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    with model.without_subsampling():
        for _ in range(steps):
            svi.step(model.train_data)
    return guide


@pytest.mark.slow
@pytest.mark.parametrize("with_replacement", [True, False])
def test_minibatch_elbo_is_an_unbiased_estimate_of_the_full_data_elbo(with_replacement):
    model = _minibatch_gmm(3, batch=20, with_replacement=with_replacement)
    guide = _fitted_guide(model)
    elbo = BetaELBO(num_particles=200)
    minibatch = torch.tensor([-elbo.loss(model, guide, model.train_data) for _ in range(400)])
    with model.without_subsampling():
        full = torch.tensor([-elbo.loss(model, guide, model.train_data) for _ in range(40)])
    error = math.sqrt(minibatch.var() / len(minibatch) + full.var() / len(full))
    assert abs(minibatch.mean() - full.mean()) < 4 * error
    # and the scaling matters: unscaled minibatch sums would sit near 1/10 of the full value
    assert abs(minibatch.mean() - full.mean()) < 0.05 * abs(full.mean())


def test_minibatch_indices_with_replacement_are_uniform_and_cost_no_permutation(monkeypatch):
    """The default draw never permutes all N rows (O(batch)); its indices are i.i.d.
    uniform: each row's count over 400 draws of 50 is Binomial(20000, 1/200), so the
    chi-square statistic of the 200 counts sits within 4 sd of its mean 199."""
    model = _minibatch_gmm(2, batch=50)
    monkeypatch.setattr(torch, "randperm", _refuse_permutation)
    counts = torch.zeros(200)
    for _ in range(400):
        index = poutine.trace(model.model).get_trace(model.train_data).nodes["data"]["value"]
        assert index.shape == (50,)
        counts += torch.bincount(index, minlength=200)
    expected = 400 * 50 / 200
    chi_square = float(((counts - expected) ** 2 / expected).sum())
    assert abs(chi_square - 199) < 4 * math.sqrt(2 * 199)


def test_minibatch_indices_without_replacement_are_distinct():
    model = _minibatch_gmm(2, batch=50, with_replacement=False)
    index = poutine.trace(model.model).get_trace(model.train_data).nodes["data"]["value"]
    assert index.unique().numel() == 50


def _minibatch_gmm(components: int, batch: int, with_replacement: bool = True):
    return GaussianMixture(
        num_components=components,
        num_train=200,
        num_heldout=0,
        subsample_size=batch,
        subsample_with_replacement=with_replacement,
    )


def _refuse_permutation(*args, **kwargs):
    raise AssertionError("a minibatch with replacement must not permute the data")


@pytest.mark.parametrize("covariance", ["diagonal", "full"])
def test_enumerated_and_marginalised_models_give_the_same_elbo(covariance):
    options = {"num_components": 3, "num_train": 40, "covariance": covariance}
    enumerated = GaussianMixture(assignment="enumerated", **options)
    marginal = GaussianMixture(**options)
    guide = _fitted_guide(marginal, steps=10)
    pyro.set_rng_seed(1)
    enum_loss = TraceEnum_ELBO(max_plate_nesting=1).loss(
        enumerated.model, guide, enumerated.train_data
    )
    pyro.set_rng_seed(1)
    marginal_loss = Trace_ELBO().loss(marginal.model, guide, marginal.train_data)
    pyro.set_rng_seed(1)
    engine_loss = IWAE(num_particles=1, max_plate_nesting=1).loss(
        marginal.model, guide, marginal.train_data
    )
    assert enum_loss == pytest.approx(marginal_loss, rel=1e-5)
    assert engine_loss == pytest.approx(marginal_loss, rel=1e-5)


def _compilable_engine_objectives() -> list:
    """Every registered engine objective that compiles; iwae in the fast selection."""
    names = []
    for entry in objectives:
        objective = objectives.build(entry.name)
        if isinstance(objective, ParticleObjective):
            marks = () if entry.name == "iwae" else (pytest.mark.slow,)
            names.append(pytest.param(entry.name, marks=marks))
    return names


def _loss_and_grads(objective, model, guide, seed):
    pyro.set_rng_seed(seed)
    loss = objective.differentiable_loss(model.model, guide, model.train_data)
    params = [pyro.param(name).unconstrained() for name in pyro.get_param_store()]
    return loss.detach(), torch.autograd.grad(loss, params)


@pytest.mark.parametrize("name", _compilable_engine_objectives())
def test_compiled_and_eager_steps_agree_for_every_engine_objective(name):
    model = GaussianMixture(num_components=3, num_train=60, num_heldout=0)
    guide = AutoNormal(model.model)
    options = (
        {"num_particles": 4}
        if "num_particles" in inspect.signature(objectives.get(name).factory).parameters
        else {}
    )
    eager = objectives.build(name, **options)
    compiled = objectives.build(name, compile=True, compile_options=FAST_COMPILE, **options)
    guide(model.train_data)  # the guide's set-up draws, before either objective runs
    for objective in (eager, compiled):  # set up (and trace) outside the check; twice, so
        for seed in (1, 2):  # objectives with state (msc) trace their continuing step too
            pyro.set_rng_seed(seed)
            objective.differentiable_loss(model.model, guide, model.train_data)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback: it truly compiled
        compiled_loss, compiled_grads = _loss_and_grads(compiled, model, guide, seed=3)
    eager_loss, eager_grads = _loss_and_grads(eager, model, guide, seed=3)
    assert compiled.compiled is not None and all(compiled.compiled._steps.values())
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-5, atol=1e-4)
    for got, want in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("covariance", ["diagonal", "full"])
def test_inductor_compiled_fit_matches_the_eager_fit(covariance):
    """Through torch.compile's default compiler, SVI with FusedAdam follows the eager run
    with pyro.optim.Adam (same draws: the build restores the RNG state)."""
    trajectories = []
    for compile in (False, True):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        model = GaussianMixture(num_components=3, num_train=100, covariance=covariance)
        guide = AutoNormal(model.model)
        optim = (FusedAdam if compile else pyro.optim.Adam)({"lr": 0.02})
        svi = SVI(model, guide, optim, IWAE(num_particles=2, compile=compile))
        trajectories.append([svi.step(model.train_data) for _ in range(20)])
    eager, compiled = (np.array(t) for t in trajectories)
    np.testing.assert_allclose(compiled, eager, rtol=1e-3)


def test_a_model_that_is_not_static_falls_back_to_eager_with_a_warning():
    def model(data):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        scale = 1.0 if float(z.detach()) > 0 else 2.0  # Python branch on a sampled value
        with pyro.plate("data", data.shape[0]):
            pyro.sample("obs", dist.Normal(z, scale), obs=data)

    data = torch.randn(10)
    guide = AutoNormal(model)
    objective = IWAE(num_particles=1, max_plate_nesting=1, compile=True)
    with pytest.warns(RuntimeWarning, match=WARNING_PREFIX + ".*running the eager engine"):
        objective.differentiable_loss(model, guide, data)
    loss = objective.differentiable_loss(model, guide, data)  # eager from now on, no error
    assert torch.isfinite(loss)


def test_a_program_whose_shapes_depend_on_the_data_is_traced_on_real_tensors():
    """Boolean indexing of the data has a shape fake tensors cannot know: the step is
    traced on the real tensors (the shape is fixed by the data), and compiles without
    a fallback."""

    def model(data):
        z = pyro.sample("z", dist.Normal(0.0, 2.0))
        positive = data[data > 0]
        with pyro.plate("data", positive.shape[0]):
            pyro.sample("obs", dist.Normal(z, 1.0), obs=positive)

    data = torch.randn(20)
    guide = AutoNormal(model)
    objective = IWAE(
        num_particles=2, max_plate_nesting=1, compile=True, compile_options=FAST_COMPILE
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for _ in range(2):
            objective.differentiable_loss(model, guide, data).backward()
    (step,) = objective.compiled._steps.values()
    assert step.tracing == "real"


def test_a_static_model_is_traced_on_fake_tensors_and_compiles_at_first_use():
    """Tracing never runs the program at full size (fake tensors), and under CompiledSVI
    only the whole update is compiled: the loss-only step stays uncompiled."""
    pyro.clear_param_store()
    model = GaussianMixture(num_components=3, num_train=50)
    objective = IWAE(num_particles=2, compile=True, compile_options=FAST_COMPILE)
    svi = CompiledSVI(model, AutoNormal(model.model), FusedAdam({"lr": 0.05}), objective)
    for _ in range(3):
        svi.step(model.train_data)
    (step,) = objective.compiled._steps.values()
    assert step.tracing == "fake"
    assert step.graph.compiled is None
    ((update, _, _),) = svi._updates.values()
    assert update.compiled is not None


def _broken_backend(graph, example_inputs):
    raise RuntimeError("no kernels today")


def _wrong_backend(graph, example_inputs):
    def run(*inputs):
        outputs = graph(*inputs)
        return [output + 1 for output in outputs]

    return run


@pytest.mark.parametrize(
    ("backend", "reason"),
    [(_broken_backend, "compiling the update failed"), (_wrong_backend, "disagrees")],
)
def test_a_checked_graph_falls_back_to_the_traced_one_and_writes_its_inputs_as_it_would(
    backend, reason
):
    """A compiler failure or a compiled graph that disagrees: one warning naming the
    reason, the traced result, and the inputs the graph writes in place written once,
    as the traced graph writes them (not twice, not by the faulty compiled run)."""
    from pyro_elbo_lab.engine.compiled import CheckedGraph, record_graph

    def update(param, grad):
        param.copy_(param - 0.5 * grad)
        return ((param * param).sum(),)

    param, grad = torch.ones(3), torch.full((3,), 2.0)
    graph = record_graph(update, [param.clone(), grad], "fake")
    checked = CheckedGraph(graph, {"backend": backend}, "update")
    with pytest.warns(RuntimeWarning, match=reason):
        (loss,) = checked(param, grad)
    assert torch.equal(param, torch.zeros(3)) and float(loss) == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the traced graph from now on
        checked(param, grad)
    assert torch.equal(param, torch.full((3,), -1.0))
    assert checked.compiled is None


@pytest.mark.slow
def test_stl_with_eight_particles_compiles_despite_inductors_vectorised_nan():
    """torch 2.13's vectorised CPU kernels return NaN for this graph; the check catches
    it and the scalar-kernel retry compiles it (no fallback to the traced step), with
    the eager engine's loss."""
    losses = []
    for compile in (False, True):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        model = GaussianMixture()
        objective = objectives.build("stl", num_particles=8, max_plate_nesting=1, compile=compile)
        svi = SVI(model, AutoNormal(model), pyro.optim.Adam({"lr": 0.01}), objective)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            losses.append([svi.step(model.train_data) for _ in range(3)])
    (step,) = objective.compiled._steps.values()
    assert step.graph.compiled is not None
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)


@pytest.mark.slow
def test_a_cached_compile_gives_bit_identical_steps(tmp_path, monkeypatch):
    """Inductor's on-disk cache (the lab's compile_cache_dir) serves the second build:
    the same kernels, so the loss trajectory and final parameters are bit-identical."""
    from torch._dynamo.utils import counters

    from pyro_elbo_lab.engine import compile_cache_dir, use_compile_cache

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "unused"))
    assert use_compile_cache(tmp_path / "cache") == compile_cache_dir() == tmp_path / "cache"
    runs = []
    for _ in range(2):
        torch._dynamo.reset()
        counters.clear()
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        model = GaussianMixture(num_components=3, num_train=100)
        objective = IWAE(num_particles=2, compile=True)
        svi = CompiledSVI(model, AutoNormal(model.model), FusedAdam({"lr": 0.05}), objective)
        losses = [svi.step(model.train_data) for _ in range(6)]
        params = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
        runs.append((losses, params, dict(counters["inductor"])))
    (cold_losses, cold_params, cold), (warm_losses, warm_params, warm) = runs
    assert cold.get("fxgraph_cache_miss", 0) >= 1 and cold.get("fxgraph_cache_hit", 0) == 0
    assert warm.get("fxgraph_cache_hit", 0) >= 1 and warm.get("fxgraph_cache_miss", 0) == 0
    assert warm_losses == cold_losses
    for name, value in cold_params.items():
        assert torch.equal(warm_params[name], value), name


def test_objectives_that_cannot_compile_say_why():
    with pytest.raises(ConfigError, match=r"warm-up.*warmup_steps=0 or compile=false"):
        BetaELBO(warmup_steps=10, compile=True)


def test_fused_adam_takes_the_same_steps_as_pyro_adam():
    trajectories = []
    for optim in (pyro.optim.Adam({"lr": 0.05}), FusedAdam({"lr": 0.05})):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        model = GaussianMixture(num_components=2, num_train=50)
        svi = SVI(model, AutoNormal(model.model), optim, Trace_ELBO())
        trajectories.append([svi.step(model.train_data) for _ in range(15)])
    np.testing.assert_allclose(trajectories[1], trajectories[0], rtol=1e-5)


def test_cluster_probabilities_are_responsibilities():
    model = GaussianMixture(num_components=3, num_train=30)
    weights = torch.tensor([0.2, 0.3, 0.5])
    locs = torch.tensor([[-3.0, 0.0], [0.0, 0.0], [3.0, 0.0]])
    scales = torch.ones(3, 2)
    probs = model.cluster_probabilities(
        model.train_data, weights, locs.unsqueeze(-3), scales.unsqueeze(-3)
    )
    assert probs.shape == (30, 3)
    torch.testing.assert_close(probs.sum(-1), torch.ones(30))
    point = torch.tensor([[3.0, 0.0]])
    log_joint = dist.Normal(locs, scales).to_event(1).log_prob(point) + weights.log()
    torch.testing.assert_close(
        model.cluster_probabilities(point, weights, locs.unsqueeze(-3), scales.unsqueeze(-3)),
        torch.softmax(log_joint, -1).unsqueeze(0),
    )


@pytest.mark.parametrize("suffix", [".csv", ".npy"])
def test_points_load_from_csv_and_npy_files(tmp_path, suffix):
    points = np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32)
    path = tmp_path / f"points{suffix}"
    if suffix == ".csv":
        np.savetxt(path, points, delimiter=",", header="a,b,c", comments="")
    else:
        np.save(path, points)
    model = GaussianMixture(
        num_components=2, dim=3, data_file=str(path), num_train=None, num_heldout=10
    )
    assert model.train_data.shape == (50, 3) and model.heldout_data.shape == (10, 3)
    together = torch.cat([model.train_data, model.heldout_data])
    assert sorted(together[:, 0].tolist()) == pytest.approx(sorted(points[:, 0].tolist()))


@pytest.mark.parametrize(
    ("make_file", "options", "message"),
    [
        (lambda p: np.save(p, np.array([[0.0, np.nan]] * 20)), {}, "NaN or infinite entries"),
        (
            lambda p: np.save(p, np.zeros((20, 3))),
            {},
            r"shape \(20, 3\); expected \(num_points, 2\)",
        ),
        (lambda p: np.save(p, np.zeros(20)), {}, r"shape \(20,\); expected \(num_points, 2\)"),
        (
            lambda p: np.save(p, np.zeros((4, 2))),
            {"num_heldout": 0},
            "smaller than model.num_components",
        ),
        (lambda p: np.save(p, np.zeros((20, 2))), {"num_train": 30}, "has only 20 rows left"),
    ],
)
def test_bad_data_files_fail_with_the_fix(tmp_path, make_file, options, message):
    path = tmp_path / "points.npy"
    make_file(path)
    settings = {"num_components": 5, "dim": 2, "num_train": None, "num_heldout": 0, **options}
    with pytest.raises(ConfigError, match=message):
        GaussianMixture(data_file=str(path), **settings)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"num_components": 0}, "model.num_components must be an integer >= 1"),
        (
            {"num_components": 5, "num_train": 3},
            "num_train=3 is smaller than model.num_components=5",
        ),
        ({"covariance": "full", "dim": 1}, "covariance=full needs model.dim >= 2"),
        ({"covariance": "spherical"}, "model.covariance must be one of diagonal, full"),
        ({"subsample_size": 0}, "model.subsample_size must be an integer >= 1"),
        (
            {"subsample_size": 10, "subsample_with_replacement": "yes"},
            "model.subsample_with_replacement must be true or false",
        ),
        ({"data_file": "missing.csv"}, "does not exist"),
    ],
)
def test_bad_gmm_settings_fail_with_the_fix(params, message):
    with pytest.raises(ConfigError, match=message):
        GaussianMixture(**params)


def test_training_data_of_the_wrong_dimension_is_refused():
    model = GaussianMixture(num_components=2, dim=2, num_train=20)
    with pytest.raises(ConfigError, match=r"expects data of shape \(num_points, 2\)"):
        model(torch.zeros(20, 3))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("covariance", ["diagonal", "full"])
def test_gmm_compiled_step_runs_on_cuda(covariance):
    model = GaussianMixture(
        num_components=5, num_train=2000, covariance=covariance, subsample_size=500, device="cuda"
    )
    guide = AutoNormal(model.model)
    svi = SVI(model, guide, FusedAdam({"lr": 0.05}), IWAE(num_particles=4, compile=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        losses = [svi.step(model.train_data) for _ in range(5)]
    assert all(math.isfinite(loss) for loss in losses)
    assert {p.device.type for p in pyro.get_param_store().values()} == {"cuda"}


def test_gmm_runs_on_cpu_with_every_option():
    for options in (
        {"covariance": "full"},
        {"assignment": "enumerated", "covariance": "full"},
        {"subsample_size": 10},
    ):
        model = GaussianMixture(num_components=3, num_train=40, device="cpu", **options)
        guide = AutoNormal(poutine.block(model.model, hide=["assignment"]))
        elbo = TraceEnum_ELBO(max_plate_nesting=1) if "assignment" in options else Trace_ELBO()
        svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), elbo)
        assert math.isfinite(svi.step(model.train_data))


def test_a_gmm_run_writes_cluster_probabilities_and_a_plot(compose_config, tmp_path):
    from pyro_elbo_lab.lab import run

    record = run(compose_config("model=gmm", "model.num_heldout=30"), output_dir=tmp_path)
    assert record["status"] == "ok"
    probabilities = np.load(tmp_path / record["predictions"]["cluster_probabilities"])
    assert probabilities.shape == (30, 3)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-5)
    assert (tmp_path / record["predictions"]["plot"]).stat().st_size > 1000


def _trajectory(svi_class, steps: int = 12, **objective_options) -> list[float]:
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model = GaussianMixture(num_components=3, num_train=200, subsample_size=50)
    objective = IWAE(num_particles=2, compile=True, compile_options=FAST_COMPILE)
    svi = svi_class(model, AutoNormal(model.model), FusedAdam({"lr": 0.03}), objective)
    return [svi.step(model.train_data) for _ in range(steps)]


@pytest.mark.slow
def test_compiled_svi_follows_svi_with_the_same_adam():
    """Loss, gradients and the Adam update in one graph: same trajectory as SVI (same
    minibatches and draws, moments carried over from the first, eager, step)."""
    np.testing.assert_allclose(_trajectory(CompiledSVI), _trajectory(SVI), rtol=1e-5)


def test_compiled_svi_refuses_what_it_cannot_compile():
    model = GaussianMixture(num_components=2, num_train=20)
    guide = AutoNormal(model.model)
    with pytest.raises(ConfigError, match="built with compile=true"):
        CompiledSVI(model, guide, FusedAdam({"lr": 0.1}), IWAE())
    with pytest.raises(ConfigError, match="needs optim=fused_adam"):
        CompiledSVI(model, guide, pyro.optim.Adam({"lr": 0.1}), IWAE(compile=True))
    with pytest.raises(ConfigError, match=r"\['amsgrad'\] are not supported"):
        CompiledSVI(model, guide, FusedAdam({"lr": 0.1, "amsgrad": True}), IWAE(compile=True))


@pytest.mark.slow
def test_the_lab_compiles_the_whole_step_when_asked(compose_config, tmp_path, monkeypatch):
    from pyro_elbo_lab.engine import CountedModel, compile_cache_dir
    from pyro_elbo_lab.lab import run
    from pyro_elbo_lab.lab.components import build_components
    from pyro_elbo_lab.lab.fit import _svi

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(compile_cache_dir()))  # restored after
    overrides = (
        "model=gmm",
        "objective=iwae",
        "objective.compile=true",
        "+objective.compile_options={backend: aot_eager}",
        "optim=fused_adam",
        f"compile_cache_dir={tmp_path / 'cache'}",
    )
    config = compose_config(*overrides)
    components = build_components(config)
    assert isinstance(_svi(components, CountedModel(components.model)), CompiledSVI)
    record = run(config)
    assert record["status"] == "ok"
    assert compile_cache_dir() == tmp_path / "cache" and (tmp_path / "cache").is_dir()
    # tracing (step 1) and compiling the update (step 2) are set-up, not steady steps
    fit = record["fit"]
    assert 0 < fit["setup_time_s"] <= fit["wall_time_s"]
    steady = fit["wall_time_s"] - fit["setup_time_s"]
    assert fit["steps_per_second"] == pytest.approx((fit["steps_completed"] - 2) / steady)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["trace_graph", "vimco"])
def test_score_function_objectives_train_the_sampled_assignment_gmm(name):
    """Sampled assignments with a per-point categorical guide: the score-function
    objectives this mode is for both train it (the loss falls by more than half)."""
    from pyro.infer import TraceGraph_ELBO

    from pyro_elbo_lab.registry import guides

    model = GaussianMixture(num_components=3, num_train=100, assignment="sampled")
    guide = guides.build("discrete_local", model)
    objective = (
        TraceGraph_ELBO(max_plate_nesting=1) if name == "trace_graph" else VIMCO(num_particles=8)
    )
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), objective)
    losses = [svi.step(model.train_data) for _ in range(300)]
    assert np.mean(losses[-30:]) < 0.5 * np.mean(losses[:10])
    assert guide.median(model.train_data)["assignment"].shape == (100,)


@pytest.mark.slow
def test_msc_chains_pass_through_the_compiled_step():
    """MSC's chain states go into the compiled step and come back out: ten SVI steps
    follow the eager ones (same draws, same states)."""
    trajectories = []
    for compile in (False, True):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        model = GaussianMixture(num_components=2, num_train=50)
        options = {"compile_options": FAST_COMPILE} if compile else {}
        objective = MarkovianScoreClimbing(
            num_particles=4, num_chains=2, compile=compile, **options
        )
        svi = SVI(model, AutoNormal(model.model), pyro.optim.Adam({"lr": 0.05}), objective)
        trajectories.append([svi.step(model.train_data) for _ in range(10)])
        if compile:
            assert all(objective.compiled._steps.values())
    np.testing.assert_allclose(trajectories[1], trajectories[0], rtol=1e-5)
