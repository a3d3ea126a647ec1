#!/usr/bin/env bash
# Issue 17 E: the orderings of Burda et al. 2016 (IWAE), Tucker et al. 2019 (DReG), Mnih &
# Rezende 2016 (VIMCO) and Le et al. 2019 (RWS) on one set of code, learned models, 3 seeds.
#   bash experiments/deep_lvm/run.sh [OUTPUT_DIR]      (default: experiments/deep_lvm)
# Each study is one sweep directory, filled by several `elbo-lab` sweeps with resume= (each
# adds the configurations the directory has no ok record of, so an interrupted run.sh picks
# up where it stopped; the report covers every record), then verdicts.py writes results.md
# from the records. QUICK=1 runs a smoke version in a few minutes.
set -euo pipefail
out=${1:-experiments/deep_lvm}
seeds=${SEEDS:-0,1,2}
if [ "${QUICK:-0}" = 1 ]; then
  scale=(model.num_train=200 model.num_heldout=20 evaluation.test_particles=20)
  vae_steps=20 vae_evals=100 sbn_evals=100
else
  scale=()
  vae_steps=1000 vae_evals=5000 sbn_evals=6000
fi
# Evaluation: the learned models' defaults (conf/evaluation/learned_model.yaml: IWAE-20
# anytime curves, 20-particle training bounds), with the test log-likelihood by IWAE-1000
# per test image (Burda et al.'s 5,000: evaluation.test_particles=5000). Bounds are per
# datapoint, the default wherever every latent is local (each record's "bound" says so).
common=(protocol=plain progress_bar=false checkpoints.count=6 evaluation.test_particles=1000
        "${scale[@]}")
# VAE: latent 20, one 100-unit tanh layer (Burda et al.: latent 50, two 200-unit layers, full
# MNIST); 4,500 training and 500 test digits; Adam 1e-3 untuned for every method (Burda's).
vae=(model=vae model.latent_dim=20 model.hidden=[100] model.num_train=4500
     model.num_heldout=500 guide=amortized guide.hidden=[100] optim.optim_args.lr=0.001
     "${common[@]}")
iw=(objective=iwae,iwae_dreg objective.num_particles=5,50)
# (a) Burda's protocol: every method the same steps, so K = 50 costs 50 times K = 1's
#     model evaluations (stated in the report's model-evals column and the curves).
elbo-lab "${vae[@]}" steps=$vae_steps objective=trace seed=$seeds \
  resume="$out/vae_equal_steps"
elbo-lab "${vae[@]}" steps=$vae_steps "${iw[@]}" seed=$seeds resume="$out/vae_equal_steps"
# (b) the lab's protocol: every method the same model evaluations (K x steps = $vae_evals;
#     IWAE-DReG's single-pass gradient costs one model pass per particle, as IWAE's)
budget=(budget.kind=model_evals budget.model_evals=$vae_evals steps=$vae_evals)
elbo-lab "${vae[@]}" "${budget[@]}" objective=trace seed=$seeds \
  resume="$out/vae_equal_evals"
elbo-lab "${vae[@]}" "${budget[@]}" "${iw[@]}" seed=$seeds resume="$out/vae_equal_evals"
# (c) Burda's dynamic binarisation (each training image drawn afresh every time a step
#     uses it) against (a)'s single draw, equal steps: the VAE and IWAE k = 5.
dynamic=("${vae[@]}" steps=$vae_steps model.binarization=dynamic resume="$out/vae_dynamic")
elbo-lab "${dynamic[@]}" objective=trace seed=$seeds
elbo-lab "${dynamic[@]}" objective=iwae objective.num_particles=5 seed=$seeds
# (d) Burda's two-layer model, z' -> z -> x (latents 20 and 10, tanh layers of 100 and 50),
#     with its bottom-up encoder q(z|x) q(z'|z), equal steps: the VAE and IWAE k = 5.
two_layer=(model.top_latent_dim=10 model.top_hidden=[50] guide.chain=true)
elbo-lab "${vae[@]}" "${two_layer[@]}" steps=$vae_steps objective=trace seed=$seeds \
  resume="$out/vae_two_layer"
elbo-lab "${vae[@]}" "${two_layer[@]}" steps=$vae_steps objective=iwae objective.num_particles=5 \
  seed=$seeds resume="$out/vae_two_layer"
# SBN: H = 10 binary latents (exact log p(x) over 1,024 states), affine decoder, encoder with
# one 200-unit layer; equal model evaluations; Adam 3e-3 untuned; per-datapoint bounds.
sbn=(model=sbn model.num_latents=10 model.num_train=4500 model.num_heldout=500
     optim.optim_args.lr=0.003 budget.kind=model_evals budget.model_evals=$sbn_evals
     steps=$sbn_evals "${common[@]}")
bernoulli=(guide=amortized_bernoulli guide.hidden=[200])
# K = 1: REINFORCE without baseline (trace, the reference row) and with NVIL's input-dependent
# baseline (trace_graph guide.baseline=network); K = 5: VIMCO, IWAE by REINFORCE, RWS.
elbo-lab "${sbn[@]}" "${bernoulli[@]}" objective=trace seed=$seeds resume="$out/sbn"
elbo-lab "${sbn[@]}" "${bernoulli[@]}" guide.baseline=network objective=trace_graph \
  seed=$seeds resume="$out/sbn"
elbo-lab "${sbn[@]}" "${bernoulli[@]}" objective=vimco ++objective.baseline=leave_one_out,none \
  objective.num_particles=5 seed=$seeds resume="$out/sbn"
elbo-lab "${sbn[@]}" "${bernoulli[@]}" objective=rws_score objective.num_particles=5 \
  seed=$seeds resume="$out/sbn"
# The ceiling: θ trained by the exact marginal likelihood (z summed out in the model).
elbo-lab "${sbn[@]}" model.marginal=exact guide=none objective=trace seed=$seeds \
  resume="$out/sbn"
python experiments/deep_lvm/verdicts.py "$out"
