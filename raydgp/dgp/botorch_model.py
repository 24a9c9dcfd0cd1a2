"""The deep GP as a BoTorch model: its posterior is a Gaussian mixture over the DGP's samples.

Each sample propagated through the hidden layers gives a Gaussian over the outputs; the posterior is the equal-weight
mixture of those Gaussians (``GaussianMixturePosterior``, the mixture dimension at -3 as for BoTorch's fully Bayesian
models), so BoTorch's acquisition functions work unchanged. Sampling is seeded and never touches the global RNG.
"""

from __future__ import annotations

import torch
from botorch.acquisition.analytic import _log_ei_helper, _scaled_improvement
from botorch.models.model import Model
from botorch.posteriors.fully_bayesian import GaussianMixturePosterior
from botorch.utils.safe_math import logmeanexp
from gpytorch.distributions import MultivariateNormal
from linear_operator.operators import DenseLinearOperator, DiagLinearOperator

from raydgp.dgp.model import DeepGPSurrogate

MIXTURE_DIM = -3


class DGPModel(Model):
    """BoTorch ``Model`` over a :class:`DeepGPSurrogate`.

    Args:
        dgp: the trained deep GP (inputs already normalised).
        seed: seed of the posterior's sampling; the same inputs give the same posterior.
        num_samples: mixture components (samples through the hidden layers).
    """

    _is_ensemble = True
    _is_fully_bayesian = True

    def __init__(self, dgp: DeepGPSurrogate, seed: int = 0, num_samples: int | None = None):
        super().__init__()
        self.dgp = dgp
        self.seed = seed
        self.num_samples = num_samples or dgp.settings.num_samples

    @property
    def num_outputs(self) -> int:
        return 1

    @property
    def batch_shape(self) -> torch.Size:
        return torch.Size([])

    def posterior(self, X: torch.Tensor, output_indices=None, observation_noise: bool = False,
                  posterior_transform=None, **kwargs) -> GaussianMixturePosterior:
        """Posterior at ``X`` of shape ``batch_shape x q x d``.

        Returns:
            A ``GaussianMixturePosterior`` whose mean is ``batch_shape x S x q x 1`` (S mixture components). For
            ``q == 1`` all points are evaluated as one flat batch with a diagonal covariance (fast for large pools);
            for ``q > 1`` each batch gets the joint ``q x q`` covariance of every component.
        """
        self.dgp.eval()
        X = X.to(torch.float32)
        batch, q, d = X.shape[:-2], X.shape[-2], X.shape[-1]
        S = self.num_samples
        if q == 1:
            # Large pools: the direct moment computation, one flat batch, diagonal covariance.
            m_, v_ = self.moments(X.reshape(-1, d))  # S x N
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(self.seed)  # CPU only (torch.manual_seed formats stacks)
            import gpytorch

            with gpytorch.settings.num_likelihood_samples(S), gpytorch.settings.fast_pred_var():
                if q == 1:
                    mean = m_.reshape(S, *batch, 1)
                    var = v_.reshape(S, *batch, 1).clamp_min(1e-9)
                    if observation_noise:
                        var = var + self.dgp.likelihood.noise
                    mean = mean.movedim(0, -2)  # batch x S x 1
                    var = var.movedim(0, -2)
                    mvn = MultivariateNormal(mean, DiagLinearOperator(var))
                else:
                    if isinstance(self.dgp, DeepGPSurrogate) and not self.dgp.skip:
                        # the same computation and draws as GPyTorch's call below (tested), without its lazy operators
                        g = torch.Generator().manual_seed(self.seed)
                        mean, cov = self.dgp.joint_moments(X.reshape(-1, q, d), S, g)  # S x B x q (x q)
                    else:
                        out = self.dgp(X.reshape(-1, q, d))  # S x B x q
                        mean, cov = out.mean, out.covariance_matrix
                    B = mean.shape[-2]
                    mean = mean.reshape(S, B, q)
                    cov = cov.reshape(S, B, q, q)
                    cov = cov + 1e-6 * torch.eye(q)
                    if observation_noise:
                        cov = cov + self.dgp.likelihood.noise * torch.eye(q)
                    mean = mean.transpose(0, 1).reshape(*batch, S, q)
                    cov = cov.transpose(0, 1).reshape(*batch, S, q, q)
                    # lazy: a dense tensor would be Cholesky-factored at construction, and the joint posterior of a
                    # few hundred candidates under an exact GP member is singular in float32; whoever needs a root
                    # (BoTorch's samplers) gets linear_operator's jittered one, the believer batch reads the moments
                    mvn = MultivariateNormal(mean, DenseLinearOperator(cov))
        post = GaussianMixturePosterior(distribution=mvn)
        if posterior_transform is not None:
            return posterior_transform(post)
        return post

    def moments(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-component marginal moments at ``n x d`` points: ``(mean, var)``, each ``S x n`` (no observation noise).

        The q = 1 posterior's moments (seeded by :attr:`seed`, the same for the same points), without building it.
        """
        import gpytorch

        if not isinstance(self.dgp, DeepGPSurrogate):  # (a DeepGPSurrogate puts itself in eval mode where needed)
            self.dgp.eval()
        with torch.no_grad(), gpytorch.settings.num_likelihood_samples(self.num_samples), \
                gpytorch.settings.fast_pred_var():
            g = torch.Generator().manual_seed(self.seed)
            return self.dgp.sample_moments(X.to(torch.float32), self.num_samples, g)

    def condition_on_observations(self, X, Y, **kwargs):  # pragma: no cover - not used by raydgp
        raise NotImplementedError("refit the DGP with the new data instead (raydgp.dgp.train)")


def log_ei_pool(model: DGPModel, X: torch.Tensor, best_f: float, chunk: int = 8192) -> torch.Tensor:
    """BoTorch's analytic ``LogExpectedImprovement`` of every row of a candidate pool, as one flat batch (q = 1).

    BoTorch averages an analytic acquisition over an ensemble model's mixture components (``_is_ensemble``).

    Args:
        model: the BoTorch DGP model.
        X: ``n x d`` candidates (normalised inputs).
        best_f: the best (largest) target value observed so far.

    Returns:
        ``n`` log-EI values.
    """
    outs = []
    for i in range(0, X.shape[0], chunk):
        mean, var = model.moments(X[i:i + chunk])  # S x n
        # LogExpectedImprovement.forward on the posterior's moments (with the posterior's variance floor, which is
        # above BoTorch's own), averaged over the mixture as BoTorch's t_batch_mode_transform does for an ensemble
        # model: logmeanexp over S. The same values without building a mixture posterior per chunk.
        sigma = var.clamp_min(1e-9).sqrt()
        u = _scaled_improvement(mean, sigma, torch.as_tensor(best_f, dtype=mean.dtype), True)
        outs.append(logmeanexp(_log_ei_helper(u) + sigma.log(), dim=0))
    return torch.cat(outs) if outs else torch.zeros(0)


def q_log_ei_with_pending(model: DGPModel, X: torch.Tensor, best_f: float, pending: torch.Tensor,
                          seed: int = 0) -> torch.Tensor:
    """``qLogExpectedImprovement`` of each candidate jointly with the pending points (trials still running).

    Args:
        X: ``n x d`` candidates; pending: ``p x d`` points being measured now.

    Returns:
        ``n`` values: the log-EI of measuring the candidate in addition to the pending points.
    """
    from botorch.acquisition.logei import qLogExpectedImprovement
    from botorch.sampling.normal import SobolQMCNormalSampler

    acq = qLogExpectedImprovement(model, best_f=best_f, X_pending=pending,
                                  sampler=SobolQMCNormalSampler(torch.Size([64]), seed=seed))
    with torch.no_grad():
        return acq(X.unsqueeze(-2))
