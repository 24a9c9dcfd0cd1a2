"""Training the deep GP: stage 1 (pre-training on source tasks, cached on disk) and stage 2 (MAP transfer).

Stage 2 maximises ``ELBO(target data) + log p(theta)`` where ``p`` is a Gaussian centred on the pre-trained parameters
``theta_0`` with precision ``prior_strength``: ``log p = -prior_strength / 2 * ||theta - theta_0||^2`` (summed over the
parameters being tuned). ``prior_strength = 0`` is plain fine-tuning. The KL term of the ELBO is kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import gpytorch
import numpy as np
import torch
from gpytorch.mlls import DeepApproximateMLL, VariationalELBO

from raydgp.dgp.fast_elbo import neg_elbo
from raydgp.dgp.init import initialise_from_exact_gp
from raydgp.dgp.model import DeepGPSurrogate, DGPSettings
from raydgp.errors import ConfigError
from raydgp.pause import pause_point

log = logging.getLogger("raydgp.dgp")

#: Which parameters stage 2 tunes: everything; the output GP layer and the likelihood; the head plus the output GP's
#: variational distribution q(u) (kernel and inducing locations fixed); or only the "head": the output GP's mean and
#: output scale and the likelihood noise (a handful of numbers: cannot overfit a 10-point tuning set).
FINETUNE_SCOPES = ("all", "output", "variational", "head")


def _params(model: DeepGPSurrogate, scope: str) -> dict[str, torch.nn.Parameter]:
    if scope not in FINETUNE_SCOPES:
        raise ConfigError(f"fine-tune scope {scope!r}; choose one of {FINETUNE_SCOPES}")
    named = dict(model.named_parameters())
    if scope == "all":
        return named
    head = {k: v for k, v in named.items() if k.startswith("likelihood.") or k.startswith("output.mean_module")
            or k == "output.covar_module.raw_outputscale"}
    if scope == "head":
        return head
    if scope == "variational":
        return head | {k: v for k, v in named.items() if k.startswith("output.variational_strategy._variational")}
    return {k: v for k, v in named.items() if k.startswith("output.") or k.startswith("likelihood.")}


def train_elbo(model: DeepGPSurrogate, X: torch.Tensor, y: torch.Tensor, steps: int, lr: float, seed: int = 0,
               batch_size: int | None = None, scope: str = "all", prior_strength: float = 0.0,
               prior_center: dict[str, torch.Tensor] | None = None, num_data: int | None = None,
               fast: bool | None = None) -> list[float]:
    """Maximise the (minibatch) ELBO, optionally plus a Gaussian log-prior around ``prior_center``.

    Args:
        model: the DGP (trained in place).
        X: ``n x d`` inputs; y: ``n`` targets.
        steps: Adam steps; lr: learning rate.
        seed: seed of the minibatch and sampling noise (global RNG untouched).
        batch_size: minibatch size (None: full batch).
        scope: ``all`` or ``output`` parameters are trained; the others stay frozen.
        prior_strength: precision of the Gaussian prior around ``prior_center`` (0: none).
        prior_center: parameter values the prior is centred on (default: the values at the start).
        num_data: the data size the KL term is scaled against (default ``n``). Fine-tuning passes the pre-training
            size, so a few target points update the pre-trained posterior instead of pulling it back to the GP prior.
        fast: compute the ELBO directly (:mod:`raydgp.dgp.fast_elbo`: the same objective, less overhead) instead of
            through GPyTorch's ``DeepApproximateMLL`` (default: the model's ``settings.elbo``).

    Returns:
        The loss per step (negative ELBO per datum + prior term / n).
    """
    n = X.shape[0]
    if n == 0:
        raise ConfigError("no training data")
    params = _params(model, scope)
    center = prior_center or {k: v.detach().clone() for k, v in params.items()}
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    model.train()
    n_kl = max(n, num_data or n)
    if fast is None:
        fast = model.settings.elbo == "direct"
    mll = None if fast else DeepApproximateMLL(VariationalELBO(model.likelihood, model, num_data=n_kl))
    opt = torch.optim.Adam(list(params.values()), lr=lr)
    g = torch.Generator().manual_seed(seed)
    losses = []
    bs = n if not batch_size or batch_size >= n else batch_size
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # CPU only: torch.manual_seed formats a stack per device kind
        with gpytorch.settings.num_likelihood_samples(model.settings.num_samples):
            for _ in range(steps):
                pause_point()  # a kernel timing on this node may go first (raydgp.pause)
                idx = torch.randint(n, (bs,), generator=g) if bs < n else slice(None)
                if fast:
                    loss = neg_elbo(model, X[idx], y[idx], n_kl, g)
                else:
                    loss = -mll(model(X[idx]), y[idx])
                if prior_strength > 0:
                    pen = sum(((params[k] - center[k]) ** 2).sum() for k in params if k in center)
                    loss = loss + 0.5 * prior_strength * pen / n
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    return losses


def fit_dgp(X: torch.Tensor, y: torch.Tensor, settings: DGPSettings = DGPSettings(), steps: int | None = None,
            seed: int = 0, batch_size: int | None = None, warm: DeepGPSurrogate | None = None) -> DeepGPSurrogate:
    """A new DGP fitted to ``(X, y)``: built, initialised from exact GPs (:mod:`raydgp.dgp.init`), then trained on
    the ELBO for ``steps`` Adam steps (default ``settings.pretrain_steps``).

    Args:
        X: ``n x d`` inputs; y: ``n`` standardised targets.
        warm: the previous fresh fit on this data less its newest points: its exact GPs start the new ones'
            L-BFGS (the DGP itself is built afresh either way).
    """
    model = DeepGPSurrogate(X, settings, seed=seed)
    initialise_from_exact_gp(model, X, y, seed=seed, warm=warm)
    train_elbo(model, X, y, settings.pretrain_steps if steps is None else steps, settings.lr, seed=seed,
               batch_size=batch_size)
    return model


@dataclass
class Pretrained:
    """A pre-trained DGP and the key of the data it came from."""

    model: DeepGPSurrogate
    key: str
    from_cache: bool = False


#: Bumped whenever the stage-1 recipe changes, so weights cached by an older recipe are not reused.
RECIPE_VERSION = "3-exact-init-priors-informative-columns"


def data_key(X: np.ndarray, y: np.ndarray, settings: DGPSettings, seed: int) -> str:
    h = hashlib.sha256()
    h.update(RECIPE_VERSION.encode())
    h.update(np.ascontiguousarray(X, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(y, dtype=np.float32).tobytes())
    # only what shapes stage 1 (stage-2 settings such as finetune_steps must not invalidate the cache)
    pre = {k: v for k, v in settings.to_json().items() if k not in ("finetune_steps", "elbo")}
    h.update(json.dumps(pre, sort_keys=True).encode())
    h.update(str(seed).encode())
    return h.hexdigest()[:24]


def default_cache_dir() -> Path:
    return Path(os.environ.get("RAYDGP_CACHE", Path.home() / ".cache" / "raydgp")) / "pretrained"


def pretrain(X: torch.Tensor, y: torch.Tensor, settings: DGPSettings = DGPSettings(), seed: int = 0,
             cache_dir: str | os.PathLike | None = None) -> Pretrained:
    """Stage 1: train a DGP on source-task data, or load it from the cache when the same data was seen before.

    Weights are stored with ``torch.save(state_dict)`` and read back with ``torch.load(weights_only=True)``: no code is
    ever unpickled. A damaged cache file is ignored and rewritten.
    """
    key = data_key(X.numpy(), y.numpy(), settings, seed)
    model = DeepGPSurrogate(X, settings, seed=seed)
    path = Path(cache_dir) / f"{key}.pt" if cache_dir is not None else None
    if path is not None and path.exists():
        try:
            state = torch.load(path, weights_only=True, map_location="cpu")
            model.load_state_dict(state)
            model.eval()
            return Pretrained(model, key, from_cache=True)
        except Exception as e:  # noqa: BLE001 - a damaged or foreign cache file is retrained, never trusted
            log.warning("stage-1 cache %s is unreadable (%s: %s); pre-training again", path, type(e).__name__, e)
    initialise_from_exact_gp(model, X, y, seed=seed)
    train_elbo(model, X, y, settings.pretrain_steps, settings.lr, seed=seed, batch_size=settings.batch_size)
    model.num_train.fill_(len(y))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)
    return Pretrained(model, key)


@torch.no_grad()
def place_inducing_on_target(model: DeepGPSurrogate, X: torch.Tensor, max_fraction: float = 0.25) -> int:
    """Move some of the output GP's inducing points onto the target's (hidden-layer) inputs, keeping the function.

    The pre-trained output layer's inducing points sit where the history was; a new workload lies elsewhere in input
    space (its workload features differ), so no amount of fine-tuning q(u) at those points can express what the
    target data says about its own region. This moves the ``k = min(len(X), max_fraction * m)`` inducing points
    farthest from the target onto (a spread-out subset of) the target's hidden-layer means, and sets q(u) at the new
    locations to the pre-trained model's own predictive distribution there (exact, up to jitter): the function is
    unchanged until fine-tuning moves it.

    Args:
        model: the DGP (changed in place).
        X: ``n x d`` target inputs.
        max_fraction: at most this fraction of the inducing points is moved.

    Returns:
        How many inducing points were moved.
    """
    from raydgp.dgp.model import _layer_moments, _matern52

    if model.skip or X.shape[0] == 0:
        return 0
    h = X
    for layer in model.hidden:
        h = _layer_moments(layer, h)[0].mT  # n x b: the hidden means
    out = model.output
    vs = out.variational_strategy
    Z = vs.inducing_points.detach().clone()  # m x h
    m = Z.shape[0]
    # Inducing points already on a target point count against the budget (repeated refits add, never churn).
    on_target = torch.cdist(Z, h).min(dim=1).values < 1e-5
    k = min(h.shape[0], int(max_fraction * m)) - int(on_target.sum())
    if k < 1:
        return 0
    h = h[torch.cdist(h, Z[on_target]).min(dim=1).values >= 1e-5] if on_target.any() else h
    if h.shape[0] == 0:
        return 0
    k = min(k, h.shape[0])
    # A spread-out subset of the target points (farthest-point order), and the inducing points farthest from them.
    chosen = [0]
    dmin = torch.cdist(h, h[:1]).squeeze(-1)
    while len(chosen) < k:
        j = int(torch.argmax(dmin))
        chosen.append(j)
        dmin = torch.minimum(dmin, torch.cdist(h, h[j:j + 1]).squeeze(-1))
    new = h[chosen]
    dist = torch.cdist(Z, new).min(dim=1).values
    dist[on_target] = -1.0  # never move the ones already placed
    far = torch.argsort(dist, descending=True)[:k]
    Z2 = Z.clone()
    Z2[far] = new
    kern = out.covar_module
    ls, os = kern.base_kernel.lengthscale, kern.outputscale
    jitter = vs.jitter_val
    vd = vs._variational_distribution
    eye = torch.eye(m, dtype=torch.float64)
    L = torch.linalg.cholesky(_matern52(Z, Z, ls, os).double() + jitter * eye)
    A = torch.linalg.solve_triangular(L, _matern52(Z, Z2, ls, os).double(), upper=False)  # L^-1 K_z,z'
    C = vd.chol_variational_covar.double().tril()
    mean = A.mT @ vd.variational_mean.double()
    K2 = _matern52(Z2, Z2, ls, os).double()
    cov = K2 - A.mT @ A + (C.mT @ A).mT @ (C.mT @ A)
    L2 = torch.linalg.cholesky(K2 + jitter * eye)
    mw = torch.linalg.solve_triangular(L2, mean.unsqueeze(-1), upper=False).squeeze(-1)
    L2i = torch.linalg.solve_triangular(L2, eye, upper=False)
    Sw = L2i @ cov @ L2i.mT
    Sw = 0.5 * (Sw + Sw.mT) + 1e-6 * eye
    try:
        C2 = torch.linalg.cholesky(Sw)
    except RuntimeError:
        return 0  # numerically unsafe here: leave the model as it is
    vs.inducing_points.copy_(Z2.to(Z))
    vd.variational_mean.copy_(mw.to(vd.variational_mean))
    vd.chol_variational_covar.copy_(C2.to(vd.chol_variational_covar))
    return k


def map_finetune(model: DeepGPSurrogate, X: torch.Tensor, y: torch.Tensor, prior_strength: float = 1.0,
                 steps: int | None = None, lr: float | None = None, scope: str = "head", seed: int = 0,
                 prior_center: dict[str, torch.Tensor] | None = None, kl_from_pretraining: bool = True,
                 relocate: bool = True) -> list[float]:
    """Stage 2: MAP transfer of a (pre-trained) DGP to the target data, in place. See the module docstring.

    ``prior_center`` defaults to the model's current parameters; a warm-started refit passes the pre-trained ones so
    the prior stays anchored where stage 1 left it (entries for relocated inducing points are updated in place). With ``kl_from_pretraining`` the KL term keeps the weight it had
    in stage 1 (scaled to the pre-training data size), so the target points refine the pre-trained posterior rather
    than a 10-point ELBO pulling every variational distribution back to the GP prior. With ``relocate`` (and a scope
    that tunes q(u)) some inducing points first move onto the target's data (:func:`place_inducing_on_target`).
    """
    s = model.settings
    n_kl = int(model.num_train) if kl_from_pretraining else None
    if scope != "head" and relocate and place_inducing_on_target(model, X):
        # The moved inducing points and their q(u) are a re-parameterisation of the same function: the prior is
        # centred on the re-parameterised values, not on the old locations.
        if prior_center is None:
            prior_center = {k: v.detach().clone() for k, v in model.named_parameters()}
        for k, v in model.named_parameters():  # updated in place: a caller's refits keep the re-centred prior
            if k.startswith("output.variational_strategy."):
                prior_center[k] = v.detach().clone()
    return train_elbo(model, X, y, s.finetune_steps if steps is None else steps, lr or s.lr, seed=seed, scope=scope,
                      prior_strength=prior_strength, prior_center=prior_center, num_data=n_kl)
