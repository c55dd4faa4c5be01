"""The training loop, readable top to bottom.

setup (data, networks, transfer, augmentation, regulariser, optimisers, resume)
  -> for every batch: the phases Gmain, Greg, Dmain, Dreg (lazy regularisation), G_ema, ADA p
  -> at every tick: log line, and at snapshot ticks: sample grid, resumable snapshot, metrics
  -> final.safetensors (exported networks)

Semantics follow stylegan2-ada-pytorch (REFERENCE.md §2). Unlike it, a snapshot holds the whole
training state (optimisers, augmentation p and statistics, path-length mean, RNG states,
counters), so ``--resume`` continues exactly where the run stopped.
"""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import Bundle, load_checkpoint, load_state_strict, save_bundle
from ..config import Hyper, TrainConfig, derive_hyper
from ..data import content_hash, is_builtin_source, sample_batch
from ..errors import FewshotError
from ..host_memory import keep_freed_memory
from ..nets import Discriminator, Generator
from . import distributed
from .loss import LossWeights, StyleGAN2Loss
from .run_dir import (
    check_resumed_data,
    list_snapshots,
    new_run_dir,
    open_resume_point,
    prune_snapshots,
    resumed_data_source,
    run_lock,
    snapshot_path,
)
from .state import capture_rng, flatten, restore_rng, unflatten


@dataclass
class Phase:
    name: str  # Gmain | Greg | Dmain | Dreg
    module: nn.Module
    opt: torch.optim.Optimizer
    params: list[nn.Parameter]
    interval: int


@dataclass
class Progress:
    """Counters that define where a run is; saved in every snapshot."""

    cur_nimg: int = 0
    batch_idx: int = 0
    cur_tick: int = 0
    tick_start_nimg: int = 0
    best_metric: float | None = None
    elapsed_sec: float = 0.0


@dataclass
class TickStats:
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, stats: dict[str, torch.Tensor]) -> None:
        for key, value in stats.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value)
            self.counts[key] = self.counts.get(key, 0) + 1

    def means(self) -> dict[str, float]:
        return {k: self.sums[k] / self.counts[k] for k in self.sums}


class StopRequested:
    """SIGINT/SIGTERM set a flag; the loop finishes the batch, writes a snapshot and stops."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequested:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def __bool__(self) -> bool:
        return self.signum is not None


class TrainingInterrupted(Exception):
    def __init__(self, signum: int, snapshot: Path | None) -> None:
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum
        self.snapshot = snapshot


# ---------------------------------------------------------------------------------------------
# Setup helpers


def pick_device(choice: str, local_rank: int = 0) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise FewshotError("device cuda requested but no CUDA device is available")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def load_training_images(cfg: TrainConfig, resolution: int, progress: bool) -> Any:
    from .. import data

    if cfg.data in ("", None):
        raise FewshotError("no training data given", hint="fewshot train DATA_FOLDER_OR_ZIP (or 'demo')")
    domain = data.demo_domain(cfg.data)  # "demo" (discs) or "demo:<domain>": built in, no files
    if domain is not None:
        return data.demo_images(n=cfg.max_images or 64, resolution=resolution, seed=0, domain=domain)
    return data.load_images(cfg.data, resolution, crop=cfg.crop, mirror=cfg.mirror, max_images=cfg.max_images,
                            progress=progress)


def scratch_networks(cfg: TrainConfig, hyper: Hyper, resolution: int) -> dict[str, nn.Module]:
    G = Generator(
        z_dim=cfg.z_dim, c_dim=0, w_dim=cfg.w_dim, img_resolution=resolution, img_channels=3,
        mapping_kwargs={"num_layers": hyper.map_layers},
        synthesis_kwargs={
            "channel_base": hyper.channel_base, "channel_max": cfg.channel_max,
            "num_fp16_res": cfg.num_fp16_res, "conv_clamp": cfg.conv_clamp,
        },
    )
    D = Discriminator(
        c_dim=0, img_resolution=resolution, img_channels=3, channel_base=hyper.channel_base,
        channel_max=cfg.channel_max, num_fp16_res=cfg.num_fp16_res, conv_clamp=cfg.conv_clamp,
        epilogue_kwargs={"mbstd_group_size": hyper.mbstd_group},
    )
    return {"G": G, "D": D, "G_ema": copy.deepcopy(G).eval()}


def base_networks(cfg: TrainConfig, base: Bundle, hyper: Hyper) -> tuple[dict[str, nn.Module], list[str]]:
    """Networks shaped like the base (the architecture follows the checkpoint), weights copied.

    Returns the nets and the list of base tensors that did not fit (empty unless the config
    asked for a different shape, e.g. --map-layers); the caller stops unless --allow-partial.
    """
    g_src = base.networks.get("G") or base.networks.get("G_ema")
    if g_src is None:
        raise FewshotError("the base checkpoint holds no generator")
    g_kwargs = copy.deepcopy(g_src.init_kwargs)
    if cfg.map_layers is not None:
        g_kwargs.setdefault("mapping_kwargs", {})["num_layers"] = cfg.map_layers
    G = Generator(**g_kwargs)
    res = G.img_resolution
    if "D" in base.networks:
        d_kwargs = copy.deepcopy(base.networks["D"].init_kwargs)
        d_kwargs.setdefault("epilogue_kwargs", {})["mbstd_group_size"] = hyper.mbstd_group
        D = type(base.networks["D"])(**d_kwargs)  # a DISP base keeps its ProjectionDiscriminator
    else:
        D = Discriminator(c_dim=g_kwargs.get("c_dim", 0), img_resolution=res, img_channels=G.img_channels,
                          channel_base=g_kwargs.get("synthesis_kwargs", {}).get("channel_base", 32768),
                          epilogue_kwargs={"mbstd_group_size": hyper.mbstd_group})
    nets = {"G": G, "D": D, "G_ema": copy.deepcopy(G)}
    skipped: list[str] = []
    for name, net in nets.items():
        src = base.networks.get(name) or (base.networks.get("G_ema") if name == "G" else None) \
            or (base.networks.get("G") if name == "G_ema" else None)
        if src is None:
            if name == "D":
                skipped.append("D.* (the base has no discriminator; D starts from scratch)")
            continue
        own = net.state_dict()
        src_state = src.state_dict()
        with torch.no_grad():
            for key, value in src_state.items():
                if key in own and own[key].shape == value.shape:
                    own[key].copy_(value)
                else:
                    skipped.append(f"{name}.{key} {tuple(value.shape)}")
        skipped += [f"{name}.{k} (not in base)" for k in own if k not in src_state]
    nets["G_ema"].eval()
    return nets, skipped


def count_params(params: list[nn.Parameter]) -> int:
    return sum(p.numel() for p in params)


def lazy_opt_kwargs(lr: float, interval: int | None) -> dict[str, Any]:
    """A lazily regularised optimiser uses lr*c and betas**c with c = interval/(interval+1)."""
    ratio = interval / (interval + 1) if interval else 1.0
    return dict(lr=lr * ratio, betas=(0.0 ** ratio, 0.99**ratio), eps=1e-8)


def fixed_latents(cfg: TrainConfig, z_dim: int, device: torch.device) -> torch.Tensor:
    cols, rows = cfg.sample_grid
    gen = torch.Generator().manual_seed(cfg.seed + 123456)
    return torch.randn([cols * rows, z_dim], generator=gen).to(device)


def save_grid(images: torch.Tensor, path: Path, grid: tuple[int, int]) -> None:
    """Write a [N,3,H,W] float batch in [-1,1] as a grid (cols, rows), quantised as the official tools do."""
    from ..generate import save_image_grid, to_uint8

    cols, rows = grid
    n = min(images.shape[0], cols * rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image_grid(to_uint8(images[:n].detach().float()), path, (cols, math.ceil(n / cols)))


@torch.no_grad()
def render_fakes(G_ema: nn.Module, latents: torch.Tensor, batch: int,
                 conditions: torch.Tensor | None = None) -> torch.Tensor:
    from ..generate import inference_kwargs

    fast = inference_kwargs(latents.device)  # the batched CPU path of `fewshot sample`
    if conditions is None:
        return torch.cat([G_ema(z, None, noise_mode="const", **fast) for z in latents.split(batch)])
    return torch.cat([G_ema(z, c, noise_mode="const", **fast)
                      for z, c in zip(latents.split(batch), conditions.split(batch), strict=True)])


# ---------------------------------------------------------------------------------------------
# The loop


def train(
    cfg: TrainConfig,
    resume: str | None = None,
    dry_run: bool = False,
    aug_preview: Path | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    max_ticks: int | None = None,
    kimg_override: float | None = None,
    data_override: str | None = None,
) -> Path | None:
    """Run (or resume) a training run; returns the run folder (None for --dry-run / --aug-preview).

    On resume the snapshot's config wins; ``kimg_override`` trains longer and ``data_override`` names the
    run's data again (the same source, or its new place when the original is gone)."""
    with ExitStack() as held:  # the run folder's lock, released however the run ends
        held.enter_context(_process_torch_settings())
        return _train(cfg, resume, dry_run, aug_preview, progress, echo, max_ticks, kimg_override, data_override,
                      held)


@contextmanager
def _process_torch_settings() -> Iterator[None]:
    """A run sets process-wide torch switches (deterministic algorithms, cuDNN autotuning, TF32); a program that
    calls train() gets its own settings back when the run ends."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved[2:]


def _train(cfg: TrainConfig, resume: str | None, dry_run: bool, aug_preview: Path | None, progress: bool,
           echo: Callable[[str], None], max_ticks: int | None, kimg_override: float | None,
           data_override: str | None, held: ExitStack) -> Path | None:
    dist = distributed.init_from_env()
    device = pick_device(cfg.device, dist.local_rank)
    is_main = dist.rank == 0
    if not is_main:
        echo = lambda _msg: None  # noqa: E731 - only rank 0 talks

    # --- Resume: the snapshot's config wins, except for how long to train.
    resume_state: Bundle | None = None
    run_dir: Path | None = None
    data_moved = False
    unreadable: list[Path] = []
    if resume:
        run_dir, snap, resume_state, unreadable = open_resume_point(resume, cfg.outdir, cfg.name, echo)
        stored = resume_state.training["config"]
        stored["device"] = cfg.device
        if kimg_override is not None:
            stored["kimg"] = kimg_override
        stored["data"], data_moved = resumed_data_source(stored.get("data", ""), data_override, resume, echo)
        cfg = TrainConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in stored.items()})
        echo(f"resuming {run_dir} from {snap.name}")
        if device.type == "cuda" and not cfg.deterministic:
            echo("note: on a GPU a resumed run follows the straight run up to float rounding (atomic sums in "
                 "cuDNN and ADA); runs started with --deterministic resume exactly")

    torch.manual_seed(cfg.seed * dist.world_size + dist.rank)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
        torch.backends.cudnn.allow_tf32 = cfg.tf32
        torch.backends.cudnn.benchmark = not cfg.deterministic
    if cfg.deterministic:
        # cuBLAS keeps its GEMMs deterministic only when told so before its first use in the process.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    if device.type == "cpu":
        keep_freed_memory()  # large per-step temporaries: reuse them instead of re-faulting fresh pages

    if resume_state is None and not is_builtin_source(cfg.data):
        if not Path(cfg.data).expanduser().exists():
            raise FewshotError(f"data source {cfg.data} does not exist")
        # Stored absolute, so `--resume` finds the images from any working directory.
        cfg = replace(cfg, data=str(Path(cfg.data).expanduser().resolve()))

    # --- Base network (the architecture follows it) or scratch networks.
    base: Bundle | None = None
    if resume_state is None and not cfg.base and cfg.transfer != "finetune":
        raise FewshotError(f"transfer {cfg.transfer!r} keeps layers of a pretrained network frozen: it needs --base",
                           hint="e.g. --base ffhq256 (`fewshot download --list`), or --transfer finetune "
                                "to train from scratch")
    if cfg.base and resume_state is None:
        base = _load_base(cfg.base)
    g_ref = (base.networks.get("G") or base.networks.get("G_ema")) if base else None
    if resume_state is not None:
        resolution = resume_state.specs["G"].init_kwargs["img_resolution"]
    elif g_ref is not None:
        resolution = g_ref.img_resolution
        if cfg.resolution is not None and cfg.resolution != resolution and is_main:
            echo(f"note: resolution {cfg.resolution} ignored: the base makes {resolution} px images, and the "
                 f"training images are resized to that")
    else:
        resolution = cfg.resolution
        if resolution is None:  # from scratch on a real folder: the data decides, as the official dataset tool
            if is_builtin_source(cfg.data):
                raise FewshotError("training from scratch on the demo images needs --resolution (or give --base)")
            from ..data import infer_resolution

            resolution, reason = infer_resolution(cfg.data, crop=cfg.crop)
            if is_main:
                echo(f"{reason}; --resolution N to choose another")
    fine_tuning = bool(cfg.base)
    hyper = derive_hyper(cfg, resolution, fine_tuning, dist.world_size)

    # --- Data.
    images = load_training_images(cfg, resolution, progress and is_main)
    if is_main:
        echo(images.describe())
    data_record = {"images": len(images), "sha256": content_hash(images.images)}
    if resume_state is not None:
        check_resumed_data(resume_state.training.get("data"), data_record, cfg.data, data_moved, echo)

    # --- Networks.
    if resume_state is not None:
        nets = {n: _build_like(resume_state, n) for n in ("G", "D", "G_ema")}
    elif base is not None:
        nets, skipped = base_networks(cfg, base, hyper)
        if skipped and not cfg.allow_partial:
            listing = "; ".join(skipped[:8]) + (f"; ... ({len(skipped)} in all)" if len(skipped) > 8 else "")
            raise FewshotError(f"the base does not fit the requested networks: {listing}",
                               hint="pass --allow-partial to train anyway")
        for line in skipped:
            echo(f"note: not loaded from base: {line}")
    else:
        nets = scratch_networks(cfg, hyper, resolution)

    # --- DISP: the prior bank (from the snapshot on resume) and prior-conditioned G / projection D.
    disp_bank = None
    if cfg.disp:
        disp_bank, nets = _setup_disp(cfg, images, nets, resume_state, device, dry_run, echo, progress and is_main)
    G, D, G_ema = nets["G"], nets["D"], nets["G_ema"]

    # --- Transfer method: what is frozen, modulated (AdaFM) or re-initialised.
    from ..transfer import build_transfer

    transfer = build_transfer(
        cfg.transfer, freeze_d=cfg.freeze_d, general=tuple(cfg.general) if cfg.general else None,
        specific=cfg.specific, adafm_start_kimg=cfg.adafm_start_kimg, r1_fake=cfg.r1_fake, seed=cfg.seed,
    )
    transfer.apply(G, D)
    transfer.apply_ema(G_ema)
    if resume_state is not None:
        for name, net in nets.items():
            load_state_strict(net, _net_state(resume_state, name), f"snapshot:{name}")
    else:
        G_ema.load_state_dict(G.state_dict())  # same start, e.g. after re-initialising the specific part
    for net in nets.values():
        net.requires_grad_(False).to(device)
    G_ema.eval()

    # --- Augmentation and regulariser.
    from ..augment import build_augment

    aug_kwargs: dict[str, Any] = dict(p=cfg.aug_p, target=cfg.ada_target, ada_kimg=hyper.ada_kimg,
                                      interval=cfg.ada_interval)
    if cfg.aug in ("ada", "ada+apa"):
        aug_kwargs["pipeline"] = cfg.aug_pipeline
    if cfg.aug == "diffaug":
        aug_kwargs["policy"] = cfg.diffaug_policy
    augment = build_augment(cfg.aug, **aug_kwargs).to(device)
    if aug_preview is not None:
        from ..augment import preview_grid

        if cfg.aug_p == 0 and getattr(augment, "adaptive", False):
            augment.p.fill_(0.5)
        preview_grid(augment, images.images, aug_preview)
        echo(f"wrote {aug_preview} (augmentation {cfg.aug}, p={float(augment.p):.2f})")
        return None

    regularizer = None
    reg_plan = _reg_dgm_plan(cfg) if cfg.reg_lambda > 0 and dry_run else None  # a dry run loads no weights
    if cfg.reg_lambda > 0 and not dry_run:
        from ..regularizers import build_regularizer

        regularizer = build_regularizer(
            "reg-dgm", model=cfg.reg_model, lam=cfg.reg_lambda, estimator=cfg.reg_estimator,
            normalize=cfg.reg_normalize, real_images=images.images, device=device, mirror=cfg.mirror,
            weights_path=cfg.reg_weights,
        )

    # --- Optimisers: one per network, lr and betas scaled for lazy regularisation.
    g_params = transfer.trainable_parameters(G)
    d_params = transfer.trainable_parameters(D)
    opt_G = torch.optim.Adam(g_params, **lazy_opt_kwargs(hyper.lr_g, cfg.pl_interval))
    opt_D = torch.optim.Adam(d_params, **lazy_opt_kwargs(hyper.lr_d, cfg.r1_interval))
    phases = [
        Phase("Gmain", G, opt_G, g_params, 1),
        Phase("Greg", G, opt_G, g_params, cfg.pl_interval),
        Phase("Dmain", D, opt_D, d_params, 1),
        Phase("Dreg", D, opt_D, d_params, cfg.r1_interval),
    ]
    loss = StyleGAN2Loss(
        G, D, augment,
        LossWeights(r1_gamma=hyper.gamma, pl_weight=cfg.pl_weight, pl_batch_shrink=cfg.pl_batch_shrink,
                    pl_decay=cfg.pl_decay, style_mixing=cfg.style_mixing, r1_fake=transfer.r1_fake,
                    adversarial=cfg.loss),
        regularizer=regularizer,
    ).to(device)

    if dry_run:
        echo(cfg.to_toml().rstrip())
        echo(f"# derived: {json.dumps(hyper.__dict__)}")
        echo(transfer.describe(G, D))
        echo(f"G trainable {count_params(g_params):,} / {sum(p.numel() for p in G.state_dict().values()):,}; "
             f"D trainable {count_params(d_params):,} / {sum(p.numel() for p in D.state_dict().values()):,}")
        if reg_plan:
            echo(reg_plan)
        return None

    # --- Metric extractors, loaded before the run folder exists: absent weights stop the run here, not at
    # its first evaluation. Loaded once, reused by every evaluation.
    metric_extractors: dict[str, Any] = {}
    if cfg.metrics and is_main:
        from ..metrics import load_metric_extractors

        load_metric_extractors(cfg.metrics, device, into=metric_extractors)

    # --- Run folder and state.
    data_gen = torch.Generator().manual_seed(cfg.seed * 1000 + dist.rank)
    state = Progress()
    if resume_state is not None:
        if is_main:  # one process at a time writes a run: a second resume of it is refused here
            held.enter_context(run_lock(run_dir))
        _restore(resume_state, opt_G, opt_D, augment, loss, data_gen, state)
        transfer.on_kimg(state.cur_nimg / 1000)
        for path in unreadable if is_main else []:  # out of the way of `--resume latest` and of pruning
            path.replace(path.with_name(path.name + ".unreadable"))
            echo(f"set {path.name} aside as {path.name}.unreadable")
    elif is_main:
        name = cfg.name or f"{Path(cfg.data).stem or cfg.data}-{cfg.preset or cfg.aug}"
        run_dir = new_run_dir(cfg.outdir, name)
        held.enter_context(run_lock(run_dir))
        (run_dir / "config.toml").write_text(cfg.to_toml())
        save_grid(images.images[: cfg.sample_grid[0] * cfg.sample_grid[1]].float() / 127.5 - 1,
                  run_dir / "samples" / "reals.png", cfg.sample_grid)
        if disp_bank is not None:
            from ..disp.bank import BANK_FILENAME

            disp_bank.save(run_dir / BANK_FILENAME)
    run_dir = distributed.broadcast_path(run_dir, dist)
    distributed.broadcast_modules([G, D, G_ema], dist)
    latents = fixed_latents(cfg, G.z_dim, device)
    # DISP sample grids: cell i is conditioned on training image i (cycling), so grids compare with reals.png.
    grid_priors = (disp_bank.priors[torch.arange(latents.shape[0]) % disp_bank.num_images].to(device)
                   if disp_bank is not None else None)
    echo(f"run folder: {run_dir}")

    total_nimg = int(cfg.kimg * 1000)
    tick_stats = TickStats()
    tick_start_time = time.time()
    start_elapsed = state.elapsed_sec
    session_start = time.time()
    bar = _progress_bar(total_nimg, state.cur_nimg, progress and is_main)

    with StopRequested() as stop:
        while state.cur_nimg < total_nimg:
            # ---- One batch: every phase whose interval divides the batch index.
            if disp_bank is None:
                real = sample_batch(images, hyper.batch // dist.world_size, data_gen).to(device)
                c_chunks = [None] * math.ceil(real.shape[0] / hyper.batch_gpu)
            else:  # each real comes with its own prior; fakes are conditioned on the same priors (DISP)
                real, real_c = disp_bank.sample_batch(images, hyper.batch // dist.world_size, data_gen)
                real, real_c = real.to(device), real_c.to(device)
                c_chunks = list(real_c.split(hyper.batch_gpu))
            real_chunks = real.split(hyper.batch_gpu)
            all_z = torch.randn([len(phases) * hyper.batch // dist.world_size, G.z_dim], device=device)
            phase_z = all_z.split(hyper.batch // dist.world_size)
            for phase, z in zip(phases, phase_z, strict=True):
                if state.batch_idx % phase.interval != 0:
                    continue
                if (phase.name == "Greg" and cfg.pl_weight == 0) or (phase.name == "Dreg" and hyper.gamma == 0):
                    continue
                phase.opt.zero_grad(set_to_none=True)
                for p in phase.params:
                    p.requires_grad_(True)
                for real_chunk, c_chunk, z_chunk in zip(real_chunks, c_chunks, z.split(hyper.batch_gpu), strict=True):
                    tick_stats.add(loss.accumulate_gradients(phase.name, real_chunk, c_chunk, z_chunk, c_chunk,
                                                             gain=phase.interval))
                for p in phase.params:
                    p.requires_grad_(False)
                distributed.average_gradients(phase.params, dist)
                for p in phase.params:
                    if p.grad is not None:
                        torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)
                phase.opt.step()

            # ---- G_ema: beta = 0.5 ** (batch / ema_nimg), ema_nimg ramped up early in training.
            with torch.no_grad():
                ema_nimg = hyper.ema_kimg * 1000
                if hyper.ema_rampup is not None:
                    ema_nimg = min(ema_nimg, state.cur_nimg * hyper.ema_rampup)
                ema_beta = 0.5 ** (hyper.batch / max(ema_nimg, 1e-8))
                for p_ema, p in zip(G_ema.parameters(), G.parameters(), strict=True):
                    p_ema.copy_(p.lerp(p_ema, ema_beta))
                for b_ema, b in zip(G_ema.buffers(), G.buffers(), strict=True):
                    b_ema.copy_(b)

            state.cur_nimg += hyper.batch
            state.batch_idx += 1
            distributed.sync_augment_stats(augment, dist)
            augment.update(hyper.batch)
            transfer.on_kimg(state.cur_nimg / 1000)
            if bar is not None:
                bar.update(hyper.batch)

            # ---- Tick bookkeeping.
            done = state.cur_nimg >= total_nimg
            tick_due = state.cur_nimg >= state.tick_start_nimg + cfg.tick_kimg * 1000
            stop_now = bool(stop) or distributed.any_flag(bool(stop), dist)
            if not (done or tick_due or stop_now):
                continue

            means = tick_stats.means()
            _check_finite(means, state, run_dir)
            now = time.time()
            tick_nimg = state.cur_nimg - state.tick_start_nimg
            state.elapsed_sec = start_elapsed + (now - session_start)
            record = {
                "tick": state.cur_tick, "kimg": round(state.cur_nimg / 1000, 3),
                "sec_per_tick": round(now - tick_start_time, 3),
                "sec_per_kimg": round((now - tick_start_time) / max(tick_nimg / 1000, 1e-8), 3),
                **{k: round(v, 5) for k, v in means.items()},
                **{f"aug_{k}": round(v, 5) for k, v in augment.stats().items()},
                "lr_g": hyper.lr_g, "lr_d": hyper.lr_d, "pl_mean": round(float(loss.pl_mean), 5),
                "mem_mb": _memory_mb(device), "time": round(state.elapsed_sec, 1),
            }
            if dist.enabled:
                record["ranks_in_sync"] = distributed.params_in_sync([G, D], dist)
                if not record["ranks_in_sync"]:
                    raise FewshotError("data-parallel ranks hold different weights; stopping")
            if is_main:
                with (run_dir / "log.jsonl").open("a") as fh:
                    fh.write(json.dumps(record) + "\n")
                _report(bar, echo, record)
                if bar is not None:
                    bar.set_postfix(G=f"{means.get('loss_G', 0):.3f}", D=f"{means.get('loss_D', 0):.3f}",
                                    p=f"{float(augment.p):.3f}")

            state.cur_tick += 1
            state.tick_start_nimg = state.cur_nimg
            tick_stats = TickStats()
            tick_start_time = now
            snapshot_due = done or stop_now or (cfg.snap > 0 and state.cur_tick % cfg.snap == 0)
            if (max_ticks is not None and state.cur_tick >= max_ticks):
                snapshot_due = True
            if snapshot_due and is_main:
                kimg_tag = f"{state.cur_nimg / 1000:08.3f}".replace(".", "_")
                with _writing(f"the sample grid at {state.cur_nimg / 1000:g} kimg", run_dir):
                    save_grid(render_fakes(G_ema, latents, hyper.batch_gpu, grid_priors),
                              run_dir / "samples" / f"fakes_{kimg_tag}.png", cfg.sample_grid)
                try:
                    metrics = _maybe_metrics(cfg, state, transfer, G_ema, images, device, run_dir, done, echo,
                                             disp_bank, metric_extractors)
                except BaseException:  # a failed evaluation does not cost the training since the last snapshot
                    _write_snapshot(run_dir, cfg, hyper, nets, opt_G, opt_D, augment, loss, data_gen, state,
                                    transfer, disp_bank, data_record)
                    raise
                with _writing(f"the snapshot at {state.cur_nimg / 1000:g} kimg", run_dir):
                    _write_snapshot(run_dir, cfg, hyper, nets, opt_G, opt_D, augment, loss, data_gen, state,
                                    transfer, disp_bank, data_record)
                prune_snapshots(run_dir, cfg.keep)
                if metrics is not None:
                    _maybe_best(cfg, state, metrics, nets, transfer, run_dir, echo, augment, disp_bank)
            distributed.barrier(dist)
            if stop_now:
                if bar is not None:
                    bar.close()
                snap_path = snapshot_path(run_dir, state.cur_nimg) if run_dir else None
                raise TrainingInterrupted(stop.signum or signal.SIGTERM, snap_path)
            if max_ticks is not None and state.cur_tick >= max_ticks:
                break

    if bar is not None:
        bar.close()
    if is_main and state.cur_nimg >= total_nimg:
        with _writing("final.safetensors", run_dir):
            final = _write_export(run_dir / "final.safetensors", cfg, nets, transfer, state, augment,
                                  disp_bank=disp_bank)
        echo(f"done: {state.cur_nimg / 1000:g} kimg; wrote {final}")
    distributed.barrier(dist)
    return run_dir


# ---------------------------------------------------------------------------------------------
# Loop helpers


@contextmanager
def _writing(what: str, run_dir: Path) -> Iterator[None]:
    """A write that fails (a full disk, a folder gone) stops the run with one line that says what failed and
    which snapshot the run can resume from: snapshots are written atomically, so the earlier ones are whole."""
    try:
        yield
    except OSError as exc:
        snaps = list_snapshots(run_dir)
        hint = (f"{snaps[-1].name} is intact: free some space, then `fewshot train --resume {run_dir}`" if snaps
                else "no snapshot was written yet: free some space and start the run again")
        raise FewshotError(f"could not write {what}: {exc.strerror or exc}", hint=hint) from None


def _load_base(ref: str) -> Bundle:
    path = Path(ref)
    if not path.exists():
        try:
            from ..hub import resolve_checkpoint
        except ImportError:
            raise FewshotError(f"no such base checkpoint: {ref}") from None
        path = resolve_checkpoint(ref)
    return load_checkpoint(path)


def _reg_dgm_plan(cfg: TrainConfig) -> str:
    """What a run would regularise with, and where the extractor's weights would come from (nothing loaded)."""
    from ..regularizers.extractors import get_extractor_spec

    spec = get_extractor_spec(cfg.reg_model)  # an unknown name fails the dry run as it would fail the run
    line = f"Reg-DGM: {spec.name}, lambda {cfg.reg_lambda:g}, estimator {cfg.reg_estimator}; weights: "
    if cfg.reg_weights:
        found = Path(cfg.reg_weights).expanduser().is_file()
        return line + f"{cfg.reg_weights}" + ("" if found else " (not found: the run would stop)")
    if spec.weights_name is None:
        return line + "none needed"
    from ..weights import weights_status

    status = weights_status(spec.weights_name, rehash=False)
    if status.path is not None and status.state in ("ok", "unverified"):
        return line + f"{status.path}"
    return line + f"{spec.weights_name} {status.state}, fetched when the run starts (`fewshot weights fetch " \
        f"{spec.weights_name}` now, or --reg-weights FILE)"


def _build_like(bundle: Bundle, name: str) -> nn.Module:
    from ..nets import build_network

    spec = bundle.specs[name]
    return build_network(spec.class_name, spec.init_kwargs)


def _net_state(bundle: Bundle, name: str) -> dict[str, torch.Tensor]:
    """A snapshot keeps the adapted (e.g. AdaFM) state under state.net.<name>.* when it differs."""
    prefix = f"net.{name}."
    raw = {k[len(prefix):]: v for k, v in bundle.state_tensors.items() if k.startswith(prefix)}
    return raw if raw else bundle.networks[name].state_dict()


def _exported(nets: dict[str, nn.Module], transfer: Any) -> dict[str, nn.Module]:
    return {"G": transfer.export_generator(nets["G"]), "G_ema": transfer.export_generator(nets["G_ema"]),
            "D": nets["D"]}


def _setup_disp(cfg: TrainConfig, images: Any, nets: dict[str, nn.Module], resume_state: Bundle | None,
                device: torch.device, dry_run: bool, echo: Callable[[str], None],
                progress: bool) -> tuple[Any, dict[str, nn.Module]]:
    """The prior bank and the DISP networks. A resumed run takes both from its snapshot (no extractor needed);
    a new run encodes the images and converts the (base or scratch) nets; --dry-run only converts."""
    from ..disp.bank import BANK_STATE_KEY, PriorBank, build_prior_bank, prior_extractor_spec
    from ..disp.nets import condition_networks

    if resume_state is not None:
        meta = (resume_state.training or {}).get("disp")
        if not meta or BANK_STATE_KEY not in resume_state.state_tensors:
            raise FewshotError("this snapshot has no DISP prior bank; it cannot resume a DISP run")
        bank = PriorBank.from_state(resume_state.state_tensors[BANK_STATE_KEY], meta)
        if bank.data_hash != content_hash(images):
            raise FewshotError("the training images differ from those the snapshot's DISP priors were built from",
                               hint=f"resume with the original data ({cfg.data})")
        return bank, nets
    if dry_run:
        return None, condition_networks(nets, prior_extractor_spec(cfg.disp_extractor).feature_dim, cfg.seed)
    echo(f"DISP: encoding {len(images)} images{' and their x-flips' if images.mirror else ''} "
         f"with {cfg.disp_extractor}")
    bank = build_prior_bank(images, cfg.disp_extractor, cfg.disp_weights, device=device, progress=progress)
    return bank, condition_networks(nets, bank.dim, cfg.seed)


def _disp_payload(disp_bank: Any, training: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """A DISP bundle carries its prior bank, so sampling needs no extractor."""
    if disp_bank is not None:
        from ..disp.bank import BANK_STATE_KEY

        training["disp"] = disp_bank.meta()
        tensors[BANK_STATE_KEY] = disp_bank.priors


def _write_snapshot(run_dir: Path, cfg: TrainConfig, hyper: Hyper, nets: dict[str, nn.Module], opt_G: Any,
                    opt_D: Any, augment: nn.Module, loss: nn.Module, data_gen: torch.Generator, state: Progress,
                    transfer: Any, disp_bank: Any = None, data_record: dict[str, Any] | None = None) -> Path:
    tensors: dict[str, torch.Tensor] = {}
    training = {
        "config": cfg.to_dict(),
        "progress": state.__dict__.copy(),
        "hyper": hyper.__dict__,
        "kimg": state.cur_nimg / 1000,
        "augment_p": float(augment.p),
        "opt_G": flatten(opt_G.state_dict(), "opt_G", tensors),
        "opt_D": flatten(opt_D.state_dict(), "opt_D", tensors),
        "augment": flatten(augment.state_dict(), "augment", tensors),
        "loss": flatten(loss.state_dict(), "loss", tensors),
        "rng": flatten(capture_rng(data_gen), "rng", tensors),
    }
    if data_record is not None:
        training["data"] = data_record  # what a resume checks its images against
    _disp_payload(disp_bank, training, tensors)
    exported = _exported(nets, transfer)
    for name, net in nets.items():
        if exported[name] is not net:  # adapted nets (AdaFM) keep their raw state for resume
            for key, value in net.state_dict().items():
                tensors[f"net.{name}.{key}"] = value
    path = snapshot_path(run_dir, state.cur_nimg)
    save_bundle(path, exported, provenance={"run": run_dir.name, "base": cfg.base}, training=training,
                state_tensors=tensors)
    return path


def _restore(bundle: Bundle, opt_G: Any, opt_D: Any, augment: nn.Module, loss: nn.Module,
             data_gen: torch.Generator, state: Progress) -> None:
    training = bundle.training
    tensors = bundle.state_tensors
    opt_G.load_state_dict(unflatten(training["opt_G"], tensors))
    opt_D.load_state_dict(unflatten(training["opt_D"], tensors))
    augment.load_state_dict(unflatten(training["augment"], tensors))
    loss.load_state_dict(unflatten(training["loss"], tensors))
    restore_rng(unflatten(training["rng"], tensors), data_gen)
    for key, value in training["progress"].items():
        setattr(state, key, value)


def _write_export(path: Path, cfg: TrainConfig, nets: dict[str, nn.Module], transfer: Any, state: Progress,
                  augment: nn.Module, metrics: dict[str, Any] | None = None, disp_bank: Any = None) -> Path:
    training = {"config": cfg.to_dict(), "kimg": state.cur_nimg / 1000, "augment_p": float(augment.p)}
    if metrics:
        training["metrics"] = metrics
    tensors: dict[str, torch.Tensor] = {}
    _disp_payload(disp_bank, training, tensors)
    return save_bundle(path, _exported(nets, transfer), provenance={"run": path.parent.name, "base": cfg.base},
                       training=training, state_tensors=tensors or None)


def _check_finite(means: dict[str, float], state: Progress, run_dir: Path | None) -> None:
    bad = [k for k, v in means.items() if not math.isfinite(v)]
    if bad:
        snaps = list_snapshots(run_dir) if run_dir else []
        last = f"last good checkpoint: {snaps[-1]}" if snaps else "no checkpoint was written yet"
        raise FewshotError(f"training diverged at {state.cur_nimg / 1000:.1f} kimg ({', '.join(bad)} not finite); "
                           f"{last}", hint="lower the learning rate or gamma, then --resume")


def _maybe_metrics(cfg: TrainConfig, state: Progress, transfer: Any, G_ema: nn.Module, images: Any,
                   device: torch.device, run_dir: Path, done: bool, echo: Callable[[str], None],
                   disp_bank: Any = None, extractors: dict[str, Any] | None = None) -> dict | None:
    if not cfg.metrics:
        return None
    every = cfg.metrics_every
    if not done and (every <= 0 or state.cur_tick % every != 0):
        return None
    from ..metrics import compute_metrics

    generator = transfer.export_generator(G_ema)
    if disp_bank is not None:  # metrics draw z only: the wrapper draws the priors (mixup / GMM)
        from ..disp.sample import PriorSampledGenerator

        generator = PriorSampledGenerator(generator, disp_bank, seed=cfg.seed)
    result = compute_metrics(generator, images.images, metrics=cfg.metrics, n_fake=cfg.metrics_n,
                             device=str(device), progress=False, extractors=extractors)
    record = {"kimg": round(state.cur_nimg / 1000, 3), **result}
    with (run_dir / "metrics.jsonl").open("a") as fh:
        fh.write(json.dumps(record, default=float) + "\n")
    echo("metrics: " + ", ".join(f"{k}={v}" for k, v in result.items() if isinstance(v, (int, float))))
    return result


def _maybe_best(cfg: TrainConfig, state: Progress, metrics: dict, nets: dict[str, nn.Module], transfer: Any,
                run_dir: Path, echo: Callable[[str], None], augment: nn.Module, disp_bank: Any = None) -> None:
    value = metrics.get(cfg.best_metric)
    if isinstance(value, dict):
        value = value.get("mean")
    if value is None:
        return
    if state.best_metric is None or value < state.best_metric:
        state.best_metric = float(value)
        _write_export(run_dir / "best.safetensors", cfg, nets, transfer, state, augment, metrics=metrics,
                      disp_bank=disp_bank)
        echo(f"new best {cfg.best_metric}={value:.3f} -> best.safetensors")


def _memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    try:
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    except (ImportError, OSError):
        return 0.0


def _progress_bar(total: int, initial: int, enabled: bool) -> Any:
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="img", unit_scale=True, dynamic_ncols=True, desc="train",
                disable=None)  # off when stderr is not a terminal (log files): the tick lines say the same


def _report(bar: Any, echo: Callable[[str], None], record: dict[str, Any]) -> None:
    parts = [f"tick {record['tick']}", f"kimg {record['kimg']:.3f}", f"sec/kimg {record['sec_per_kimg']:.1f}"]
    for key in ("loss_G", "loss_D", "loss_reg", "r1_penalty", "pl_penalty", "aug_p"):
        if key in record:
            parts.append(f"{key} {record[key]:.4g}")  # .4g: the Reg-DGM term is often ~1e-5
    line = "  ".join(parts)
    if bar is not None:
        bar.write(line)
    else:
        echo(line)
