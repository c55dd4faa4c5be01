"""``adafm`` (Zhao, Cong & Carin 2020): general-part transfer plus adaptive filter modulation.

Every frozen conv of G's general part gets per-(out, in)-channel ``gamma`` (init 1) and ``beta``
(init 0): ``W_hat[o, i] = gamma[o, i] * W[o, i] + beta[o, i]``, applied to the base weight BEFORE
StyleGAN2's modulation and demodulation (demodulation cancels a per-output common factor of gamma;
beta survives). Only gamma, beta and the specific part train. D's general part stays plainly frozen.

ToRGB: the paper's general part includes the RGB output layer and modulates every frozen conv, so
ToRGB layers of frozen blocks are modulated too (``adafm_torgb=True``, default). Note that for a 1x1
kernel gamma/beta can reach any weight matrix, so this effectively lets those ToRGB weights adapt;
``adafm_torgb=False`` keeps them plainly frozen.

``adafm_start_kimg``: until the trainer reports that many kimg through ``on_kimg``, gamma/beta stay
at 1/0 (they enter the forward detached, so they get no gradient) while the specific part trains.
Export (``export_generator``) folds gamma/beta into plain weights.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import FewshotError
from .general_part import GeneralPart
from .registry import register_transfer


@register_transfer
class AdaFM(GeneralPart):
    name = "adafm"
    summary = "General-part transfer with AdaFM (gamma*W+beta) on every frozen G conv; specific part trains."
    accepted_options = ("general", "specific", "adafm_start_kimg", "adafm_torgb", "r1_fake", "seed")

    def __init__(
        self,
        *,
        general: str | Sequence[int] | None = None,
        specific: str = "finetune",
        adafm_start_kimg: float = 0.0,
        adafm_torgb: bool = True,
        r1_fake: bool = False,
        seed: int = 0,
    ) -> None:
        try:
            start = float(adafm_start_kimg)
        except (TypeError, ValueError):
            raise FewshotError(f"adafm_start_kimg must be a number of kimg, got {adafm_start_kimg!r}") from None
        super().__init__(general=general, specific=specific, r1_fake=r1_fake, seed=seed, adafm=True,
                         adafm_torgb=bool(adafm_torgb), adafm_start_kimg=start)
        if self.general_g == 0:
            raise FewshotError("adafm needs at least one frozen generator block to modulate (general G >= 1)")

    def g_general_count(self, G) -> int:  # type: ignore[no-untyped-def]
        g = super().g_general_count(G)
        if g == 0:
            raise FewshotError("adafm needs at least one frozen generator block to modulate (general G >= 1)")
        return g

    @property
    def options(self) -> dict:
        return {**super().options, "adafm_start_kimg": self.adafm_start_kimg, "adafm_torgb": self.adafm_torgb}

    def header(self) -> str:
        start = f", AdaFM from {self.adafm_start_kimg:g} kimg" if self.adafm_start_kimg > 0 else ""
        torgb = "" if self.adafm_torgb else ", ToRGB not modulated"
        return super().header() + start + torgb
