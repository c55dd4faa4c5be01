"""The interface every augmentation method implements, its registry, and the ADA p rule.

The trainer calls, per batch::

    reals = augment.replace_reals(reals)          # APA only; identity otherwise
    logits_real = D(augment(reals)); augment.accumulate(logits_real)
    logits_fake = D(augment(fakes)); augment.remember_fakes(fakes)
    augment.update(batch_size)                    # once per batch

All mutable state (p, the sign statistics, the batch counter, APA's stored fakes) lives in
buffers, so ``state_dict()`` / ``load_state_dict()`` resume a run exactly.
"""

from __future__ import annotations

import torch

from ..errors import FewshotError

# What every augmentation takes besides its own options: the adaptive-p knobs (the [augment] section's own keys).
COMMON_KEYS = ("p", "target", "ada_kimg", "interval")


def make_augment(method: str, options: object | None = None, **common: object) -> Augment:
    """The registered augmentation ``method`` with its options (a dataclass from the registry) and the common
    knobs ``p``, ``target``, ``ada_kimg``, ``interval``."""
    from ..registry import augmentations, options_dict

    entry = augmentations.get(method)
    if options is None:
        options = entry.make_options()
    return entry.target(**common, **options_dict(options))


def build_augment(name: str, **kwargs: object) -> Augment:
    """``make_augment`` with flat keyword arguments: common knobs, the method's options, and (for methods with an
    ``ops`` option, i.e. ADA) single-op overrides such as ``xflip=0``. A keyword the method does not take is a
    FewshotError naming it."""
    from dataclasses import fields

    from ..registry import augmentations

    entry = augmentations.get(name)
    common = {k: kwargs.pop(k) for k in COMMON_KEYS if k in kwargs}
    own = {f.name for f in fields(entry.options)}
    values = {k: kwargs.pop(k) for k in list(kwargs) if k in own}
    if kwargs and "ops" in own:
        values["ops"] = {**dict(values.get("ops") or {}), **kwargs}  # type: ignore[dict-item]
    elif kwargs:
        raise FewshotError(f"augmentation {entry.name!r} does not take {', '.join(sorted(kwargs))}",
                           hint=f"it accepts: {', '.join(sorted((*COMMON_KEYS, *own)))}")
    return make_augment(entry.name, entry.make_options(values), **common)


class Augment(torch.nn.Module):
    """Base class: no augmentation, but the sign statistics and the ADA update rule.

    ``p`` is the current augmentation probability (a scalar buffer). Non-adaptive methods keep it
    fixed; adaptive ones move it every ``interval`` batches by
    ``sign(mean(sign(D(real))) - target) * batch_size * interval / (ada_kimg * 1000)``, clamped to
    [0, 1] (the official code forgets the upper clamp). ``rt`` (the mean sign) is measured for every
    method, because it is a useful overfitting signal even without ADA.
    """

    adaptive: bool = False

    def __init__(self, p: float = 0.0, target: float = 0.6, ada_kimg: float = 500, interval: int = 4) -> None:
        super().__init__()
        if not 0.0 <= float(p) <= 1.0:
            raise FewshotError(f"augmentation probability p must be in [0, 1], got {p}")
        if not -1.0 <= float(target) <= 1.0:
            raise FewshotError(f"ADA target must be in [-1, 1] (a mean of signs), got {target}")
        if float(ada_kimg) <= 0:
            raise FewshotError(f"ada_kimg must be positive, got {ada_kimg}")
        if int(interval) < 1:
            raise FewshotError(f"ADA interval must be at least 1 batch, got {interval}")
        self.target = float(target)
        self.ada_kimg = float(ada_kimg)
        self.interval = int(interval)
        self.register_buffer("p", torch.tensor(float(p), dtype=torch.float32))
        # Sums of signs are small integers: float32 holds them exactly up to 2**24.
        self.register_buffer("sign_sum", torch.zeros([], dtype=torch.float32))
        self.register_buffer("sign_count", torch.zeros([], dtype=torch.float32))
        self.register_buffer("batches_since_update", torch.zeros([], dtype=torch.int64))
        self.register_buffer("last_rt", torch.zeros([], dtype=torch.float32))

    # -- the pipeline ------------------------------------------------------------------------

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def replace_reals(self, reals: torch.Tensor) -> torch.Tensor:
        return reals

    def remember_fakes(self, fakes: torch.Tensor) -> None:
        return None

    # -- the adaptive rule -------------------------------------------------------------------

    @torch.no_grad()
    def accumulate(self, real_logits: torch.Tensor) -> None:
        """Add the signs of D's outputs on (augmented) reals to the running statistics."""
        signs = real_logits.detach().float().sign()
        self.sign_sum += signs.sum().to(self.sign_sum.device)
        self.sign_count += float(signs.numel())

    @torch.no_grad()
    def update(self, batch_size: int) -> None:
        """Count one batch; every ``interval`` batches measure rt, adjust p (if adaptive), reset.

        ``batch_size`` is the global batch (all GPUs). Under torch.distributed the statistics are
        summed over ranks first, so p stays identical everywhere.
        """
        self.batches_since_update += 1
        if int(self.batches_since_update) < self.interval:
            return
        self.batches_since_update.zero_()
        stats = torch.stack([self.sign_sum, self.sign_count])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(stats)
        total, count = (float(v) for v in stats.cpu())
        self.sign_sum.zero_()
        self.sign_count.zero_()
        if count <= 0:
            return
        rt = total / count
        self.last_rt.fill_(rt)
        if self.adaptive:
            step = batch_size * self.interval / (self.ada_kimg * 1000.0)
            direction = (rt > self.target) - (rt < self.target)  # sign(rt - target), 0 when equal
            self.p.copy_((self.p + direction * step).clamp(0.0, 1.0))

    def stats(self) -> dict[str, float]:
        """``{'p': current probability, 'rt': mean sign of D(real) over the last interval}``.

        ``rt`` is 0.0 until the first interval has completed.
        """
        return {"p": float(self.p), "rt": float(self.last_rt)}

    def extra_repr(self) -> str:
        return f"p={float(self.p):.4g}, adaptive={self.adaptive}, target={self.target}, ada_kimg={self.ada_kimg:g}"
