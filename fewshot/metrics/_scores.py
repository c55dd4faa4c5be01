"""The metric formulas, on feature tensors: FID, KID, precision/recall (k-NN manifolds) and IS.

Everything here is pure math on arrays; the feature extractors and the generator live elsewhere.
Statistics are computed in float64 because FID subtracts large nearly equal numbers. The linear
algebra runs through torch (its thread pool), not numpy's BLAS: on a busy machine numpy's OpenBLAS
threads spin against each other and were measured 20× slower on these small products.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import FewshotError


@dataclass
class GaussianStats:
    """Mean and covariance of a feature set (the Gaussian fit FID compares)."""

    mu: np.ndarray  # [D] float64
    sigma: np.ndarray  # [D, D] float64
    num: int


def gaussian_stats(features: np.ndarray | torch.Tensor) -> GaussianStats:
    """Mean and unbiased covariance (ddof=1, as ``np.cov``, pytorch-fid and torch-fidelity) of [N, D] features."""
    feats = torch.from_numpy(_as_float64(features))
    if feats.shape[0] < 2:
        raise FewshotError(f"FID needs at least 2 feature vectors, got shape {tuple(feats.shape)}")
    mu = feats.mean(dim=0)
    centred = feats - mu
    sigma = centred.T @ centred / (feats.shape[0] - 1)
    return GaussianStats(mu=mu.numpy(), sigma=sigma.numpy(), num=int(feats.shape[0]))


def _sym_sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix via eigh; tiny negative eigenvalues -> 0."""
    vals, vecs = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr sqrt(sigma1 @ sigma2)`` computed stably.

    ``sigma1 @ sigma2`` is not symmetric, and a general matrix square root (scipy.linalg.sqrtm, a
    Schur method) can return complex noise when the covariances are rank deficient, as they are
    whenever N < D. ``sigma1 @ sigma2`` is similar to the symmetric PSD matrix
    ``M = sqrt(sigma1) @ sigma2 @ sqrt(sigma1)``, so both have the same eigenvalues and
    ``tr sqrt(sigma1 sigma2) = sum sqrt(eig(M))``; eigh on a symmetric matrix is backward stable
    and its eigenvalues are real.
    """
    root1 = _sym_sqrt_psd(torch.as_tensor(sigma1, dtype=torch.float64))
    middle = root1 @ torch.as_tensor(sigma2, dtype=torch.float64) @ root1
    eig = torch.linalg.eigvalsh((middle + middle.T) / 2)
    return float(eig.clamp_min(0).sqrt().sum())


def frechet_distance(stats1: GaussianStats, stats2: GaussianStats) -> float:
    """``||mu1 - mu2||² + tr(s1) + tr(s2) - 2 tr sqrt(s1 s2)`` between two Gaussian fits."""
    if stats1.mu.shape != stats2.mu.shape:
        raise FewshotError(f"feature sizes differ: {stats1.mu.shape[0]} vs {stats2.mu.shape[0]}")
    diff = stats1.mu - stats2.mu
    value = float(diff @ diff + np.trace(stats1.sigma) + np.trace(stats2.sigma))
    value -= 2 * trace_sqrt_product(stats1.sigma, stats2.sigma)
    return max(value, 0.0)


def fid_from_features(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor) -> float:
    """FID between two feature sets, by the cheaper of two exact routes.

    With ``A`` and ``B`` the centred features scaled by ``1/sqrt(n-1)`` (so ``sigma1 = AᵀA``,
    ``sigma2 = BᵀB``), the non-zero eigenvalues of ``sigma1 sigma2`` are those of ``C Cᵀ`` with
    ``C = A Bᵀ`` (``XY`` and ``YX`` share them), hence ``tr sqrt(sigma1 sigma2)`` is the sum of the
    singular values of the ``n1 × n2`` matrix ``C``. When either set is smaller than the feature
    size (the few-shot case: 100 reals, 2048-d) that SVD is far cheaper than two ``D × D``
    eigendecompositions; otherwise :func:`frechet_distance` on the Gaussian fits is used.
    """
    x, y = _as_float64(real), _as_float64(fake)
    if x.shape[1] != y.shape[1]:
        raise FewshotError(f"feature sizes differ: {x.shape[1]} vs {y.shape[1]}")
    if min(x.shape[0], y.shape[0]) < 2:
        raise FewshotError(f"FID needs at least 2 feature vectors per set, got {x.shape[0]} and {y.shape[0]}")
    if min(x.shape[0], y.shape[0]) >= x.shape[1]:
        return frechet_distance(gaussian_stats(x), gaussian_stats(y))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    mu_x, mu_y = xt.mean(dim=0), yt.mean(dim=0)
    a = (xt - mu_x) / np.sqrt(x.shape[0] - 1)
    b = (yt - mu_y) / np.sqrt(y.shape[0] - 1)
    trace_sqrt = float(torch.linalg.svdvals(a @ b.T).sum())
    diff = mu_x - mu_y
    return max(float(diff @ diff + (a * a).sum() + (b * b).sum()) - 2 * trace_sqrt, 0.0)


def kid_subset_size(requested: int, n_real: int, n_fake: int) -> int:
    """The KID subset size actually used: never larger than the smaller set (100-shot sets break 1000)."""
    size = min(requested, n_real, n_fake)
    if size < 2:
        raise FewshotError(f"KID needs at least 2 real and 2 fake images, got {n_real} real and {n_fake} fake")
    return size


def kid_from_features(
    real: np.ndarray | torch.Tensor,
    fake: np.ndarray | torch.Tensor,
    num_subsets: int = 100,
    max_subset_size: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """Kernel Inception Distance: unbiased MMD² with ``k(x, y) = (x·y / d + 1)³``, averaged over subsets.

    Each subset draws ``m`` reals and ``m`` fakes without replacement; the estimate is
    ``mean_{i≠j} k(x_i, x_j) + mean_{i≠j} k(y_i, y_j) − 2 mean_{i,j} k(x_i, y_j)``.
    Returns ``{"mean", "std", "subset_size", "num_subsets"}`` (std over subsets, ddof=0).
    """
    x_all, y_all = torch.from_numpy(_as_float64(real)), torch.from_numpy(_as_float64(fake))
    if x_all.shape[1] != y_all.shape[1]:
        raise FewshotError(f"feature sizes differ: {x_all.shape[1]} vs {y_all.shape[1]}")
    dim = x_all.shape[1]
    m = kid_subset_size(max_subset_size, x_all.shape[0], y_all.shape[0])
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(num_subsets):
        x = x_all[torch.from_numpy(rng.choice(x_all.shape[0], m, replace=False))]
        y = y_all[torch.from_numpy(rng.choice(y_all.shape[0], m, replace=False))]
        kxx = (x @ x.T / dim + 1) ** 3
        kyy = (y @ y.T / dim + 1) ** 3
        kxy = (x @ y.T / dim + 1) ** 3
        within = (kxx.sum() - kxx.trace() + kyy.sum() - kyy.trace()) / (m * (m - 1))
        values.append(float(within - 2 * kxy.mean()))
    arr = np.asarray(values)
    return {"mean": float(arr.mean()), "std": float(arr.std()), "subset_size": m, "num_subsets": num_subsets}


def _pairwise_sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # ||a||² + ||b||² − 2ab in float64: a matmul is far cheaper than explicit differences, and float64
    # keeps the cancellation error far below any k-NN radius.
    dist = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return dist.clamp_min_(0)


def knn_radii(features: torch.Tensor, k: int = 3, batch_size: int = 1024) -> torch.Tensor:
    """Squared distance of each point to its k-th nearest other point (the manifold ball radius)."""
    n = features.shape[0]
    if n <= k:
        raise FewshotError(f"precision/recall with k={k} needs more than {k} images per set, got {n}")
    radii = []
    for start in range(0, n, batch_size):
        dist = _pairwise_sq_dists(features[start:start + batch_size], features)
        # k+1 because the nearest point is the point itself at distance 0.
        radii.append(dist.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def manifold_coverage(
    manifold: torch.Tensor, radii: torch.Tensor, probes: torch.Tensor, batch_size: int = 1024
) -> float:
    """Fraction of ``probes`` that fall inside at least one ball (centre in ``manifold``, radius ``radii``)."""
    inside = 0
    for start in range(0, probes.shape[0], batch_size):
        dist = _pairwise_sq_dists(probes[start:start + batch_size], manifold)
        inside += int((dist <= radii[None, :]).any(dim=1).sum())
    return inside / probes.shape[0]


def precision_recall_from_features(
    real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor, k: int = 3, batch_size: int = 1024
) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019).

    precision: share of fakes inside the real manifold (union of k-NN balls around reals);
    recall: share of reals inside the fake manifold.
    """
    real_t = torch.as_tensor(_as_float64(real))
    fake_t = torch.as_tensor(_as_float64(fake))
    if real_t.shape[1] != fake_t.shape[1]:
        raise FewshotError(f"feature sizes differ: {real_t.shape[1]} vs {fake_t.shape[1]}")
    real_radii = knn_radii(real_t, k, batch_size)
    fake_radii = knn_radii(fake_t, k, batch_size)
    return {
        "precision": manifold_coverage(real_t, real_radii, fake_t, batch_size),
        "recall": manifold_coverage(fake_t, fake_radii, real_t, batch_size),
        "k": k,
    }


def inception_score_from_logits(logits: np.ndarray | torch.Tensor, num_splits: int = 10) -> dict[str, float]:
    """IS = ``exp(E_x KL(p(y|x) || p(y)))`` per split; mean and std (ddof=0) over ``num_splits`` splits."""
    logits_t = torch.as_tensor(_as_float64(logits))
    n = logits_t.shape[0]
    if n < num_splits:
        raise FewshotError(f"IS with {num_splits} splits needs at least {num_splits} images, got {n}")
    log_p = torch.log_softmax(logits_t, dim=1)
    scores = []
    for chunk in torch.tensor_split(log_p, num_splits):
        # log p(y) = log mean_x p(y|x), computed in log space for tiny probabilities.
        log_py = torch.logsumexp(chunk, dim=0) - np.log(chunk.shape[0])
        kl = (chunk.exp() * (chunk - log_py)).sum(dim=1).mean()
        scores.append(float(kl.exp()))
    arr = np.asarray(scores)
    return {"mean": float(arr.mean()), "std": float(arr.std()), "num_splits": num_splits}


def _as_float64(values: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    arr = np.ascontiguousarray(values, dtype=np.float64)
    if not arr.flags.writeable:  # torch.from_numpy wants a writable buffer
        arr = arr.copy()
    if arr.ndim != 2:
        raise FewshotError(f"expected a [N, D] feature array, got shape {arr.shape}")
    return arr
