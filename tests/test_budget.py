"""Budgets, model-evaluation counting, the stopping rule and anytime checkpoints."""

from __future__ import annotations

import itertools

import pyro
import pytest
from pyro.infer import SVI, Trace_ELBO

from pyro_elbo_lab.engine import CountedModel
from pyro_elbo_lab.engine.graph_threads import available_threads
from pyro_elbo_lab.errors import ConfigError
from pyro_elbo_lab.lab import run
from pyro_elbo_lab.lab.budget import checkpoint_fractions
from pyro_elbo_lab.lab.convergence import ConvergenceSettings, RelativeChangeRule
from pyro_elbo_lab.lab.step_size import BudgetDecay
from pyro_elbo_lab.registry import guides, models, objectives


def _counted(loss, steps: int = 3) -> int:
    model = models.build("normal_normal", num_train=10)
    guide = guides.build("normal", model)
    counted = CountedModel(model)
    svi = SVI(counted, guide, pyro.optim.Adam({"lr": 0.01}), loss=loss)
    for _ in range(steps):
        svi.step(model.train_data)
    return counted.count


DEPTH = {"max_plate_nesting": 1}  # normal_normal's data plate; the lab passes each model's


@pytest.mark.parametrize(
    ("loss", "per_step"),
    [
        (Trace_ELBO(), 1),
        (Trace_ELBO(num_particles=4), 4),  # Pyro's Python loop over particles
        (Trace_ELBO(num_particles=4, vectorize_particles=True, **DEPTH), 4),
        (objectives.build("iwae", num_particles=8, **DEPTH), 8),
        (objectives.build("stl", num_particles=5, **DEPTH), 5),
        (objectives.build("renyi", alpha=0.5, num_particles=6, **DEPTH), 6),
    ],
    ids=["trace", "trace-loop", "trace-vectorised", "iwae", "stl", "renyi"],
)
def test_a_step_costs_one_model_evaluation_per_particle(loss, per_step):
    assert _counted(loss, steps=3) == 3 * per_step


def test_a_plate_depth_guess_costs_one_model_pass_once():
    # Without max_plate_nesting the objective runs the model once, unvectorised, to guess it.
    assert _counted(objectives.build("iwae", num_particles=8), steps=3) == 3 * 8 + 1


def test_a_model_evals_budget_gives_k_particle_objectives_k_times_fewer_steps(compose_config):
    budget = ("steps=10000", "budget.kind=model_evals", "budget.model_evals=240")
    one = run(compose_config("model=normal_normal", "objective=trace", *budget))
    eight = run(
        compose_config(
            "model=normal_normal", "objective=iwae", "objective.num_particles=8", *budget
        )
    )
    assert (one["fit"]["steps_completed"], one["fit"]["model_evals"]) == (240, 240)
    assert (eight["fit"]["steps_completed"], eight["fit"]["model_evals"]) == (30, 240)
    assert one["fit"]["stopped_by"] == eight["fit"]["stopped_by"] == "model_evals"


def test_the_compiled_step_counts_its_particles_too(compose_config):
    record = run(
        compose_config(
            "model=gmm",
            "objective=iwae",
            "objective.num_particles=4",
            "objective.compile=true",
            "optim=fused_adam",
            "steps=50",
            "budget.kind=model_evals",
            "budget.model_evals=40",
        )
    )
    assert record["status"] == "ok", record["message"]
    assert (record["fit"]["steps_completed"], record["fit"]["model_evals"]) == (10, 40)
    # the record says how many threads the compiled update chose, within what torch may use
    (threads,) = record["fit"]["fitter"]["compiled_threads"]
    assert 1 <= threads <= available_threads()


def test_the_step_cap_stops_a_budget_it_reaches_first(compose_config):
    record = run(compose_config("steps=7", "budget.kind=model_evals", "budget.model_evals=10000"))
    assert record["fit"]["stopped_by"] == "steps" and record["fit"]["steps_completed"] == 7


def test_a_seconds_budget_stops_on_fitting_time(compose_config):
    record = run(
        compose_config(
            "model=normal_normal", "steps=1000000", "budget.kind=seconds", "budget.seconds=0.3"
        )
    )
    assert record["fit"]["stopped_by"] == "seconds"
    assert record["fit"]["wall_time_s"] >= 0.3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("budget.kind=evals",), "budget.kind must be one of steps, model_evals, seconds"),
        (("budget.kind=model_evals",), "budget.model_evals (with budget.kind=model_evals)"),
        (("budget.kind=seconds", "budget.seconds=-1"), "budget.seconds"),
        (("convergence.tol_rel_obj=0",), "convergence.tol_rel_obj"),
        (("checkpoints.count=-1",), "checkpoints.count"),
        (("final_lr_fraction=0",), "final_lr_fraction must be in (0, 1]"),
    ],
)
def test_bad_budget_settings_fail_before_compute_with_the_key(compose_config, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run(compose_config(*overrides))


def test_the_rule_stops_a_flat_loss_after_history_checks():
    rule = RelativeChangeRule(ConvergenceSettings(tol_rel_obj=1e-3, check_every=10, history=3))
    reasons = [rule.update(100.0) for _ in range(40)]
    # checks at steps 10, 20, 30, 40; changes from the second on; three changes by step 40
    assert reasons[:39] == [None] * 39 and "tol_rel_obj 0.001" in reasons[39]


def test_the_rule_does_not_stop_a_loss_still_falling_fast():
    rule = RelativeChangeRule(ConvergenceSettings(tol_rel_obj=1e-3, check_every=10, history=3))
    assert all(rule.update(1000.0 * 0.99**step) is None for step in range(500))


#: a Normal-Normal run long enough to meet a loose stopping rule well before its cap
CONVERGING = (
    "model=normal_normal", "steps=20000", "convergence.tol_rel_obj=0.001",
    "convergence.check_every=50",
)  # fmt: skip


def test_a_converging_run_stops_early_and_says_why(compose_config):
    fit = run(compose_config(*CONVERGING))["fit"]
    assert fit["stopped_by"] == "converged" and fit["steps_completed"] < 20000
    assert "tol_rel_obj 0.001" in fit["convergence"]


def test_checkpoint_fractions_are_log_spaced_and_end_at_the_budget():
    fractions = checkpoint_fractions(5)
    assert fractions[0] == pytest.approx(0.01) and fractions[-1] == 1.0
    ratios = [b / a for a, b in itertools.pairwise(fractions)]
    assert ratios == pytest.approx([ratios[0]] * 4)


def test_checkpoints_record_the_metric_without_touching_the_fit(compose_config):
    base = ("model=normal_normal", "steps=200", "seed=4")
    plain = run(compose_config(*base))
    measured = run(compose_config(*base, "checkpoints.count=6"))
    # the checkpoint evaluations draw from restored RNG state: the fit is bit-identical
    assert measured["fit"]["loss_history"] == plain["fit"]["loss_history"]
    assert measured["metrics"]["elbo"] == plain["metrics"]["elbo"]
    points = measured["fit"]["checkpoints"]
    assert [p["step"] for p in points] == sorted({p["step"] for p in points})
    assert points[-1]["step"] == 200 and len(points) <= 6
    assert all(
        {"kl_to_posterior", "posterior_mean_error", "model_evals", "seconds"} <= set(p)
        for p in points
    )
    # the fit's clock leaves the checkpoint evaluations out
    assert points[-1]["seconds"] == measured["fit"]["wall_time_s"]


def test_a_run_that_converges_early_gets_a_last_checkpoint_at_its_stop(compose_config):
    fit = run(compose_config(*CONVERGING, "checkpoints.count=4"))["fit"]
    assert fit["stopped_by"] == "converged"
    assert fit["checkpoints"][-1]["step"] == fit["steps_completed"]


def test_the_step_size_decays_geometrically_over_the_budget():
    model = models.build("normal_normal", num_train=10)
    guide = guides.build("normal", model)
    optim = pyro.optim.Adam({"lr": 0.1})
    svi = SVI(model, guide, optim, loss=Trace_ELBO())
    svi.step(model.train_data)
    decay = BudgetDecay(optim, final_lr_fraction=0.01)
    rates = []
    for fraction in (0.0, 0.5, 1.0, 2.0):
        decay.update(fraction)
        rates.append({g["lr"] for o in optim.optim_objs.values() for g in o.param_groups})
    assert [r.pop() for r in rates] == pytest.approx([0.1, 0.01, 0.001, 0.001])


def test_the_decay_multiplies_what_clipped_adam_does_itself():
    model = models.build("normal_normal", num_train=10)
    guide = guides.build("normal", model)
    optim = pyro.optim.ClippedAdam({"lr": 0.1, "lrd": 0.5})
    svi = SVI(model, guide, optim, loss=Trace_ELBO())

    def rates() -> set[float]:
        return {g["lr"] for o in optim.optim_objs.values() for g in o.param_groups}

    svi.step(model.train_data)  # ClippedAdam halves its lr every step
    decay = BudgetDecay(optim, final_lr_fraction=0.1)
    decay.update(1.0)
    svi.step(model.train_data)
    assert sorted(rates()) == pytest.approx([0.1 * 0.5 * 0.1 * 0.5])


def test_a_decaying_step_is_refused_by_the_compiled_adam_update(compose_config):
    with pytest.raises(ConfigError, match="final_lr_fraction < 1 changes the learning rate"):
        run(
            compose_config(
                "model=gmm",
                "objective=iwae",
                "objective.compile=true",
                "optim=fused_adam",
                "final_lr_fraction=0.1",
            )
        )
