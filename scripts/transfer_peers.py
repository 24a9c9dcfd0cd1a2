"""Transfer-learning peers for the replay benchmark (issue 12, item 4): the strongest published ways to use the same
history, run on the same candidates and budget as the DGP in ``scripts/bench_search_replay.py``.

* :class:`MTGP`: BoTorch's ``MultiTaskGP`` (ICM: a data kernel times a task-covariance ``PositiveIndexKernel``) on a
  per-task subsample of the history plus the target's results, hyper-parameters fitted by L-BFGS every few results
  and the model conditioned in between; LogEI for the target task.
* :class:`RGPE`: the ranking-weighted GP ensemble of Feurer et al. (2018), as BoTorch's RGPE tutorial builds it: one
  ``SingleTaskGP`` per history task (fitted once), a target GP on the target's results, each model's weight the
  fraction of posterior samples in which it ranks the target's results best (the target GP by leave-one-out samples),
  base models whose median ranking loss exceeds the target GP's 95th percentile dropped (weight dilution
  prevention); the ensemble's mean ``sum w_i mu_i`` and variance ``sum w_i^2 var_i`` feed LogEI.
* :class:`FSBO`: few-shot BO with a deep-kernel GP (Wistuba & Grabocka, 2021): an MLP feature extractor under a
  Matern-5/2 GP, meta-trained on batches of single history tasks (exact marginal likelihood), fine-tuned on the
  target's results before every proposal; LogEI.

All three see the configuration columns of the encoding only (a task index, or separate models, replaces the workload
features), standardised on the history; targets are standardised ``-log(latency)`` (larger is better), as for the
DGP. Their first ``n_init`` picks are zero-shot (no target result yet): the best predicted on average over the history
tasks. Benchmark code: not part of the package.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch

PEERS = ("mtgp", "rgpe", "fsbo")


class Prep:
    """Configuration columns of the shared encoding, standardised on the history.

    A column is a *task* column when it is constant inside every history task (the workload and hardware features);
    those and the columns constant overall are dropped.
    """

    def __init__(self, tasks: Sequence):
        X = np.concatenate([t.X for t in tasks])
        within = np.max([t.X.std(0) for t in tasks], axis=0)
        self.cols = (within > 1e-9) & (X.std(0) > 1e-9)
        self.mean = X[:, self.cols].mean(0)
        self.std = X[:, self.cols].std(0)

    def __call__(self, X: np.ndarray) -> torch.Tensor:
        return torch.as_tensor((np.asarray(X)[:, self.cols] - self.mean) / self.std, dtype=torch.float64)


def _log_ei(mu: torch.Tensor, var: torch.Tensor, best: float) -> torch.Tensor:
    from botorch.acquisition.analytic import _log_ei_helper

    sigma = var.clamp_min(1e-12).sqrt()
    return _log_ei_helper((mu - best) / sigma) + sigma.log()


def _fit(model, maxiter: int = 100) -> None:
    from botorch.fit import fit_gpytorch_mll
    from gpytorch.mlls import ExactMarginalLogLikelihood

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model),
                             optimizer_kwargs={"options": {"maxiter": maxiter}})
        except Exception:  # noqa: BLE001 - keep the initial hyper-parameters; the model still conditions on data
            pass


def _gp(Z: torch.Tensor, y: np.ndarray):
    from botorch.models import SingleTaskGP

    return SingleTaskGP(Z, torch.as_tensor(y, dtype=torch.float64).unsqueeze(-1), outcome_transform=None)


def peer_search(method: str, tasks: Sequence, sp, lat: dict, seed: int, budget: int) -> list:
    """Run one peer on a replayed target: ``lat`` maps each candidate configuration to its recorded latency (ms);
    returns the configurations in the order the peer picked them."""
    from raydgp.dgp.data import standardised_targets

    torch.manual_seed(seed)
    prep = Prep(tasks)
    pool = list(lat)
    Zpool = prep(sp.encode_many(pool))
    peer = {"mtgp": MTGP, "rgpe": RGPE, "fsbo": FSBO}[method](tasks, prep, Zpool, seed)
    chosen: list[int] = []
    for _ in range(min(budget, len(pool))):
        yt = (standardised_targets(["t"] * len(chosen), ["ok"] * len(chosen), [lat[pool[i]] for i in chosen])[0]
              if chosen else np.zeros(0))
        taken = set(chosen)
        rest = [i for i in range(len(pool)) if i not in taken]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            score = peer.score(chosen, yt, rest)
        chosen.append(rest[int(torch.argmax(score))])
    return [pool[i] for i in chosen]


class _ZeroShot:
    n_init = 3

    def _zero_shot(self, rest: list[int]) -> torch.Tensor:
        """Mean over the history tasks of each task's standardised prediction (a config good on many tasks)."""
        return self.task_means[:, rest].mean(0)


class RGPE(_ZeroShot):
    """Ranking-weighted GP ensemble (Feurer et al. 2018; BoTorch's RGPE tutorial)."""

    def __init__(self, tasks, prep, Zpool, seed, n_base: int = 200, n_samples: int = 256):
        rng = np.random.default_rng(seed)
        self.Zpool, self.n_samples = Zpool, n_samples
        self.gen = torch.Generator().manual_seed(seed)
        self.base = []
        for t in tasks:
            idx = rng.choice(len(t.y), min(n_base, len(t.y)), replace=False)
            gp = _gp(prep(t.X[idx]), t.y[idx])
            _fit(gp, 50)
            gp.eval()
            self.base.append(gp)
        with torch.no_grad():
            post = [gp.posterior(Zpool) for gp in self.base]
        self.mu = torch.stack([p.mean.squeeze(-1) for p in post])  # (tasks, pool)
        self.var = torch.stack([p.variance.squeeze(-1) for p in post])
        self.task_means = self.mu
        self.weights: np.ndarray | None = None

    def score(self, chosen, yt, rest):
        if len(chosen) < self.n_init:
            return self._zero_shot(rest)
        Zt = self.Zpool[chosen]
        y = torch.as_tensor(yt, dtype=torch.float64)
        target = _gp(Zt, yt)
        _fit(target, 50)
        target.eval()
        losses = [self._rank_loss(self._samples(gp, Zt), y) for gp in self.base]
        losses.append(self._rank_loss(self._loo_samples(target, Zt, y), y))
        L = torch.stack(losses)  # (models, samples)
        keep = L[:-1].median(dim=1).values <= torch.quantile(L[-1].double(), 0.95)  # weight dilution prevention
        L[:-1][~keep] = float("inf")
        noise = torch.rand(L.shape, generator=self.gen, dtype=torch.float64) * 1e-3  # random tie-breaking
        best = torch.argmin(L.double() + noise, dim=0)
        w = torch.bincount(best, minlength=L.shape[0]).double() / L.shape[1]
        self.weights = w.numpy()
        with torch.no_grad():
            tp = target.posterior(self.Zpool[rest])
        mu = (w[:-1, None] * self.mu[:, rest]).sum(0) + w[-1] * tp.mean.squeeze(-1)
        var = (w[:-1, None] ** 2 * self.var[:, rest]).sum(0) + w[-1] ** 2 * tp.variance.squeeze(-1)
        return _log_ei(mu, var, float(yt.max()))

    def _samples(self, gp, Zt) -> torch.Tensor:
        with torch.no_grad():
            mvn = gp.posterior(Zt).distribution
            base = torch.randn(self.n_samples, Zt.shape[0], generator=self.gen, dtype=torch.float64)
            return mvn.rsample(torch.Size([self.n_samples]), base_samples=base)  # (samples, n)

    def _loo_samples(self, gp, Zt, y) -> torch.Tensor:
        """Leave-one-out predictive samples of the target GP at its own points (closed form, same hyper-parameters)."""
        with torch.no_grad():
            K = gp.covar_module(Zt).to_dense() + gp.likelihood.noise * torch.eye(len(y), dtype=torch.float64)
            Kinv = torch.linalg.inv(K + 1e-8 * torch.eye(len(y), dtype=torch.float64))
            r = y - gp.mean_module(Zt)
            d = torch.diagonal(Kinv).clamp_min(1e-12)
            mu = y - (Kinv @ r) / d
            sd = d.rsqrt()
        eps = torch.randn(self.n_samples, len(y), generator=self.gen, dtype=torch.float64)
        return mu + sd * eps

    @staticmethod
    def _rank_loss(f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Misranked pairs per sample: ``f`` (samples, n), ``y`` (n,)."""
        fa = f.unsqueeze(-1) < f.unsqueeze(-2)
        ya = (y.unsqueeze(-1) < y.unsqueeze(-2)).unsqueeze(0)
        return (fa ^ ya).sum(dim=(-1, -2)).double()


class MTGP(_ZeroShot):
    """BoTorch ``MultiTaskGP`` on a per-task history subsample plus the target's results."""

    def __init__(self, tasks, prep, Zpool, seed, n_per_task: int = 12, refit_every: int = 10):
        rng = np.random.default_rng(seed)
        Xs, ys, ts = [], [], []
        for k, t in enumerate(tasks):
            idx = rng.choice(len(t.y), min(n_per_task, len(t.y)), replace=False)
            Xs.append(prep(t.X[idx]))
            ys.append(torch.as_tensor(t.y[idx], dtype=torch.float64))
            ts.append(torch.full((len(idx), 1), float(k), dtype=torch.float64))
        self.Xh = torch.cat([torch.cat(Xs), torch.cat(ts)], dim=1)
        self.yh = torch.cat(ys)
        self.T = len(tasks)  # the target's task index
        self.Zpool, self.refit_every = Zpool, refit_every
        self.state = None
        self._last_fit = -1
        self.task_means = None

    def _model(self, chosen, yt):
        from botorch.models import MultiTaskGP

        Xt = torch.cat([self.Zpool[chosen], torch.full((len(chosen), 1), float(self.T), dtype=torch.float64)], 1)
        X = torch.cat([self.Xh, Xt])
        y = torch.cat([self.yh, torch.as_tensor(yt, dtype=torch.float64)]).unsqueeze(-1)
        m = MultiTaskGP(X, y, task_feature=-1, all_tasks=list(range(self.T + 1)), outcome_transform=None)
        if self.state is not None:
            m.load_state_dict(self.state, strict=False)
        if self.state is None or len(chosen) - self._last_fit >= self.refit_every:
            _fit(m, 60)
            self.state = {k: v for k, v in m.state_dict().items() if "train" not in k}
            self._last_fit = len(chosen)
        m.eval()
        return m

    def _posterior(self, m, rest, task: int):
        Zr = self.Zpool[rest]
        X = torch.cat([Zr, torch.full((len(rest), 1), float(task), dtype=torch.float64)], 1)
        with torch.no_grad():
            p = m.posterior(X)
        return p.mean.squeeze(-1), p.variance.squeeze(-1)

    def score(self, chosen, yt, rest):
        m = self._model(chosen, yt)
        if len(chosen) < self.n_init:
            return torch.stack([self._posterior(m, rest, k)[0] for k in range(self.T)]).mean(0)
        mu, var = self._posterior(m, rest, self.T)
        return _log_ei(mu, var, float(yt.max()))


class FSBO(_ZeroShot):
    """Deep-kernel GP meta-trained on the history tasks, fine-tuned on the target (Wistuba & Grabocka 2021)."""

    def __init__(self, tasks, prep, Zpool, seed, hidden: int = 64, features: int = 16, meta_steps: int = 1500,
                 batch: int = 50, finetune_steps: int = 50, lr: float = 1e-3):
        import gpytorch

        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        d = Zpool.shape[1]
        self.Zpool, self.finetune_steps, self.lr = Zpool, finetune_steps, lr
        mlp = torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
                                  torch.nn.ReLU(), torch.nn.Linear(hidden, features)).double()

        class DeepKernelGP(gpytorch.models.ExactGP):
            def __init__(self, x, y, lik):
                super().__init__(x, y, lik)
                self.mlp = mlp
                self.mean_module = gpytorch.means.ConstantMean()
                self.covar_module = gpytorch.kernels.ScaleKernel(
                    gpytorch.kernels.MaternKernel(nu=2.5, ard_num_dims=features))

            def forward(self, x):
                z = self.mlp(x)
                return gpytorch.distributions.MultivariateNormal(self.mean_module(z), self.covar_module(z))

        lik = gpytorch.likelihoods.GaussianLikelihood().double()
        data = [(prep(t.X), torch.as_tensor(t.y, dtype=torch.float64)) for t in tasks]
        self.gp = DeepKernelGP(data[0][0][:2], data[0][1][:2], lik).double()
        mll = gpytorch.mlls.ExactMarginalLogLikelihood(lik, self.gp)
        opt = torch.optim.Adam(self.gp.parameters(), lr=lr)
        self.gp.train()
        for _ in range(meta_steps):  # episodic meta-training: one task's batch per step
            Z, y = data[int(rng.integers(len(data)))]
            idx = torch.as_tensor(rng.choice(len(y), min(batch, len(y)), replace=False))
            self.gp.set_train_data(Z[idx], y[idx], strict=False)
            opt.zero_grad()
            loss = -mll(self.gp(Z[idx]), y[idx])
            loss.backward()
            opt.step()
        self.meta_state = {k: v.clone() for k, v in self.gp.state_dict().items()}
        self.mll = mll
        # zero-shot warm start: the meta-trained GP conditioned on each of (up to) 8 history tasks in turn
        self.gp.eval()
        means = []
        for k in rng.choice(len(data), min(8, len(data)), replace=False):
            Z, y = data[int(k)]
            idx = torch.as_tensor(rng.choice(len(y), min(100, len(y)), replace=False))
            self.gp.set_train_data(Z[idx], y[idx], strict=False)
            with torch.no_grad(), gpytorch.settings.fast_pred_var():
                means.append(self.gp(Zpool).mean)
        self.task_means = torch.stack(means)

    def score(self, chosen, yt, rest):
        import gpytorch

        if len(chosen) < self.n_init:
            return self._zero_shot(rest)
        self.gp.load_state_dict(self.meta_state)
        Zt, y = self.Zpool[chosen], torch.as_tensor(yt, dtype=torch.float64)
        self.gp.set_train_data(Zt, y, strict=False)
        self.gp.train()
        opt = torch.optim.Adam(self.gp.parameters(), lr=self.lr)
        for _ in range(self.finetune_steps):
            opt.zero_grad()
            loss = -self.mll(self.gp(Zt), y)
            loss.backward()
            opt.step()
        self.gp.eval()
        with torch.no_grad(), gpytorch.settings.fast_pred_var():
            p = self.gp(self.Zpool[rest])
        return _log_ei(p.mean, p.variance, float(yt.max()))
