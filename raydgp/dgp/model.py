"""The deep GP surrogate: a two-layer (or deeper) GPyTorch deep GP trained by doubly-stochastic variational inference.

Pure torch / gpytorch: no Ray, no TVM. Inputs are already-normalised feature vectors (``n x d``), the target is a
standardised ``-log(latency)`` (see :mod:`raydgp.dgp.data`).
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass

import gpytorch
import torch
from gpytorch.distributions import MultivariateNormal
from gpytorch.kernels import MaternKernel, ScaleKernel
from gpytorch.likelihoods import GaussianLikelihood
from gpytorch.means import ConstantMean, LinearMean
from gpytorch.models.deep_gps import DeepGP, DeepGPLayer
from gpytorch.priors import LogNormalPrior
from gpytorch.variational import CholeskyVariationalDistribution, VariationalStrategy
from linear_operator.utils.cholesky import psd_safe_cholesky

from raydgp.errors import ConfigError


def lengthscale_prior(d: int) -> LogNormalPrior:
    """BoTorch's dimension-scaled lengthscale prior (Hvarfner et al. 2024) for a ``d``-input ARD kernel.

    Without a prior, a few dozen points let the ELBO switch important inputs off (lengthscales grown to infinity).
    """
    return LogNormalPrior(loc=math.sqrt(2) + 0.5 * math.log(d), scale=math.sqrt(3))


def noise_prior() -> LogNormalPrior:
    """BoTorch's noise prior, LogNormal(-4, 1) (standardised targets: the noise variance is mostly small)."""
    return LogNormalPrior(loc=-4.0, scale=1.0)


@dataclass(frozen=True)
class DGPSettings:
    """Shape and training settings of the deep GP.

    Attributes:
        hidden_dims: widths of the hidden GP layers (one entry per hidden layer); ``()`` is no hidden layer: a
            single-layer sparse variational GP on the inputs, trained and used the same way (the depth ablation).
        num_inducing: inducing points per layer, initialised from the training inputs.
        num_samples: likelihood samples propagated through the layers (training and prediction).
        pretrain_steps: Adam steps of stage-1 pre-training.
        finetune_steps: Adam steps of stage-2 MAP fine-tuning.
        lr: Adam learning rate.
        batch_size: minibatch size for pre-training on large histories.
        skip: the output GP also sees the raw input (measured: worse on small data, so off by default).
        hidden_noise: initial output scale of the hidden GPs (the warping starts small).
        elbo: how training computes its objective: ``"direct"`` (:mod:`raydgp.dgp.fast_elbo`, the default) or
            ``"gpytorch"`` (GPyTorch's ``DeepApproximateMLL``; the same objective, slower; kept for comparison).
            Not part of stage 1's cache key: both train the same model.
    """

    hidden_dims: tuple[int, ...] = (8,)
    num_inducing: int = 64
    num_samples: int = 8
    pretrain_steps: int = 200
    finetune_steps: int = 100
    lr: float = 0.02
    batch_size: int = 1024
    skip: bool = False
    hidden_noise: float = 0.01
    elbo: str = "direct"

    def __post_init__(self):
        if any(h < 1 for h in self.hidden_dims):
            raise ConfigError(f"DGPSettings.hidden_dims must list positive widths, got {self.hidden_dims}")
        if self.num_inducing < 2 or self.num_samples < 1:
            raise ConfigError("DGPSettings.num_inducing must be >= 2 and num_samples >= 1")
        if self.elbo not in ("direct", "gpytorch"):
            raise ConfigError(f"DGPSettings.elbo={self.elbo!r}: choose 'direct' or 'gpytorch'")

    def to_json(self) -> dict:
        d = asdict(self)
        d["hidden_dims"] = list(self.hidden_dims)
        return d


class DGPLayer(DeepGPLayer):
    """One layer of GPs: ``output_dims`` independent GPs (None: a single GP) with ARD Matern-5/2 kernels (with
    :func:`lengthscale_prior`).

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
        self.covar_module = ScaleKernel(MaternKernel(nu=2.5, batch_shape=batch, ard_num_dims=input_dims,
                                                     lengthscale_prior=lengthscale_prior(input_dims)),
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


_SQRT5 = math.sqrt(5.0)
# Points per pass of DeepGPSurrogate.sample_moments (an 8 x 64 x 512 float32 block is 1 MiB: in L2 on the CPUs here).
MOMENTS_CHUNK = 512


@torch.no_grad()
def _matern52(x1: torch.Tensor, x2: torch.Tensor, lengthscale: torch.Tensor, outputscale: torch.Tensor | None = None
              ) -> torch.Tensor:
    """Matern-5/2 cross-covariance, ``... x n x m`` for ``x1`` ``... x n x d`` and ``x2`` ``... x m x d``
    (prediction only: no autograd); scaled by ``outputscale`` where one is given (the moments fold it into their
    factors instead: one pass less over the largest tensor of a pool's scoring).

    ``s = sqrt(5) r`` comes from ``torch.cdist`` on the inputs divided by ``lengthscale / sqrt(5)`` (its matrix-product
    form: ``|a|^2 + |b|^2 - 2 a.b``, clamped at 0), then ``(1 + s + s^2 / 3) exp(-s)`` in place: five passes over the
    ``n x m`` block where the expanded form took twelve (measured 0.6-0.8x the time on the pool's blocks).
    """
    c = _SQRT5 / lengthscale
    s = torch.cdist(x1 * c, x2 * c, compute_mode="use_mm_for_euclid_dist")
    e = torch.neg(s).exp_()
    k = s.add(1.0).addcmul_(s, s, value=1.0 / 3.0).mul_(e)
    return k if outputscale is None else k.mul_(outputscale[..., None, None])


def _layer_moments(layer: "DGPLayer", x: torch.Tensor, factors: tuple | None = None, joint: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Marginal predictive mean and variance of every GP of ``layer`` at ``x`` (eval mode, no autograd).

    The same quantities as GPyTorch's whitened ``VariationalStrategy`` in eval mode with a diagonal covariance
    (``mean(x) + K_xz L^-T m`` and ``k_xx - |L^-1 K_zx|^2 + |C^T L^-1 K_zx|^2``, ``L L^T = K_zz + jitter``, ``C`` the
    Cholesky factor of the whitened variational covariance), without building lazy ``(m+n) x (m+n)`` operators.

    Args:
        layer: a hidden layer (``b`` GPs) or the output layer (one GP).
        x: ``... x n x d`` inputs (hidden layers broadcast them over their ``b`` GPs).
        factors: the layer's :func:`_layer_factors` for ``x``'s dtype, where the caller holds them already.
        joint: the full covariance over the ``n`` points instead of the variances (``K_xx + jitter - (P K_zx)^T
            diag(lam) (P K_zx)``; for small batches: it is ``n x n``).

    Returns:
        ``(mean, var)``, each ``... x b x n`` (hidden) or ``... x n`` (output); with ``joint``, ``(mean, cov)`` with
        ``cov`` ``... (x b) x n x n``.
    """
    vs = layer.variational_strategy
    Z = vs.inducing_points  # (b x) m x d
    kern = layer.covar_module
    ls, os = kern.base_kernel.lengthscale, kern.outputscale
    batched = Z.dim() == 3
    if batched:
        x = x.unsqueeze(-3)  # ... x 1 x n x d, broadcast over the b GPs
    jitter = vs.jitter_val
    lam, P, v = factors if factors is not None else _layer_factors(layer, x.dtype)
    K = _matern52(Z, x, ls)  # ... (x b) x m x n, unscaled: the output scale is in lam and v
    mean = layer.mean_module(x) + (v.mT @ K).squeeze(-2)
    if joint:
        A = P @ K
        n = x.shape[-2]
        return mean, _matern52(x, x, ls, os) + jitter * torch.eye(n, dtype=x.dtype) - A.mT @ (lam.unsqueeze(-1) * A)
    var = (os[..., None] + jitter) - (lam.unsqueeze(-2) @ (P @ K).pow_(2)).squeeze(-2)
    return mean, var.clamp_min(1e-9)


def _state_key(layer: "DGPLayer", dtype: torch.dtype) -> tuple:
    """What identifies a state of the layer's parameters cheaply: every parameter's identity and in-place version
    counter (an optimiser step, a ``load_state_dict`` or a new tensor all change it), with the dtype and jitter."""
    return (dtype, layer.variational_strategy.jitter_val,
            tuple((id(p), p.data_ptr(), p._version) for p in layer.parameters()))


@torch.no_grad()
def _layer_factors(layer: "DGPLayer", dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(lam, P, v)`` of :func:`_layer_moments`: what depends on the layer's parameters only, not on the inputs
    (``lam`` and ``v`` carry the output scale, squared and once: they multiply the unscaled ``K_zx``).

    Computed once per state of the parameters and kept on the layer (a pool's scoring calls each layer a few dozen
    times between two refits; the float64 Cholesky and eigendecomposition were a fifth of a proposal's time). The key is
    every parameter's identity and in-place version counter, so an optimiser step, a ``load_state_dict`` or a new
    tensor all recompute it.
    """
    key = _state_key(layer, dtype)
    hit = layer.__dict__.get("_factors_cache")
    if hit is not None and hit[0] == key:
        return hit[1]
    vs = layer.variational_strategy
    Z = vs.inducing_points  # (b x) m x d
    kern = layer.covar_module
    ls, os = kern.base_kernel.lengthscale, kern.outputscale
    vd = vs._variational_distribution
    Kzz = _matern52(Z, Z, ls, os) + vs.jitter_val * torch.eye(Z.shape[-2], dtype=Z.dtype)
    L = psd_safe_cholesky(Kzz.double())  # as GPyTorch's VariationalStrategy: jitter where rounding left it indefinite
    eye = torch.eye(L.shape[-1], dtype=L.dtype)
    Linv = torch.linalg.solve_triangular(L, eye, upper=False)  # (b x) m x m
    C = vd.chol_variational_covar.double().tril()
    # Whitened: A = L^-1 K_zx, mean = mean(x) + A^T m_w, var = k_xx - diag(A^T (I - S) A) with S = C C^T.
    # With I - S = U diag(lam) U^T (float64 eigendecomposition, well conditioned in the whitened space) and
    # P = U^T L^-1, v = L^-T m_w: var = k_xx - sum_j lam_j (P K_zx)_j^2 and mean = mean(x) + v^T K_zx, i.e. ONE
    # m x m x n float32 product per layer (tested against GPyTorch's float64 solves).
    lam, U = torch.linalg.eigh(eye - C @ C.mT)  # (b x) m, (b x) m x m
    P = (U.mT @ Linv).to(dtype)
    v = Linv.mT @ vd.variational_mean.double().unsqueeze(-1)  # (b x) m x 1
    # the output scale folded in: _layer_moments multiplies them with the UNSCALED K_zx (one pass less per block)
    osd = os.detach().double()
    out = ((lam * osd[..., None] ** 2).to(dtype), P, (v * osd[..., None, None]).to(dtype))
    layer.__dict__["_factors_cache"] = (key, out)
    return out


@torch.no_grad()
def _layer_fingerprint(layer: "DGPLayer", dtype: torch.dtype) -> bytes:
    """A digest of the layer's parameter VALUES (and the jitter and dtype its moments use), kept per state of the
    parameters like :func:`_layer_factors`: two layers with equal digests compute equal moments, whichever objects
    they are (a search's transferred model keeps the pre-trained hidden layer frozen in a deep copy of it)."""
    key = _state_key(layer, dtype)
    hit = layer.__dict__.get("_fingerprint_cache")
    if hit is not None and hit[0] == key:
        return hit[1]
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{type(layer).__name__}|{dtype}|{layer.variational_strategy.jitter_val!r}".encode())
    for name, p in layer.named_parameters():
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
        h.update(p.detach().contiguous().cpu().numpy().tobytes())
    out = h.digest()
    layer.__dict__["_fingerprint_cache"] = (key, out)
    return out


class _RowMemo:
    """The first hidden layer's marginal moments by input row, for one layer state (see :class:`InputMomentMemo`)."""

    def __init__(self, width: int, dtype: torch.dtype):
        self.width, self.dtype = int(width), dtype
        self.reset()

    def reset(self) -> None:
        self.index: dict[bytes, int] = {}
        self.mu = torch.empty((0, self.width), dtype=self.dtype)
        self.var = torch.empty((0, self.width), dtype=self.dtype)
        self.n = 0

    def add(self, keys: list[bytes], mu: torch.Tensor, var: torch.Tensor) -> None:
        """``mu``, ``var``: ``k x b`` for ``k`` new rows."""
        k = len(keys)
        if self.n + k > self.mu.shape[0]:  # grow by doubling
            cap = max(2 * self.mu.shape[0], self.n + k, 1024)
            for name in ("mu", "var"):
                old = getattr(self, name)
                new = torch.empty((cap, old.shape[1]), dtype=old.dtype)
                new[:self.n] = old[:self.n]
                setattr(self, name, new)
        self.mu[self.n:self.n + k] = mu
        self.var[self.n:self.n + k] = var
        for j, key in enumerate(keys):
            self.index[key] = self.n + j
        self.n += k

    def gather(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows ``idx`` as ``(mean, var)``, each ``b x len(idx)``."""
        at = torch.as_tensor(idx, dtype=torch.long)
        return self.mu[at].mT.contiguous(), self.var[at].mT.contiguous()


class InputMomentMemo:
    """Remembers the first hidden layer's moments at the inputs it has seen, per layer state (by parameter values).

    The first hidden layer sees the raw inputs, so its marginal moments at a point are a function of the point and the
    layer's parameters alone (no sampling). A search's pool keeps most of its points from one proposal to the next,
    and two of its three scoring members (the transferred model, whose fine-tuning leaves the hidden layer as
    pre-trained, and the zero-shot pre-trained model itself) share that layer: their moments are computed once, then
    looked up by the input row's bytes. Bounded: ``max_layers`` layer states (least recently used dropped), each at
    most ``max_rows`` rows (cleared when full; a row costs about 350 bytes with a 37-column input). Thread-safe; the
    numbers are the ones computing them afresh gives.
    """

    def __init__(self, max_layers: int = 4, max_rows: int = 50_000):
        self.max_layers = int(max_layers)
        self.max_rows = int(max_rows)
        self._memos: OrderedDict[bytes, _RowMemo] = OrderedDict()
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._memos.clear()
            self._seen.clear()

    def moments(self, layer: "DGPLayer", x: torch.Tensor, factors: tuple, chunk: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, var)`` of the first hidden layer at ``x`` (``n x d``), each ``b x n``.

        A layer state seen for the first time is computed without remembering (a cold member refitted from scratch
        is a new state at every refit); from its second use on, its rows are remembered.
        """
        fp = _layer_fingerprint(layer, x.dtype)
        with self._lock:
            memo = self._memos.get(fp)
            if memo is not None:
                self._memos.move_to_end(fp)
            elif fp in self._seen:
                memo = self._memos[fp] = _RowMemo(layer.output_dims, x.dtype)
                while len(self._memos) > self.max_layers:
                    self._memos.popitem(last=False)
            else:
                self._seen[fp] = None
                while len(self._seen) > 4 * self.max_layers:
                    self._seen.popitem(last=False)
        if memo is None:
            return _chunked_moments(layer, x, factors, chunk)
        xc = x.detach().contiguous()
        raw, w = xc.numpy().tobytes(), xc.shape[-1] * xc.element_size()
        keys = [raw[i * w:(i + 1) * w] for i in range(xc.shape[0])]
        with self._lock:
            idx = [memo.index.get(k, -1) for k in keys]
            miss = [i for i, j in enumerate(idx) if j < 0]
            if not miss:
                return memo.gather(idx)
            rows = _first_of_each(keys, miss)  # the distinct missing rows, in order
            if memo.n + len(rows) > self.max_rows:  # full: start again with this batch
                memo.reset()
                rows = _first_of_each(keys, range(len(keys)))
        mu_new, var_new = _chunked_moments(layer, xc[rows], factors, chunk)  # b x k, computed outside the lock
        with self._lock:
            memo.add([keys[i] for i in rows], mu_new.mT, var_new.mT)
            idx = [memo.index.get(k, -1) for k in keys]
            if min(idx) >= 0:
                return memo.gather(idx)
        # another thread reset the memo meanwhile: this batch computed afresh
        return _chunked_moments(layer, xc, factors, chunk)


def _first_of_each(keys: list[bytes], among) -> list[int]:
    """The indices in ``among`` (ascending) whose key has not occurred before among them."""
    seen: set[bytes] = set()
    out = []
    for i in among:
        if keys[i] not in seen:
            seen.add(keys[i])
            out.append(i)
    return out


def _chunked_moments(layer: "DGPLayer", x: torch.Tensor, factors: tuple, chunk: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_layer_moments` of a hidden layer at ``n x d`` inputs, ``chunk`` rows at a time: ``b x n`` each."""
    if x.shape[0] <= chunk:
        return _layer_moments(layer, x, factors)
    parts = [_layer_moments(layer, x[i:i + chunk], factors) for i in range(0, x.shape[0], chunk)]
    return torch.cat([p[0] for p in parts], dim=-1), torch.cat([p[1] for p in parts], dim=-1)


#: The process's memo of first-hidden-layer moments (:class:`InputMomentMemo`), used by
#: :meth:`DeepGPSurrogate.sample_moments`.
INPUT_MOMENTS = InputMomentMemo()


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
    if W.shape[1] < k:  # fewer directions than widths (few points, or k > d): unit vectors, cycled
        W = torch.cat([W, torch.eye(d)[:, torch.arange(k - W.shape[1]) % d]], dim=1)
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
        self.likelihood = GaussianLikelihood(noise_prior=noise_prior())
        self.input_dim = d
        # How many points the model was (pre-)trained on: fine-tuning scales its KL term against it.
        self.register_buffer("num_train", torch.tensor(n, dtype=torch.long))

    def forward(self, x: torch.Tensor):
        h = x
        for layer in self.hidden:
            h = layer(h)
        return self.output(h, x) if self.skip else self.output(h)

    def _ensure_eval(self) -> None:
        """Eval mode, set only where some layer is not in it (a module tree's eval() walks every submodule: it was a
        measurable part of scoring a pool when called on every call)."""
        if self.training or self.output.training or any(layer.training for layer in self.hidden):
            self.eval()

    @torch.no_grad()
    def sample_moments(self, x: torch.Tensor, num_samples: int, generator: torch.Generator,
                       chunk: int = MOMENTS_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
        """The doubly-stochastic predictive moments, computed directly (fast path for scoring large pools).

        The same distribution as calling the model in eval mode (each hidden layer's marginals sampled independently
        per point, ``num_samples`` times), about an order of magnitude faster than going through GPyTorch's lazy
        operators. Uses ``generator`` only; the global RNG is untouched.

        The points are taken ``chunk`` at a time so that each layer's ``S x m x chunk`` cross-covariance and its
        temporaries stay in the core's cache (one pass over 5,500 points was 3x slower, memory-bound); every hidden
        layer's noise is drawn for all ``n`` points first, in the order the layers use it, so the result is the one of
        a single pass whatever ``chunk`` is.

        Args:
            x: ``n x d`` inputs.
            chunk: points per pass.

        Returns:
            ``(mean, var)`` of the output GP, each ``num_samples x n`` (no observation noise).
        """
        self._ensure_eval()
        n = x.shape[0]
        eps = [torch.randn((num_samples, layer.output_dims, n), generator=generator, dtype=x.dtype)
               for layer in self.hidden]
        # each layer's factors once per call, not once per chunk (their cache key walks the layer's parameters)
        fh = [_layer_factors(layer, x.dtype) for layer in self.hidden]
        fo = _layer_factors(self.output, x.dtype)
        chunk = max(int(chunk), 1)
        # the first hidden layer's moments depend on the inputs and its parameters only: remembered by input row
        first = INPUT_MOMENTS.moments(self.hidden[0], x, fh[0], chunk) if len(self.hidden) else None
        means, variances = [], []
        for i in range(0, max(n, 1), chunk):
            xc = x[i:i + chunk]
            h = xc.expand(num_samples, *xc.shape) if not len(self.hidden) else xc
            for j, layer in enumerate(self.hidden):
                if j == 0:
                    mu, var = first[0][..., i:i + chunk], first[1][..., i:i + chunk]  # b x c
                    mu = mu.expand(num_samples, *mu.shape)
                    var = var.expand(num_samples, *var.shape)
                else:
                    mu, var = _layer_moments(layer, h, fh[j])  # S x b x c
                h = (mu + var.sqrt() * eps[j][..., i:i + chunk]).mT  # S x c x b
            if self.skip:
                h = torch.cat([h, xc.expand(h.shape[0], *xc.shape)], dim=-1)
            mean, var = _layer_moments(self.output, h, fo)
            means.append(mean)
            variances.append(var)
        if len(means) == 1:
            return means[0], variances[0]
        return torch.cat(means, dim=-1), torch.cat(variances, dim=-1)

    @torch.no_grad()
    def joint_moments(self, x: torch.Tensor, num_samples: int, generator: torch.Generator
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """The joint predictive moments of batches of points (fast path of calling the model on ``B x q x d``).

        What GPyTorch computes for ``self(x)`` in eval mode with ``num_likelihood_samples = num_samples``: each hidden
        layer's marginals at every point, sampled independently per point and sample (GPyTorch's ``DeepGPLayer``
        draws ``Normal(mean, variance.sqrt()).rsample()`` of shape ``S x B x q x b``, in layer order; the same draws
        come from ``generator`` when it is seeded as GPyTorch's global one was), then the output GP's joint ``q x q``
        covariance per sample (``K_xx + jitter - (P K_zx)^T diag(lam) (P K_zx)``), without GPyTorch's lazy
        ``(m + q)``-point operators: about ten times faster on a proposal's joint rescoring. Tested against it.

        Not for a model with the skip connection: there GPyTorch's output layer draws its hidden input jointly over
        the ``q`` points (``MultitaskMultivariateNormal.rsample``), another distribution; callers use GPyTorch's call.

        Args:
            x: ``B x q x d`` inputs.

        Returns:
            ``(mean, cov)``: ``S x B x q`` and ``S x B x q x q`` (no observation noise).

        Raises:
            ValueError: the model has the skip connection.
        """
        if self.skip:
            raise ValueError("joint_moments: a DGP with the skip connection samples its hidden layer jointly; "
                             "call the model (GPyTorch) instead")
        self._ensure_eval()
        h = x
        for j, layer in enumerate(self.hidden):
            mu, var = _layer_moments(layer, h)  # (S x) B x b x q
            if j == 0:
                mu = mu.expand(num_samples, *mu.shape)
                var = var.expand(num_samples, *var.shape)
            eps = torch.randn(mu.mT.shape, generator=generator, dtype=mu.dtype)  # S x B x q x b
            h = mu.mT + var.mT.sqrt() * eps
        if not len(self.hidden):
            h = x.expand(num_samples, *x.shape)
        return _layer_moments(self.output, h, joint=True)  # S x B x q, S x B x q x q

    @torch.no_grad()
    def predict(self, x: torch.Tensor, seed: int = 0, num_samples: int | None = None,
                observation_noise: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample predictive means and variances (seeded; the fast path of :meth:`sample_moments`).

        Args:
            x: ``n x d`` inputs.
            seed: the sampling seed (the DGP's prediction is stochastic; the global RNG is left untouched).
            num_samples: samples through the hidden layers (default: settings.num_samples).
            observation_noise: add the likelihood's noise to the variances.

        Returns:
            ``(mean, var)``, each ``S x n``.
        """
        s = num_samples or self.settings.num_samples
        mean, var = self.sample_moments(x, s, torch.Generator().manual_seed(seed))
        if observation_noise:
            var = var + self.likelihood.noise
        return mean, var.clamp_min(1e-9)


@torch.no_grad()
def depth_diagnostics(model: DeepGPSurrogate, x: torch.Tensor, num_samples: int = 8, seed: int = 0) -> dict:
    """How much the hidden layer(s) do at ``x``: is the model deep in practice, or a GP on a fixed linear projection?

    Args:
        model: a trained DGP.
        x: ``n x d`` inputs (e.g. the training inputs).

    Returns:
        ``hidden_outputscale`` (per hidden layer: min / median / max over its GPs), ``warp`` (per hidden layer: RMS of
        the hidden GPs' mean minus their linear mean, over the RMS spread of the linear mean: 0 = a linear projection),
        ``mixture_between_within`` (variance over the mixture components of the output mean, over the mean
        within-component variance: 0 = the mixture is one Gaussian). Empty lists without hidden layers.
    """
    out = {"hidden_outputscale": [], "warp": [], "mixture_between_within": 0.0}
    h = x
    for layer in model.hidden:
        s = layer.covar_module.outputscale.reshape(-1)
        out["hidden_outputscale"].append([float(s.min()), float(s.median()), float(s.max())])
        mu, _ = _layer_moments(layer, h)  # b x n
        lin = layer.mean_module(h.unsqueeze(-3) if h.dim() == 2 else h)  # b x n
        spread = (lin - lin.mean(-1, keepdim=True)).pow(2).mean().sqrt().clamp_min(1e-12)
        out["warp"].append(float((mu - lin).pow(2).mean().sqrt() / spread))
        h = mu.mT
    if len(model.hidden):
        mean, var = model.predict(x, seed=seed, num_samples=num_samples)
        out["mixture_between_within"] = float(mean.var(0).mean() / var.mean().clamp_min(1e-12))
    return out
