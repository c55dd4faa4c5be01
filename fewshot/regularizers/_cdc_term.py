"""CDC as torch code: the distance-consistency term, the anchor latents and the patch-level D head (the method,
its options and the facts from the paper and the official code: ``cdc.py``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FewshotError
from ._base import GeneratorRegularizer, TrainingContext, require_unconditional

ANCHOR_SEED = 0xCDC  # the anchors and the head's first weights follow the run's seed, apart from its other draws
ANCHOR_PHASES = ("Gmain", "Dmain")  # the phases that generate from the anchors on an anchor batch (not Greg)


def synthesis_layers(G: nn.Module) -> list[nn.Module]:
    """G's modulated convolutions in order (4×4 conv1, then conv0, conv1 of every block): the feature maps the
    official code returns with ``return_feats=True``."""
    if not hasattr(G.synthesis, "blocks"):  # StyleGAN3: layers, no blocks, and no official CDC to follow
        from ..errors import FewshotError

        raise FewshotError(f"cdc compares the features of StyleGAN2 synthesis blocks; a {type(G).__name__} has none",
                           hint="fine-tune a StyleGAN3 base with another regularizer (reg-dgm, ewc)")
    layers: list[nn.Module] = []
    for block in G.synthesis.blocks():
        layers += [block.conv0] if hasattr(block, "conv0") else []
        layers.append(block.conv1)
    return layers


def layer_features(G: nn.Module, z: torch.Tensor, layers: Sequence[nn.Module]) -> list[torch.Tensor]:
    """The outputs of ``layers`` for latents ``z``: no style mixing, no truncation, G's fixed noise, and G's w
    average left alone (the comparison is no training step of the mapping)."""
    captured: dict[int, torch.Tensor] = {}
    handles = [layer.register_forward_hook(lambda _m, _i, out, k=k: captured.__setitem__(k, out))
               for k, layer in enumerate(layers)]
    try:
        ws = G.mapping(z, None, skip_w_avg_update=True)
        G.synthesis(ws, noise_mode="const")
    finally:
        for handle in handles:
            handle.remove()
    return [captured[k].float() for k in range(len(layers))]


def similarity_logits(features: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """[R, N−1]: for each sample i (of ``rows``, default all), the cosine similarities of its flattened features
    to those of every other sample j ≠ i, in the order of j."""
    flat = features.flatten(1)
    unit = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-8)
    n = flat.shape[0]
    rows = torch.arange(n, device=flat.device) if rows is None else rows
    sims = unit[rows] @ unit.T  # [R, N]
    others = torch.arange(n, device=flat.device)[None, :] != rows[:, None]
    return sims[others].view(rows.shape[0], n - 1)


def distance_consistency(source: Sequence[torch.Tensor], adapted: Sequence[torch.Tensor],
                         row_layers: torch.Tensor | None = None) -> torch.Tensor:
    """(1/N(N−1)) Σ_i KL(softmax(sim_source,i) ‖ softmax(sim_adapted,i)).

    ``source``/``adapted``: per layer, features [N, ...]. ``row_layers[i]`` is the layer row i is measured at
    (the official sampling); None averages the term over all the given layers."""
    if row_layers is None:
        terms = [distance_consistency([s], [a], torch.zeros(s.shape[0], dtype=torch.long, device=s.device))
                 for s, a in zip(source, adapted, strict=True)]
        return torch.stack(terms).mean()
    n = source[0].shape[0]
    total = source[0].new_zeros(())
    for layer in row_layers.unique().tolist():
        rows = (row_layers == layer).nonzero().flatten()
        # Both logs by log_softmax: equal similarities give exactly zero (log(softmax) would differ in the last bit).
        log_source = F.log_softmax(similarity_logits(source[layer], rows), dim=1)
        log_adapted = F.log_softmax(similarity_logits(adapted[layer], rows), dim=1)
        total = total + (log_source.exp() * (log_source - log_adapted)).sum()
    return total / (n * (n - 1))


def patch_block(D: nn.Module, patch_resolution: int) -> nn.Module:
    """The D block whose second convolution outputs the ``patch_resolution`` map (at most half the image)."""
    blocks = getattr(D, "blocks", None)
    if blocks is None:
        raise FewshotError(f"CDC's patch-level D reads StyleGAN2 discriminator blocks; {type(D).__name__} has none")
    target = min(patch_resolution, D.img_resolution // 2)
    for block in blocks():
        if block.resolution == 2 * target:
            return block
    raise FewshotError(f"CDC: the discriminator has no {target} px feature map for the patch head")


class CDC(GeneratorRegularizer):
    """Distance consistency to the source G on G's loss; anchor latents and patch-level logits through the hooks."""

    hooks_training = True

    def __init__(self, weight: float, feature_batch: int = 4, layers: str = "sampled", anchors: int = 0,
                 anchor_std: float = 0.1, anchor_interval: int = 4, patch_resolution: int = 32) -> None:
        super().__init__()
        self.weight = weight
        self.feature_batch = feature_batch
        self.layers = layers
        self.num_anchors = anchors
        self.anchor_std = anchor_std
        self.anchor_interval = anchor_interval
        self.patch_resolution = patch_resolution
        self.register_buffer("anchors", torch.zeros(0))
        self.head: nn.Module | None = None
        self._anchor_batch = True
        self._phase = "Gmain"
        self._last = 0.0

    # -- binding -------------------------------------------------------------------------------------------
    def bind(self, context: TrainingContext) -> None:
        from ..nets.layers import Conv2dLayer

        require_unconditional(context, "CDC")
        object.__setattr__(self, "_G", context.G)  # plain attributes: the run owns and saves the networks
        object.__setattr__(self, "_source", context.source()["G"].eval())
        object.__setattr__(self, "_block", patch_block(context.D, self.patch_resolution))
        gen = torch.Generator().manual_seed(context.seed * 1000 + ANCHOR_SEED)
        count = self.num_anchors or context.num_images
        self.anchors = torch.randn([count, context.G.z_dim], generator=gen).to(context.device)
        with torch.random.fork_rng(devices=[]):  # the head's initial weights draw from the run's seed only
            torch.manual_seed(context.seed * 1000 + ANCHOR_SEED)
            self.head = Conv2dLayer(self._block.conv1.out_channels, 1, kernel_size=3, activation="lrelu")
        self.head.requires_grad_(False).to(context.device)

    def discriminator_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters()) if self.head is not None else []

    # -- the loop's hooks ------------------------------------------------------------------------------------
    def phase_latents(self, phase: str, batch_idx: int, z: torch.Tensor) -> torch.Tensor:
        self._phase = phase
        self._anchor_batch = batch_idx % self.anchor_interval == 0
        if not (self._anchor_batch and phase in ANCHOR_PHASES and self.anchors.numel()):
            return z
        pick = torch.randint(self.anchors.shape[0], (z.shape[0],), device=z.device)
        return self.anchors[pick] + self.anchor_std * torch.randn_like(z)

    def discriminate(self, D: nn.Module, images: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor | None:
        if self._anchor_batch or self.head is None:
            return None  # anchor batches: the image-level D
        found: dict[str, torch.Tensor] = {}
        handle = self._block.conv1.register_forward_hook(lambda _m, _i, out: found.__setitem__("map", out))
        try:
            x, img = None, images
            for block in D.blocks():  # up to the patch map; the rest of D is not needed
                x, img = block(x, img)
                if block is self._block:
                    break
        finally:
            handle.remove()
        logits = self.head(found["map"].float()).flatten(1)  # [N, patches]
        # R1 on the mean patch logit of each image, as the official code's regularisation pass.
        return logits.mean(dim=1, keepdim=True) if self._phase == "Dreg" else logits

    def generator_loss(self, fake_images: torch.Tensor, real_images: torch.Tensor | None = None) -> torch.Tensor:
        G, source = self._G, self._source
        layers, source_layers = synthesis_layers(G), synthesis_layers(source)
        z = torch.randn([self.feature_batch, G.z_dim], device=fake_images.device)
        rows = None
        if self.layers == "sampled":  # the official draw: one layer per sample, any but the first
            rows = torch.randint(1, len(layers), (self.feature_batch,), device=z.device)
        source.train(G.training)  # the same code path in both (fused modulation follows the mode)
        with torch.no_grad():
            source_features = layer_features(source, z, source_layers)
        adapted_features = layer_features(G, z, layers)
        if rows is None:
            source_features, adapted_features = source_features[1:], adapted_features[1:]
        term = self.weight * distance_consistency(source_features, adapted_features, rows)
        self._last = term.detach()
        return term

    def stats(self) -> dict[str, float]:
        return {"cdc_distance": float(self._last)}

    # -- state ---------------------------------------------------------------------------------------------
    def training_state(self) -> dict[str, torch.Tensor]:
        state = {"anchors": self.anchors}
        if self.head is not None:
            state.update({f"head.{k}": v for k, v in self.head.state_dict().items()})
        return state

    def load_training_state(self, state: dict[str, torch.Tensor]) -> None:
        self.anchors.copy_(state["anchors"])
        if self.head is not None:
            self.head.load_state_dict({k[len("head."):]: v for k, v in state.items() if k.startswith("head.")})

    def extra_repr(self) -> str:
        return (f"weight={self.weight:g}, feature_batch={self.feature_batch}, layers={self.layers}, "
                f"anchor_interval={self.anchor_interval}, patch_resolution={self.patch_resolution}")
