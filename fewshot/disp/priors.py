"""Drawing priors to sample a DISP generator.

- ``mixup``: ``lam * b_i + (1 - lam) * b_j`` for two random bank entries, ``lam ~ U(0, 1)`` (the paper's
  few-shot rule; the default for banks of up to 1000 images);
- ``gmm``: a Gaussian mixture (diagonal or full covariance, K components) fitted on the bank by EM
  (our own small implementation in torch, seeded; the default above 1000 images);
- ``bank``: one training instance by index;
- ``image``: the priors of user images (an edit, a sketch) through the run's extractor (needs its weights).

A prior depends only on the seed it is drawn for, so the same seed gives the same picture whatever
else is sampled with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import FewshotError
from .bank import PriorBank, extract_priors, load_feature_fn

PRIOR_MODES = ("mixup", "gmm", "bank", "image")
MIXUP_MAX_IMAGES = 1000  # above this the default prior is a GMM
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def default_mode(bank: PriorBank) -> str:
    return "mixup" if bank.num_images <= MIXUP_MAX_IMAGES else "gmm"


# ---------------------------------------------------------------------------------------------------------------
# Mixup


@dataclass
class Mixup:
    priors: torch.Tensor  # [n, d]
    first: torch.Tensor  # [n] bank rows
    second: torch.Tensor  # [n]
    weights: torch.Tensor  # [n] lam in [0, 1]


def mixup(bank: PriorBank | torch.Tensor, count: int, generator: torch.Generator) -> Mixup:
    """``count`` mixups of two random bank entries (each its own pair and ``lam ~ U(0, 1)``)."""
    priors = bank.priors if isinstance(bank, PriorBank) else bank
    rows = priors.shape[0]
    first = torch.randint(rows, (count,), generator=generator)
    second = torch.randint(rows, (count,), generator=generator)
    lam = torch.rand(count, generator=generator)
    p = priors.cpu().float()
    mixed = lam[:, None] * p[first] + (1 - lam[:, None]) * p[second]
    return Mixup(mixed, first, second, lam)


# ---------------------------------------------------------------------------------------------------------------
# Gaussian mixture by EM


@dataclass
class GaussianMixture:
    """``weights [K]``, ``means [K, d]``, and ``variances [K, d]`` (diag) or ``covariances [K, d, d]`` (full)."""

    weights: torch.Tensor
    means: torch.Tensor
    covariance: str
    variances: torch.Tensor | None = None
    covariances: torch.Tensor | None = None
    log_likelihood: float = float("nan")
    iterations: int = 0

    @property
    def components(self) -> int:
        return int(self.weights.shape[0])

    def component_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log N(x | mu_k, Sigma_k)`` for every sample and component, ``[n, K]``."""
        d = x.shape[1]
        if self.covariance == "diag":
            var = self.variances
            diff2 = (x[:, None, :] - self.means[None]).square() / var[None]
            return -0.5 * (diff2.sum(2) + var.log().sum(1)[None] + d * math.log(2 * math.pi))
        chol = torch.linalg.cholesky(self.covariances)  # [K, d, d]
        diff = (x[None] - self.means[:, None, :]).transpose(1, 2)  # [K, d, n]
        solved = torch.linalg.solve_triangular(chol, diff, upper=False)
        maha = solved.square().sum(1).T  # [n, K]
        logdet = 2 * torch.diagonal(chol, dim1=1, dim2=2).log().sum(1)
        return -0.5 * (maha + logdet[None] + d * math.log(2 * math.pi))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(self.component_log_prob(x.double()) + self.weights.log()[None], dim=1)

    def sample(self, count: int, generator: torch.Generator) -> torch.Tensor:
        comp = torch.multinomial(self.weights.float(), count, replacement=True, generator=generator)
        noise = torch.randn(count, self.means.shape[1], generator=generator, dtype=torch.float64)
        if self.covariance == "diag":
            out = self.means[comp] + self.variances[comp].sqrt() * noise
        else:
            chol = torch.linalg.cholesky(self.covariances)
            out = self.means[comp] + torch.einsum("nij,nj->ni", chol[comp], noise)
        return out.float()


def _kmeans_pp(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: spread the initial means out (EM from random points often merges components)."""
    n = x.shape[0]
    centres = [x[torch.randint(n, (1,), generator=generator)].squeeze(0)]
    dist = (x - centres[0]).square().sum(1)
    for _ in range(1, k):
        probs = dist / dist.sum() if dist.sum() > 0 else torch.full_like(dist, 1 / n)
        idx = torch.multinomial(probs.float(), 1, generator=generator)
        centres.append(x[idx].squeeze(0))
        dist = torch.minimum(dist, (x - centres[-1]).square().sum(1))
    return torch.stack(centres)


def fit_gmm(x: torch.Tensor, components: int = 8, covariance: str = "diag", max_iter: int = 200,
            tol: float = 1e-6, reg: float = 1e-6, seed: int = 0) -> GaussianMixture:
    """Fit a Gaussian mixture to ``x [n, d]`` by expectation-maximisation (float64, seeded).

    ``reg`` is added to every variance (diagonal) so a component never collapses onto one point;
    ``full`` covariance needs ``n`` well above ``d`` (with 4096-d VGG priors use ``diag``).
    """
    if covariance not in ("diag", "full"):
        raise FewshotError(f"GMM covariance must be diag or full, got {covariance!r}")
    x = x.detach().cpu().double()
    n, d = x.shape
    if components < 1:
        raise FewshotError(f"--gmm-components must be at least 1, got {components}")
    if components > n:
        raise FewshotError(f"cannot fit {components} GMM components to {n} priors", hint="use fewer components")
    generator = torch.Generator().manual_seed(seed)
    means = _kmeans_pp(x, components, generator)
    floor = reg * max(float(x.var(0).mean()), 1e-12) + reg
    resp = torch.nn.functional.one_hot(torch.cdist(x, means).argmin(1), components).double()
    gmm = GaussianMixture(torch.full([components], 1 / components, dtype=torch.float64), means, covariance)
    previous = -float("inf")
    for step in range(1, max_iter + 1):
        # M-step from the current responsibilities (the first from the hard k-means++ assignment).
        nk = resp.sum(0) + 1e-10
        gmm.weights = nk / n
        gmm.means = resp.T @ x / nk[:, None]
        if covariance == "diag":
            gmm.variances = (resp.T @ x.square()) / nk[:, None] - gmm.means.square()
            gmm.variances = gmm.variances.clamp_min(0) + floor
        else:
            diff = x[None] - gmm.means[:, None, :]  # [K, n, d]
            gmm.covariances = torch.einsum("kn,kni,knj->kij", resp.T, diff, diff) / nk[:, None, None]
            gmm.covariances = gmm.covariances + floor * torch.eye(d, dtype=torch.float64)
        # E-step.
        joint = gmm.component_log_prob(x) + gmm.weights.log()[None]
        total = torch.logsumexp(joint, dim=1, keepdim=True)
        resp = (joint - total).exp()
        ll = float(total.mean())
        gmm.log_likelihood, gmm.iterations = ll, step
        if abs(ll - previous) < tol * max(1.0, abs(ll)):
            break
        previous = ll
    return gmm


# ---------------------------------------------------------------------------------------------------------------
# Image priors


def read_image_for_prior(path: str | Path, resolution: int) -> torch.Tensor:
    """A user image as uint8 ``[3, R, R]``: RGB, centre-cropped to a square, resized to G's resolution
    (the size the training images had when the bank was built)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            img = img.crop((left, top, left + side, top + side)).resize((resolution, resolution), Image.LANCZOS)
            import numpy as np

            array = np.asarray(img, dtype=np.uint8).copy()
    except (OSError, UnidentifiedImageError) as exc:
        raise FewshotError(f"cannot read image {path}: {exc}") from None
    return torch.from_numpy(array).permute(2, 0, 1)


def expand_image_paths(items: Sequence[str | Path]) -> list[Path]:
    """Files as given; folders expand to their images (sorted). Missing paths fail with one message."""
    paths: list[Path] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise FewshotError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise FewshotError(f"--prior {item}: not mixup, gmm, bank, nor an existing image file or folder")
    return paths


def image_priors(paths: Sequence[str | Path], bank: PriorBank, resolution: int,
                 weights_path: str | Path | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """Priors of user images through the bank's extractor (its weights must be available)."""
    images = torch.stack([read_image_for_prior(p, resolution) for p in paths])
    from ..hub import suggesting

    with suggesting("--prior-weights FILE"):  # image priors are asked for by `fewshot sample` / `walk`
        feature_fn, spec = load_feature_fn(bank.extractor, weights_path, device)
    priors = extract_priors(images, feature_fn)
    if priors.shape[1] != bank.dim:
        raise FewshotError(f"the {spec.name} extractor gives {priors.shape[1]}-d features; the bank has {bank.dim}")
    return priors


# ---------------------------------------------------------------------------------------------------------------
# Priors per seed


def prior_source(bank: PriorBank, mode: str | None = None, *, index: int | None = None, components: int = 8,
                 covariance: str = "diag", image_prior_rows: torch.Tensor | None = None,
                 seed_offset: int = 0) -> Callable[[Sequence[int]], torch.Tensor]:
    """A function ``seeds -> priors [len(seeds), d]`` where each row depends only on its seed.

    mixup / gmm draw from ``torch.Generator().manual_seed(seed + seed_offset)``; bank returns row
    ``index`` for every seed; image uses image ``seed mod n_images``.
    """
    mode = mode or default_mode(bank)
    if mode not in PRIOR_MODES:
        raise FewshotError(f"unknown prior {mode!r}", hint=f"choose from {', '.join(PRIOR_MODES)} (or image files)")
    if mode == "bank":
        if index is None:
            raise FewshotError("--prior bank needs --prior-index I (a training image)")
        if not 0 <= index < len(bank):
            flips = f"; {bank.num_images}-{len(bank) - 1} are their x-flips" if bank.mirrored else ""
            raise FewshotError(f"--prior-index {index} is out of range: the bank has images 0-{bank.num_images - 1}"
                               f"{flips}")
        row = bank.priors[index].cpu().float()
        return lambda seeds: row.expand(len(seeds), -1).clone()
    if index is not None:
        raise FewshotError("--prior-index is only for --prior bank")
    if mode == "image":
        if image_prior_rows is None or image_prior_rows.shape[0] == 0:
            raise FewshotError("--prior image needs image files")
        rows = image_prior_rows.cpu().float()
        return lambda seeds: rows[torch.tensor([s % rows.shape[0] for s in seeds], dtype=torch.long)]
    if mode == "gmm":
        gmm = fit_gmm(bank.priors, components=min(components, len(bank)), covariance=covariance, seed=0)

        def gmm_priors(seeds: Sequence[int]) -> torch.Tensor:
            return torch.cat([gmm.sample(1, torch.Generator().manual_seed(s + seed_offset)) for s in seeds])

        return gmm_priors

    def mixup_priors(seeds: Sequence[int]) -> torch.Tensor:
        return torch.cat([mixup(bank, 1, torch.Generator().manual_seed(s + seed_offset)).priors for s in seeds])

    return mixup_priors
