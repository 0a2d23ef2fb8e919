"""The fixed prose of docs/results/gradients.md (`gradients_text` fills in the numbers)."""

CLAIMS = """\
## What the paper claims

PILAF (Feng et al., ICML 2025, arXiv 2502.04270, Sec. 4) derives its response sampling so that
(i) *optimization*: the expected gradient of the preference (reward-MLE / DPO) loss on the pairs it
samples points along the gradient of the oracle objective
J(pi) = E_x[E_{y~pi} r*(x, y) - beta KL(pi || pi_ref)], with the interpolation coefficient equal to
beta, where vanilla sampling (both responses from pi) carries no such guarantee; and (ii)
*statistics*: the gradient estimated from its labelled pairs is efficient along that direction.
Here both are measured exactly on the embedded task, for every sampler in `conf/sampler/`."""

METHOD = """\
## What was measured

`python -m pilaf_exp.analysis.gradients` (`pilaf_exp/analysis/`), per policy:

* **grad J, exact.** J(x) = sum_y pi(y|x)[r*(x,y) - beta(log pi(y|x) - log pi_ref(y|x))], so
  grad J = sum_y pi(y) A(y) grad log pi(y) with A = r* - beta(log pi - log pi_ref). Every response of
  every prompt is enumerated: the response tree is walked level by level with a KV cache and
  autograd (`analysis/tree.py`), so a weighted sum over all V^T responses is one differentiable walk
  over the sum_{{d<T}} V^d prefixes ({tree_positions:,} token positions for {responses:,} responses, against
  {full_positions:,} response positions, prompts aside, for full-sequence forwards; equal to them to rounding:
  `tests/analysis/test_exact_gradient.py`). Nothing is truncated, and truncating would not pay: the
  policies' entropy is {entropy_low:.2f} to {entropy_high:.2f} nats per prompt, and holding all but 1e-2
  (1e-4) of a prompt's mass takes {kept_2:,.0f} ({kept_4:,.0f}) of its {responses:,} responses (means).
* **Expected DPO gradient, per sampler.** Pairs drawn by the sampler's own `sample()` (so whatever
  it does is what is measured), with the Bradley-Terry label probability s = sigma(r*(a) - r*(b))
  in place of a label: the expected loss s L(a > b) + (1 - s) L(b > a) has gradient
  beta(sigma(m) - s)(grad log pi(a) - grad log pi(b)), m the DPO margin. Two independent halves.
* **cosine** of minus that gradient with grad J (two halves pooled); its Monte Carlo error is
  |cos(half 1) - cos(half 2)| / 2 (a one-degree-of-freedom estimate: noisy itself).
* **gain / annotation** = lr <grad J, -g_DPO> / 2: the expected first-order change of J of a plain
  SGD step of size lr = `algo.lr` on one pair's loss, per annotation (2 per pair). Training uses AdamW,
  whose preconditioned step is not -g_DPO: this is the raw gradient's figure, not the optimizer's.
* **SNR**: the mean projection of a batch gradient (`algo.batch_size` pairs, prompts uniform over
  the test prompts, labels drawn from Bradley-Terry as in training) on grad J / |grad J|, divided
  by its standard deviation over batches. Exact over the labels; the projection of each response's
  grad log pi on grad J is a forward-mode derivative over the whole tree."""

CAVEATS = """\
## Caveats

* The policies are the SFT model and checkpoints of *vanilla* online DPO: every sampler is measured
  on the same policies, not on the trajectory it would produce itself.
* The gain is first-order plain SGD; the runs use AdamW (per-coordinate scaling), so a better
  aligned raw gradient need not give a better optimizer step.
* The prompts are the first test prompts (`eval.exact_prompts`), the same for every policy; J and
  grad J are theirs, not the whole test split's.
* At the SFT policy pi = pi_ref, so hybrid's pi_ref draws and PILAF's pi_plus / pi_minus are pi
  itself, and best-of-N's implicit reward is zero for every candidate: all samplers draw the same
  pair distribution there, and their step-0 differences are Monte Carlo noise only."""

THEORY = """\
## What the theory predicts here

The paper's argument is first order; in this notation: with r_theta = beta log(pi / pi_ref) (the DPO
implicit reward) and f = r* - r_theta,

    grad J = E_pi[f grad log pi] = 1/2 E_{a,b~pi}[(f(a) - f(b)) (grad log pi(a) - grad log pi(b))],
    -g_DPO = beta E_P[(sigma(r*(a) - r*(b)) - sigma(r_theta(a) - r_theta(b))) (grad log pi(a) - grad log pi(b))].

Linearising sigma(r*(a) - r*(b)) - sigma(D) ~ sigma'(D) (f(a) - f(b)) with D = r_theta(a) - r_theta(b),
vanilla's -g_DPO weights each pair by sigma'(D), which stops being constant once pi leaves pi_ref.
T-PILAF's P = 1/2 pi x pi + 1/2 pi_plus x pi_minus has pi_plus(a) pi_minus(b) = pi(a) pi(b) e^D / (Z_plus Z_minus)
when coef = beta; symmetrised it is pi(a) pi(b) (2 + e^D + e^-D) / 4 = pi(a) pi(b) / (4 sigma'(D)) if
Z_plus Z_minus = 1, which cancels the weight: -g_DPO = (beta / 2) grad J, a cosine of 1. The exact
measurement keeps what that argument drops: (a) the linearisation, while r* spreads over several
units per prompt here (std 2 under pi_ref), where sigma is far from linear; (b) the normalisers,
Z_plus Z_minus = E_pi[e^r_theta] E_pi[e^-r_theta] >= 1, which under-weight the interpolated half; and
(c) for `pilaf`, the per-token interpolation in place of the sequence-level one (`t_pilaf` is T-PILAF
itself, drawn exactly by enumerating every response: `pilaf_exp/analysis/theory.py`). At step 0
(pi = pi_ref, r_theta = 0) every sampler is vanilla and vanilla is T-PILAF, so (a) is the only
departure there: the step-0 cosines measure it."""
