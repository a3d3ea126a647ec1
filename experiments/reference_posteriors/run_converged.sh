#!/usr/bin/env bash
# Issues 29 E and 30 F: verdicts at convergence, and the cost of arriving.
#   bash experiments/reference_posteriors/run_converged.sh [OUTPUT_DIR]
#   (default: experiments/reference_posteriors/converged; QUICK=1: two posteriors;
#   POSTERIORS="kidiq earnings ...": those posteriors only; STAGES="cost bias": those
#   steps only (default all: optimum cost bias); METHODS="laplace dadvi saa gsm_bam": those
#   cost rows only (default all: median laplace dadvi raabbvi saa gsm_bam pathfinder);
#   BIAS_SEEDS=0: the bias runs' seeds (default 0,1))
# 1. optimum/: each Gaussian family's optimum per posterior, SAA to a symmetrised KL of
#    1e-4 between successive M (up to 4,096 draws), with 10,000 of its draws written.
# 2. each optimum's draws become a reference (optimum_reference.py), so that every W1
#    of step 3 (and its anytime curve) is the distance to that family's optimum.
# 3. cost/: the fitters at 10,000 gradient evaluations against the optimum: ADVI as the
#    last study ran it (prior median, Adam 0.1 -> 0.001), ADVI from the lab's default start
#    (Laplace, whitened coordinates), ADVI with RAABBVI phases, DADVI, SAA, GSM and BaM
#    (from Pathfinder's Gaussian), multi-path Pathfinder (4 paths).
# 4. bias/: each objective's fixed point against NUTS (STL, IWAE-8 and its resampled
#    posterior, VR alpha = 0.5, CUBO), from the default start, 20,000 evaluations.
# W1 is measured from 10,000 guide draws (5,000 at checkpoints) against 10,000 reference
# draws: with 1,000, its Monte Carlo floor (~0.04 sd) would sit at the 0.05 sd tolerance.
# report_converged.py writes converged.md/json from the records. Sweeps resume.
set -euo pipefail
out=${1:-experiments/reference_posteriors/converged}
here=$(dirname "$0")
if [ "${QUICK:-0}" = 1 ]; then
  posteriors=(kidiq garch11) seeds=0 evals=1000
else
  read -ra posteriors <<< "${POSTERIORS:-eight_schools kidiq kidiq_interaction earnings mesquite nes sblrc diamonds ark arma11 garch11 gp_pois_regr}"
  seeds=0,1,2 evals=10000
fi
list=$(IFS=,; echo "${posteriors[*]}")
stages=" ${STAGES:-optimum cost bias} "
methods=" ${METHODS:-median laplace dadvi raabbvi saa gsm_bam pathfinder} "
common=(-m protocol=plain progress_bar=false objective=trace
        evaluation.elbo_particles=1000 evaluation.iwae_particles=100 evaluation.iwae_repeats=2
        evaluation.iwae_ladder=[1] evaluation.posterior_samples=10000
        checkpoints.posterior_samples=5000
        hydra/launcher=${LAUNCHER:-parallel})
if [[ $stages == *" optimum "* ]]; then
  elbo-lab "${common[@]}" model=$list guide=mvn,normal fitter=saa init=laplace seed=0 \
    fitter.accuracy=0.0001 fitter.max_draws=4096 steps=100000 posterior_draws=10000 \
    resume="$out/optimum"
  python "$here/optimum_reference.py" "$out/optimum" "$out/optimum_reference"
fi
budget=(budget.kind=model_evals budget.model_evals=$evals steps=$evals checkpoints.count=10)
has() { [[ $methods == *" $1 "* ]]; }
for model in "${posteriors[@]}"; do
  [[ $stages == *" cost "* ]] || break
  for family in mvn normal; do
    run=("${common[@]}" "${budget[@]}" model=$model guide=$family
         model.reference_path="$out/optimum_reference/${model}_${family}.json.zip")
    adam=(optim.optim_args.lr=0.1 final_lr_fraction=0.01)
    if has median; then
      elbo-lab "${run[@]}" "${adam[@]}" init=median precondition=none seed=$seeds resume="$out/cost"
    fi
    if has laplace; then elbo-lab "${run[@]}" "${adam[@]}" seed=$seeds resume="$out/cost"; fi
    if has dadvi; then elbo-lab "${run[@]}" fitter=dadvi seed=0 resume="$out/cost"; fi
    [ $family = mvn ] || continue
    if has raabbvi; then
      elbo-lab "${run[@]}" optim.optim_args.lr=0.1 schedule.kind=raabbvi seed=$seeds resume="$out/cost"
    fi
    if has saa; then elbo-lab "${run[@]}" fitter=saa seed=0 resume="$out/cost"; fi
    if has gsm_bam; then elbo-lab "${run[@]}" fitter=gsm,bam seed=$seeds resume="$out/cost"; fi
    if has pathfinder; then
      elbo-lab "${run[@]}" fitter=pathfinder fitter.paths=4 seed=$seeds resume="$out/cost"
    fi
  done
done
bias=(budget.kind=model_evals budget.model_evals=$((2 * evals)) steps=$((2 * evals))
      optim.optim_args.lr=0.1 final_lr_fraction=0.01 guide=mvn model=$list
      seed=${BIAS_SEEDS:-${seeds%,2}})
if [[ $stages == *" bias "* ]]; then
  elbo-lab "${common[@]}" "${bias[@]}" objective=stl resume="$out/bias"
  elbo-lab "${common[@]}" "${bias[@]}" objective=iwae,vr objective.num_particles=8 \
    evaluation.resample_particles=8 resume="$out/bias"
  elbo-lab "${common[@]}" "${bias[@]}" objective=cubo resume="$out/bias"
fi
python "$here/report_converged.py" "$out"
