"""DISP: data instance priors (Mangla et al.) — a GAN conditioned on frozen features of its training images.

- :mod:`.bank`: the prior bank (building it with a registered extractor, saving, batches with priors);
- :mod:`.priors`: mixup, GMM (own EM), bank rows and image priors for sampling;
- :mod:`.nets`: the prior-conditioned generator conversion and the projection discriminator;
- :mod:`.sample`: helpers for ``fewshot sample`` / ``interpolate`` and metrics.

Submodules load on first use: ``fewshot.nets`` imports :mod:`.nets` to register the projection
discriminator, and that must not pull in the rest.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    "PriorBank": "bank", "build_prior_bank": "bank", "prior_extractor_spec": "bank",
    "read_bundle_bank": "bank", "BANK_STATE_KEY": "bank",
    "mixup": "priors", "fit_gmm": "priors", "prior_source": "priors", "image_priors": "priors",
    "ProjectionDiscriminator": "nets", "condition_generator": "nets", "projection_discriminator": "nets",
    "condition_networks": "nets", "PriorSampledGenerator": "sample", "conditions_for": "sample",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)


__all__ = sorted(_EXPORTS)
