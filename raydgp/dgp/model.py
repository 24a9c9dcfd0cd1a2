"""The deep GP surrogate: a two-layer (or deeper) GPyTorch deep GP trained by doubly-stochastic variational inference.

Pure torch / gpytorch: no Ray, no TVM. Inputs are already-normalised feature vectors (``n x d``), the target is a
standardised ``-log(latency)`` (see :mod:`raydgp.dgp.data`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import gpytorch
import torch
from gpytorch.distributions import MultivariateNormal
from gpytorch.kernels import MaternKernel, ScaleKernel
from gpytorch.likelihoods import GaussianLikelihood
from gpytorch.means import ConstantMean, LinearMean
from gpytorch.models.deep_gps import DeepGP, DeepGPLayer
from gpytorch.variational import CholeskyVariationalDistribution, VariationalStrategy

from raydgp.errors import ConfigError


@dataclass(frozen=True)
class DGPSettings:
    """Shape and training settings of the deep GP.

    Attributes:
        hidden_dims: widths of the hidden GP layers (one entry per hidden layer; at least one).
        num_inducing: inducing points per layer, initialised from the training inputs.
        num_samples: likelihood samples propagated through the layers (training and prediction).
        pretrain_steps: Adam steps of stage-1 pre-training.
        finetune_steps: Adam steps of stage-2 MAP fine-tuning.
        lr: Adam learning rate.
        batch_size: minibatch size for pre-training on large histories.
        skip: the output GP also sees the raw input (measured: worse on small data, so off by default).
        hidden_noise: initial output scale of the hidden GPs (the warping starts small).
    """

    hidden_dims: tuple[int, ...] = (8,)
    num_inducing: int = 64
    num_samples: int = 8
    pretrain_steps: int = 300
    finetune_steps: int = 100
    lr: float = 0.02
    batch_size: int = 1024
    skip: bool = False
    hidden_noise: float = 0.01

    def __post_init__(self):
        if not self.hidden_dims or any(h < 1 for h in self.hidden_dims):
            raise ConfigError(f"DGPSettings.hidden_dims must list at least one positive width, got {self.hidden_dims}")
        if self.num_inducing < 2 or self.num_samples < 1:
            raise ConfigError("DGPSettings.num_inducing must be >= 2 and num_samples >= 1")

    def to_json(self) -> dict:
        d = asdict(self)
        d["hidden_dims"] = list(self.hidden_dims)
        return d


class DGPLayer(DeepGPLayer):
    """One layer of GPs: ``output_dims`` independent GPs (None: a single GP) with ARD Matern-5/2 kernels.

    Args:
        inducing: initial inducing inputs, ``m x input_dims`` (the same for every output GP).
        output_dims: number of GPs in the layer (None for the last, single-output layer).
        linear_mean: a linear mean (hidden layers: lets the DGP pass its input through) instead of a constant.
    """

    def __init__(self, inducing: torch.Tensor, output_dims: int | None, linear_mean: bool):
        input_dims = inducing.shape[-1]
        m = inducing.shape[0]
        batch = torch.Size([output_dims]) if output_dims is not None else torch.Size([])
        points = inducing.unsqueeze(0).expand(output_dims, m, input_dims).clone() if output_dims else inducing.clone()
        var_dist = CholeskyVariationalDistribution(m, batch_shape=batch)
        strategy = VariationalStrategy(self, points, var_dist, learn_inducing_locations=True)
        super().__init__(strategy, input_dims, output_dims)
        self.mean_module = LinearMean(input_dims, batch_shape=batch) if linear_mean else ConstantMean(batch_shape=batch)
        self.covar_module = ScaleKernel(MaternKernel(nu=2.5, batch_shape=batch, ard_num_dims=input_dims),
                                        batch_shape=batch)

    def forward(self, x: torch.Tensor) -> MultivariateNormal:
        return MultivariateNormal(self.mean_module(x), self.covar_module(x))

    def __call__(self, x, *other_inputs, **kwargs):
        """With ``other_inputs`` (a skip connection), samples of ``x`` are joined with those deterministic inputs."""
        if other_inputs:
            if isinstance(x, gpytorch.distributions.MultitaskMultivariateNormal):
                x = x.rsample()
            extra = [inp.unsqueeze(0).expand(gpytorch.settings.num_likelihood_samples.value(), *inp.shape)
                     for inp in other_inputs]
            x = torch.cat([x] + extra, dim=-1)
            return super().__call__(x, are_samples=True, **kwargs)
        return super().__call__(x, **kwargs)


def _pca_directions(X: torch.Tensor, k: int) -> torch.Tensor:
    """``d x k`` projection: the top-``k`` principal directions of ``X`` (padded with unit vectors if needed)."""
    d = X.shape[-1]
    if k == d:
        return torch.eye(d)
    Xc = X - X.mean(0)
    try:
        _, _, V = torch.linalg.svd(Xc, full_matrices=False)
        W = V[:k].T
    except RuntimeError:
        W = torch.zeros(d, 0)
    if W.shape[1] < k:
        W = torch.cat([W, torch.eye(d)[:, : k - W.shape[1]]], dim=1)
    return W.contiguous()


class DeepGPSurrogate(DeepGP):
    """A deep GP: hidden GP layer(s) feeding one output GP (which also sees the input), with a Gaussian likelihood.

    Args:
        train_x: training inputs, ``n x d`` (used to place the inducing points).
        settings: widths and sizes.
        seed: seed for choosing the initial inducing points.
    """

    def __init__(self, train_x: torch.Tensor, settings: DGPSettings = DGPSettings(), seed: int = 0):
        super().__init__()
        self.settings = settings
        g = torch.Generator().manual_seed(seed)
        n, d = train_x.shape
        m = min(settings.num_inducing, n)
        idx = torch.randperm(n, generator=g)[:m]
        inducing = train_x[idx].clone()
        if m < 2:  # a GP needs at least two distinct inducing points
            inducing = torch.cat([inducing, inducing + 0.1 * torch.randn(2 - m, d, generator=g)])
        layers = []
        in_pts = inducing
        data = train_x
        for h in settings.hidden_dims:
            layer = DGPLayer(in_pts, h, linear_mean=True)
            # Salimbeni & Deisenroth's recipe: each hidden layer starts as a linear projection of its input onto the
            # data's top principal directions (the identity when widths match), with a small GP perturbation on top,
            # so a fresh DGP behaves like a GP on the projected inputs and depth only adds what the data asks for.
            W = _pca_directions(data, h)  # d_in x h
            with torch.no_grad():
                layer.mean_module.weights.copy_(W.T.unsqueeze(-1))
                layer.mean_module.bias.zero_()
                layer.covar_module.outputscale = torch.full_like(layer.covar_module.outputscale,
                                                                 settings.hidden_noise)
            layers.append(layer)
            data = data @ W
            in_pts = in_pts @ W
        self.hidden = torch.nn.ModuleList(layers)
        # Skip connection: the output GP sees the last hidden layer AND the raw input, so the deep GP can always fall
        # back to a plain (sparse) GP on the input; depth adds a learned warping where the data supports one.
        self.skip = bool(settings.skip)
        out_pts = torch.cat([in_pts, inducing], dim=-1) if self.skip else in_pts
        self.output = DGPLayer(out_pts, None, linear_mean=False)
        self.likelihood = GaussianLikelihood()
        self.input_dim = d

    def forward(self, x: torch.Tensor):
        h = x
        for layer in self.hidden:
            h = layer(h)
        return self.output(h, x) if self.skip else self.output(h)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, seed: int = 0, num_samples: int | None = None,
                observation_noise: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample predictive means and variances.

        Args:
            x: ``n x d`` inputs.
            seed: the sampling seed (the DGP's prediction is stochastic; the global RNG is left untouched).
            num_samples: samples through the hidden layers (default: settings.num_samples).
            observation_noise: add the likelihood's noise to the variances.

        Returns:
            ``(mean, var)``, each ``S x n``.
        """
        s = num_samples or self.settings.num_samples
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            with gpytorch.settings.num_likelihood_samples(s), gpytorch.settings.fast_pred_var():
                out = self(x)
        mean, var = out.mean, out.variance
        if observation_noise:
            var = var + self.likelihood.noise
        return mean, var.clamp_min(1e-9)
