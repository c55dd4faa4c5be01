"""``setup(config) -> Run``: everything a training run needs, built in the order that keeps runs reproducible.

resume point (the snapshot's config wins) -> torch settings and the seed -> checks of what will be written ->
base and resolution -> data and its labels -> networks (scratch, base, or the snapshot's) -> DISP -> transfer -> augmentation
-> regularizers -> optimisers and phases -> (dry run: report and stop) -> metric extractors -> the plan -> the
run folder. The global RNG is consumed in this order only, so the same config gives the same run.
"""

from __future__ import annotations

import copy
import json
import os
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..archs import architecture
from ..checkpoint import Bundle, atomic_write_bytes, load_state_strict
from ..config import Hyper, TrainConfig, derive_hyper, resumed_config
from ..data import content_hash, is_builtin_source
from ..errors import FewshotError
from ..host_memory import keep_freed_memory
from ..registry import regularizers as regularizer_registry
from . import distributed
from . import run_dir as layout
from .loss import LossWeights, StyleGAN2Loss
from .networks import (
    architecture_keys,
    base_family,
    base_networks,
    build_like,
    fixed_latents,
    lazy_opt_kwargs,
    load_base,
    load_training_images,
    net_state,
    pick_device,
    save_grid,
    scratch_networks,
)
from .run import Phase, Run
from .stops import RunOutput, StopRequested


@dataclass(frozen=True)
class Request:
    """What the caller of ``train`` asked for besides the config."""

    resume: str | None = None
    dry_run: bool = False
    aug_preview: Path | None = None
    progress: bool = True
    kimg_override: float | None = None
    data_override: str | None = None
    resume_request: dict[str, Any] | None = None
    plan: bool = True


@dataclass
class ResumePoint:
    run_dir: Path
    snapshot: Path
    bundle: Bundle
    unreadable: list[Path]
    data_moved: bool


def setup(cfg: TrainConfig, request: Request, echo: Any, held: ExitStack) -> Run | Path | None:
    """A :class:`Run` ready to train; None after a dry run or an augmentation preview; the run folder of a
    resumed run that has already finished."""
    dist = distributed.init_from_env()
    if dist.enabled:
        held.callback(distributed.shutdown)  # last out: after the run's own cleanup, which may still synchronise
    device = pick_device(cfg.device, dist.local_rank)
    stop, out = _output(echo, dist.rank == 0)
    point = None
    if request.resume:
        cfg, point, finished = _open_resume(cfg, request, out, device)
        if finished is not None:
            return finished
    _torch_settings(cfg, device, dist)
    _check_cpu_bf16(cfg, device)
    cfg = _check_inputs(cfg, request, point, dist.rank == 0)
    base, resolution = _base_and_resolution(cfg, point, out, dist.rank == 0)
    if base is not None:
        cfg = base_family(cfg, base)  # the base decides the network family, and with it the defaults below
    hyper = derive_hyper(cfg, resolution, bool(cfg.base), dist.world_size)
    images = load_training_images(cfg, resolution, request.progress and dist.rank == 0)
    data_record = _labels(cfg, images, base, point, out, dist.rank == 0)
    if point is not None:
        layout.check_resumed_data(point.bundle.training.get("data"), data_record, cfg.data, point.data_moved, out)
    nets, cfg, hyper = _networks(cfg, hyper, base, point, resolution, out, dist.world_size,
                                 c_dim=images.labels.num_classes if images.labels is not None else 0)
    source = _source_networks(cfg, hyper, nets, point, device)
    disp_bank = None
    if cfg.disp:
        disp_bank, nets = _setup_disp(cfg, images, nets, point, device, request, out, dist.rank == 0)
    transfer = _transfer(cfg, nets, point, device)
    _reduced_precision(cfg, nets, device, out)
    from ..augment import make_augment

    augment = make_augment(cfg.augment.method, cfg.augment.options, p=cfg.augment.p, target=cfg.augment.target,
                           ada_kimg=hyper.ada_kimg, interval=cfg.augment.interval).to(device)
    if request.aug_preview is not None:
        return _preview(cfg, augment, images, request.aug_preview, out)
    regs = {} if request.dry_run else build_regularizers(cfg, images, device)
    _bind_regularizers(regs, cfg, nets, transfer, source, device, len(images))
    opt_G, opt_D, phases, loss = _optimisation(cfg, hyper, nets, transfer, augment, regs, device)
    if request.dry_run:
        _dry_run_report(cfg, hyper, transfer, nets, phases, out)
        return None
    run = Run(cfg=cfg, hyper=hyper, dist=dist, device=device, images=images, nets=nets, transfer=transfer,
              augment=augment, regularizers=regs, loss=loss, opt_G=opt_G, opt_D=opt_D, phases=phases,
              disp_bank=disp_bank, data_record=data_record, out=out, stop=stop, resolution=resolution)
    _load_metric_extractors(run)
    _show_plan(run, request, point)
    _open_run_folder(run, point, held)
    return run


# ---------------------------------------------------------------------------------------------
# The steps


def _output(echo: Any, is_main: bool) -> tuple[StopRequested, RunOutput]:
    """Messages survive a closed pipe or terminal (they go to log.jsonl), and losing the output stops the run the
    way a signal does: after the batch, with a snapshot. Only rank 0 talks."""
    stop = StopRequested()
    out = RunOutput(echo if is_main else (lambda _msg: None), on_gone=stop.request)
    stop._acknowledge = out.err
    return stop, out


def _open_resume(cfg: TrainConfig, request: Request, out: RunOutput,
                 device: torch.device) -> tuple[TrainConfig, ResumePoint | None, Path | None]:
    """The snapshot's config, with what the resuming command may change, and where to resume from; or, when the
    run has already finished, its folder (and nothing to resume)."""
    run_dir, snap, bundle, unreadable = layout.open_resume_point(request.resume, cfg.outdir, cfg.name, out)
    stored = dict(bundle.training["config"])
    stored["device"] = cfg.device
    if request.kimg_override is not None:
        stored["kimg"] = request.kimg_override
    stored["data"], moved = layout.resumed_data_source(stored.get("data", ""), request.data_override,
                                                       request.resume, out)
    resumed = resumed_config(stored, request.resume_request)
    done_nimg = int(bundle.training["progress"].get("cur_nimg", 0))
    if done_nimg >= int(resumed.kimg * 1000):
        out(f"{run_dir} already finished at {done_nimg / 1000:g} kimg; nothing to do "
            f"(--kimg N with N above {done_nimg / 1000:g} trains it longer)")
        return resumed, None, run_dir
    layout.check_writable(run_dir, "the run folder")
    out(f"resuming {run_dir} from {snap.name}")
    if device.type == "cuda" and not resumed.deterministic:
        out("note: on a GPU a resumed run follows the straight run up to float rounding (atomic sums in "
            "cuDNN and ADA); runs started with --deterministic resume exactly")
    return resumed, ResumePoint(run_dir, snap, bundle, unreadable, moved), None


def _torch_settings(cfg: TrainConfig, device: torch.device, dist: Any) -> None:
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


def _check_cpu_bf16(cfg: TrainConfig, device: torch.device) -> None:
    """``cpu_bf16`` on a CPU without bfloat16 instructions is refused before anything loads: oneDNN would
    emulate them, about a hundred times slower than float32."""
    from ..nets.precision import native_bf16

    if cfg.cpu_bf16 and device.type == "cpu":
        native, why = native_bf16()
        if not native:
            raise FewshotError(f"cpu_bf16 needs native bfloat16, and {why}",
                               hint="train without --cpu-bf16 (float32, the default; --no-cpu-bf16 when resuming such a run)")


def _reduced_precision(cfg: TrainConfig, nets: dict[str, nn.Module], device: torch.device, out: RunOutput) -> None:
    """The trained G and D run the direct convolutions of their ``num_fp16_res`` blocks in bfloat16 on the CPU
    when ``cpu_bf16`` asks; G_ema stays float32, so snapshots, grids and metrics come from the network users
    sample."""
    from ..nets.precision import set_cpu_half

    if not cfg.cpu_bf16:
        return
    if device.type != "cpu":
        out(f"note: cpu_bf16 applies to CPU runs; on {device.type} the num_fp16_res blocks run float16")
        return
    counts = {name: set_cpu_half(nets[name], torch.bfloat16) for name in ("G", "D")}
    if not any(counts.values()):
        out("note: cpu_bf16 changes nothing here: no block of G or D is in num_fp16_res "
            f"(num_fp16_res {cfg.num_fp16_res}; StyleGAN3 generators stay float32)")
        return
    out(f"CPU bfloat16: the direct convolutions of {counts['G']} blocks of G and {counts['D']} of D "
        f"(num_fp16_res {cfg.num_fp16_res})")


def _check_inputs(cfg: TrainConfig, request: Request, point: ResumePoint | None, is_main: bool) -> TrainConfig:
    """The data exists (stored absolute, so `--resume` finds it from anywhere); where the run will write can be
    written, before anything is fetched or decoded; freezing transfers have a base."""
    if point is None and not is_builtin_source(cfg.data):
        if not Path(cfg.data).expanduser().exists():
            raise FewshotError(f"data source {cfg.data} does not exist")
        cfg = replace(cfg, data=str(Path(cfg.data).expanduser().resolve()))
    if point is None and not request.dry_run and request.aug_preview is None and is_main:
        layout.check_writable(Path(cfg.outdir), "--outdir")
    if request.aug_preview is not None:
        layout.check_writable(Path(request.aug_preview).parent, "--aug-preview's folder")
    if point is None and not cfg.base and cfg.transfer.method != "finetune":
        raise FewshotError(f"transfer {cfg.transfer.method!r} keeps layers of a pretrained network frozen: it "
                           "needs a base", hint="e.g. --base ffhq256 (`fewshot download --list`), or --transfer "
                                                "finetune to train from scratch")
    needing = source_regularizers(cfg) if point is None and not cfg.base else []
    if needing:
        raise FewshotError(f"regularizer {', '.join(needing)} compares G against the network it adapts: it needs a "
                           "base", hint="--base REF (e.g. ffhq256, `fewshot download --list`), or a run folder")
    return cfg


def _base_and_resolution(cfg: TrainConfig, point: ResumePoint | None, out: RunOutput,
                         is_main: bool) -> tuple[Bundle | None, int]:
    """The base checkpoint (the architecture follows it) and the resolution: the snapshot's, the base's, the
    config's, or the data's (as the official dataset tool would make it)."""
    if point is not None:
        return None, point.bundle.specs["G"].init_kwargs["img_resolution"]
    if is_main:
        out(base_line(cfg))
    if cfg.base and cfg.arch is not None and cfg.base_note not in ("", "--base"):
        # --arch names a family to build from scratch; a preset's default base would decide the family itself,
        # so say so before fetching it rather than after (offline: instead of a download error).
        raise FewshotError(f"arch {cfg.arch} picks the network family from scratch, but this run fine-tunes the "
                           f"preset's default base {cfg.base}, whose generator decides the family",
                           hint=f"add --base none to train a {cfg.arch} from scratch, or drop --arch to fine-tune "
                                "the base")
    base = load_base(cfg.base) if cfg.base else None
    g_ref = (base.networks.get("G") or base.networks.get("G_ema")) if base else None
    if g_ref is not None:
        if cfg.resolution is not None and cfg.resolution != g_ref.img_resolution and is_main:
            out(f"note: resolution {cfg.resolution} ignored: the base makes {g_ref.img_resolution} px images, and "
                f"the training images are resized to that")
        return base, g_ref.img_resolution
    if cfg.resolution is not None:
        return base, cfg.resolution
    if is_builtin_source(cfg.data):
        raise FewshotError("training from scratch on the demo images needs --resolution (or give --base)")
    from ..data import infer_resolution

    resolution, reason = infer_resolution(cfg.data, crop=cfg.crop)
    if is_main:
        out(f"{reason}; --resolution N to choose another")
    return base, resolution


def _labels(cfg: TrainConfig, images: Any, base: Bundle | None, point: ResumePoint | None, out: RunOutput,
            is_main: bool) -> dict[str, Any]:
    """The data's labels (said with the data), then those the run trains with, set on ``images.labels``; returns
    the data record a resume checks (with the labels' digest when the run is class-conditional)."""
    from .labels import base_c_dim, conditioning, data_labels, labels_digest

    images.labels = data_labels(cfg, images)
    if is_main:
        out(images.describe())
    if point is not None:
        spec: dict[str, Any] | None = point.bundle.specs["G"].init_kwargs
    else:
        g_ref = (base.networks.get("G") or base.networks.get("G_ema")) if base else None
        spec = g_ref.init_kwargs if g_ref is not None else None
    images.labels = conditioning(cfg, images.labels, len(images), base_c_dim(spec), out if is_main else print_nothing)
    record: dict[str, Any] = {"images": len(images), "sha256": content_hash(images.images)}
    if images.labels is not None:
        record["labels_sha256"] = labels_digest(images.labels)
        recorded = (point.bundle.training.get("data") or {}) if point is not None else {}
        if point is not None and recorded.get("labels_sha256") != record["labels_sha256"] and is_main:
            out("note: the images' labels differ from those this run started with; training goes on with them, "
                "so it does not continue exactly")
    return record


def print_nothing(_message: str) -> None:
    return None


def base_line(cfg: TrainConfig) -> str:
    """Which base the run starts from, and why (shown before anything is fetched)."""
    if cfg.base and cfg.base_note in ("", "--base"):
        return f"base: {cfg.base}"
    if cfg.base:
        return f"base: {cfg.base} ({cfg.base_note}; --base REF to choose another, --base none to train from scratch)"
    why = f"{cfg.base_note}; " if cfg.base_note else ""
    return f"base: none, training from scratch ({why}--base REF fine-tunes a pretrained network instead)"


def _networks(cfg: TrainConfig, hyper: Hyper, base: Bundle | None, point: ResumePoint | None, resolution: int,
              out: RunOutput, world_size: int, c_dim: int = 0) -> tuple[dict[str, nn.Module], TrainConfig, Hyper]:
    """G, D, G_ema: as the snapshot stores them, shaped like the base (its weights copied), or from scratch
    (class-conditional on ``c_dim`` classes when the data is labelled)."""
    if point is not None:
        return {n: build_like(point.bundle, n) for n in ("G", "D", "G_ema")}, cfg, hyper
    if base is None:
        return scratch_networks(cfg, hyper, resolution, c_dim=c_dim), cfg, hyper
    nets, skipped = base_networks(cfg, base, hyper)
    if skipped and not cfg.allow_partial:
        listing = "; ".join(skipped[:8]) + (f"; ... ({len(skipped)} in all)" if len(skipped) > 8 else "")
        raise FewshotError(f"the base does not fit the requested networks: {listing}",
                           hint="pass --allow-partial to train anyway")
    for line in skipped:
        out(f"note: not loaded from base: {line}")
    # The config says what is built: the base's architecture, not the preset's scratch defaults.
    cfg = replace(cfg, **architecture_keys(nets["G"]))
    return nets, cfg, derive_hyper(cfg, resolution, True, world_size)


def _setup_disp(cfg: TrainConfig, images: Any, nets: dict[str, nn.Module], point: ResumePoint | None,
                device: torch.device, request: Request, out: RunOutput,
                is_main: bool) -> tuple[Any, dict[str, nn.Module]]:
    """The prior bank and the DISP networks. A resumed run takes both from its snapshot (no extractor needed);
    a new run encodes the images and converts the (base or scratch) nets; --dry-run only converts."""
    from ..disp.bank import BANK_STATE_KEY, PriorBank, build_prior_bank, prior_extractor_spec
    from ..disp.nets import condition_networks

    if point is not None:
        meta = (point.bundle.training or {}).get("disp")
        if not meta or BANK_STATE_KEY not in point.bundle.state_tensors:
            raise FewshotError("this snapshot has no DISP prior bank; it cannot resume a DISP run")
        bank = PriorBank.from_state(point.bundle.state_tensors[BANK_STATE_KEY], meta)
        if bank.data_hash != content_hash(images):
            raise FewshotError("the training images differ from those the snapshot's DISP priors were built from",
                               hint=f"resume with the original data ({cfg.data})")
        return bank, nets
    if request.dry_run:
        return None, condition_networks(nets, prior_extractor_spec(cfg.disp.extractor).dim("disp"), cfg.seed)
    out(f"DISP: encoding {len(images)} images{' and their x-flips' if images.mirror else ''} "
        f"with {cfg.disp.extractor}")
    bank = build_prior_bank(images, cfg.disp.extractor, cfg.disp.weights, device=device,
                            progress=request.progress and is_main)
    return bank, condition_networks(nets, bank.dim, cfg.seed)


def _transfer(cfg: TrainConfig, nets: dict[str, nn.Module], point: ResumePoint | None, device: torch.device) -> Any:
    """What is frozen, modulated (AdaFM) or re-initialised; then the snapshot's weights, or G_ema = G."""
    from ..registry import transfers

    transfer = transfers.build(cfg.transfer.method, cfg.transfer.options, r1_fake=cfg.transfer.r1_fake,
                               seed=cfg.seed)
    transfer.apply(nets["G"], nets["D"])
    transfer.apply_ema(nets["G_ema"])
    if point is not None:
        for name, net in nets.items():
            load_state_strict(net, net_state(point.bundle, name), f"snapshot:{name}")
    else:
        nets["G_ema"].load_state_dict(nets["G"].state_dict())  # same start, e.g. after re-initialising
    for net in nets.values():
        net.requires_grad_(False).to(device)
    nets["G_ema"].eval()
    return transfer


def _preview(cfg: TrainConfig, augment: nn.Module, images: Any, path: Path, out: RunOutput) -> None:
    from ..augment import preview_grid

    if cfg.augment.p == 0 and getattr(augment, "adaptive", False):
        augment.p.fill_(0.5)
    preview_grid(augment, images.images, path)
    out(f"wrote {path} (augmentation {cfg.augment.method}, p={float(augment.p):.2f})")
    return None


def build_regularizers(cfg: TrainConfig, images: Any, device: torch.device) -> dict[str, nn.Module]:
    """Every regularizer the config has a section for (one at weight 0 builds nothing and adds an exact zero)."""
    return {name: regularizer_registry.build(name, options, real_images=images.images, device=device,
                                             mirror=cfg.mirror)
            for name, options in cfg.regularizers.items()}


def _source_networks(cfg: TrainConfig, hyper: Hyper, nets: dict[str, nn.Module], point: ResumePoint | None,
                     device: torch.device) -> Any:
    """``source()``: the frozen G and D the run adapts from, for regularizers that compare against them (CDC,
    EWC; registered with ``source=True``), built on first call. A new run copies its networks before the
    transfer method touches them; a resumed run loads the config's base again (a snapshot does not carry it)."""
    if not source_regularizers(cfg):
        return _no_source
    pristine = None if point is not None else {name: copy.deepcopy(nets[name]) for name in ("G", "D")}
    held: dict[str, nn.Module] = {}

    def source() -> dict[str, nn.Module]:
        if not held:
            built = pristine if pristine is not None else base_networks(cfg, load_base(cfg.base), hyper)[0]
            for name in ("G", "D"):
                held[name] = built[name].requires_grad_(False).to(device)
        return held

    return source


def source_regularizers(cfg: TrainConfig) -> list[str]:
    """The config's regularizers (at a weight other than 0) that compare against the source networks."""
    return [name for name, options in cfg.regularizers.items()
            if regularizer_registry.get(name).extra.get("source") and getattr(options, "weight", 1) != 0]


def _no_source() -> dict[str, nn.Module]:
    raise FewshotError("no source networks were kept for this run's regularizers")


def _bind_regularizers(regs: dict[str, nn.Module], cfg: TrainConfig, nets: dict[str, nn.Module], transfer: Any,
                       source: Any, device: torch.device, num_images: int) -> None:
    """Give each regularizer that hooks into training (``hooks_training``) the run's and the source networks."""
    from ..regularizers._base import TrainingContext

    hooked = [reg for reg in regs.values() if getattr(reg, "hooks_training", False)]
    if hooked:
        context = TrainingContext(G=nets["G"], D=nets["D"], g_parameters=transfer.trainable_parameters(nets["G"]),
                                  source=source, device=device, seed=cfg.seed, num_images=num_images,
                                  adversarial=cfg.loss)
        for reg in hooked:
            reg.bind(context)


def _optimisation(cfg: TrainConfig, hyper: Hyper, nets: dict[str, nn.Module], transfer: Any, augment: nn.Module,
                  regs: dict[str, nn.Module], device: torch.device) -> tuple[Any, Any, list[Phase], StyleGAN2Loss]:
    """One Adam per network (lr and betas scaled for lazy regularisation), the four phases, the loss."""
    G, D = nets["G"], nets["D"]
    g_params, d_params = transfer.trainable_parameters(G), transfer.trainable_parameters(D)
    for reg in regs.values():  # a regularizer's own D-side tensors (CDC's patch head) train with D
        d_params = d_params + list(getattr(reg, "discriminator_parameters", list)())
    opt_G = torch.optim.Adam(g_params, **lazy_opt_kwargs(hyper.lr_g, hyper.g_reg_interval))
    opt_D = torch.optim.Adam(d_params, **lazy_opt_kwargs(hyper.lr_d, cfg.r1_interval))
    # A family without G's lazy phase (StyleGAN3) has three phases, as the official code: each draws its z.
    g_reg = [Phase("Greg", G, opt_G, g_params, hyper.g_reg_interval, active=hyper.pl_weight != 0)] \
        if hyper.g_reg_interval else []
    phases = [
        Phase("Gmain", G, opt_G, g_params, 1),
        *g_reg,
        Phase("Dmain", D, opt_D, d_params, 1),
        Phase("Dreg", D, opt_D, d_params, cfg.r1_interval, active=hyper.gamma != 0),
    ]
    weights = LossWeights(r1_gamma=hyper.gamma, pl_weight=hyper.pl_weight, pl_batch_shrink=cfg.pl_batch_shrink,
                          pl_decay=cfg.pl_decay, style_mixing=hyper.style_mixing, r1_fake=transfer.r1_fake,
                          adversarial=cfg.loss, blur_init_sigma=hyper.blur_init_sigma,
                          blur_fade_kimg=hyper.blur_fade_kimg)
    loss = StyleGAN2Loss(G, D, augment, weights, regularizer=list(regs.values()) or None,
                         arch=architecture(cfg.arch)).to(device)
    return opt_G, opt_D, phases, loss


def _dry_run_report(cfg: TrainConfig, hyper: Hyper, transfer: Any, nets: dict[str, nn.Module], phases: list[Phase],
                    out: RunOutput) -> None:
    """The resolved config, the derived values, what trains; and for each regularizer what it would load."""
    G, D = nets["G"], nets["D"]
    out(cfg.to_toml().rstrip())
    out(f"# derived: {json.dumps(hyper.__dict__)}")
    out(transfer.describe(G, D))
    out(f"G trainable {sum(p.numel() for p in phase_params(phases, 'Gmain')):,} / "
        f"{sum(p.numel() for p in G.state_dict().values()):,}; "
        f"D trainable {sum(p.numel() for p in phase_params(phases, 'Dmain')):,} / "
        f"{sum(p.numel() for p in D.state_dict().values()):,}")
    for name, options in cfg.regularizers.items():
        plan = regularizer_registry.get(name).extra.get("plan")
        if plan is not None:  # a dry run loads no weights: it says where they would come from
            line = plan(options)
            if line:
                out(line)


def phase_params(phases: list[Phase], name: str) -> list[nn.Parameter]:
    """The tensors phase ``name`` trains."""
    return next(phase.params for phase in phases if phase.name == name)


def _load_metric_extractors(run: Run) -> None:
    """Loaded before the run folder exists: absent weights stop the run here, not at its first evaluation.
    Loaded once, reused by every evaluation. Building a network draws its initial weights from the global
    random stream, and a process that has loaded it before (a test, a notebook) builds nothing: the stream is
    forked, so the run's draws do not depend on it."""
    if run.cfg.metrics.names and run.is_main:
        from ..metrics import load_metric_extractors

        with torch.random.fork_rng(devices=[run.device] if run.device.type == "cuda" else []):
            load_metric_extractors(run.cfg.metrics.names, run.device, into=run.metric_extractors)


def _show_plan(run: Run, request: Request, point: ResumePoint | None) -> None:
    """How long (a timed warm-up step, undone), how much disk and memory."""
    from .plan import estimate_step, plan_lines, snapshot_bytes, tensor_bytes

    estimate = None
    if request.plan:
        # The untimed warm pass runs on one minibatch-stddev group only: it pays the one-time costs (kernel
        # builds, kept weight transforms) at a fraction of a batch.
        warm = min(run.hyper.batch_gpu, max(run.hyper.mbstd_group, 1))
        estimate = estimate_step(run.phases, run.step,
                                 lambda: run.draw(torch.Generator().manual_seed(run.cfg.seed))[:3],
                                 [run.G, run.D, run.augment, run.loss], run.hyper.batch, warm, run.device)
    if not run.is_main:
        return
    done_nimg = int(point.bundle.training["progress"].get("cur_nimg", 0)) if point is not None else 0
    trainable = phase_params(run.phases, "Gmain") + phase_params(run.phases, "Dmain")
    lines = plan_lines(images=len(run.images), resolution=run.resolution,
                       kimg_left=max(run.cfg.kimg - done_nimg / 1000, 0), batch=run.hyper.batch, estimate=estimate,
                       snapshot_size=snapshot_bytes(run.nets, trainable),
                       export_size=sum(tensor_bytes(net.state_dict().values()) for net in run.nets.values()),
                       keep=run.cfg.keep, device=run.device)
    for line in lines:
        run.out(line)


def _open_run_folder(run: Run, point: ResumePoint | None, held: ExitStack) -> None:
    """The run folder (new, or the resumed one, locked against a second writer), the state, the fixed latents."""
    cfg = run.cfg
    run.data_gen = torch.Generator().manual_seed(cfg.seed * 1000 + run.dist.rank)
    if point is not None:
        run.run_dir = point.run_dir
        if run.is_main:  # one process at a time writes a run: a second resume of it is refused here
            held.enter_context(layout.run_lock(point.run_dir))
        run.restore(point.bundle)
        run.transfer.on_kimg(run.progress.cur_nimg / 1000)
        if run.is_main:  # a raised --kimg is the run's target from now on: config.toml and `info` say so
            atomic_write_bytes(layout.config_path(point.run_dir), cfg.to_toml().encode())
        for path in point.unreadable if run.is_main else []:  # out of the way of `--resume latest` and pruning
            path.replace(path.with_name(path.name + ".unreadable"))
            run.out(f"set {path.name} aside as {path.name}.unreadable")
    elif run.is_main:
        name = cfg.name or f"{Path(cfg.data).stem or cfg.data}-{cfg.preset or cfg.augment.method}"
        run.run_dir = layout.new_run_dir(cfg.outdir, name)
        held.enter_context(layout.run_lock(run.run_dir))
        atomic_write_bytes(layout.config_path(run.run_dir), cfg.to_toml().encode())
        save_grid(_grid_reals(run).float() / 127.5 - 1, layout.reals_path(run.run_dir), cfg.sample_grid)
        if run.disp_bank is not None:
            run.disp_bank.save(layout.prior_bank_path(run.run_dir))
    run.run_dir = distributed.broadcast_path(run.run_dir, run.dist)
    distributed.broadcast_modules([run.G, run.D, run.G_ema], run.dist)
    run.latents = fixed_latents(cfg, run.G.z_dim, run.device)
    if run.disp_bank is not None:  # DISP grids: cell i is conditioned on training image i, as reals.png shows
        index = torch.arange(run.latents.shape[0]) % run.disp_bank.num_images
        run.grid_priors = run.disp_bank.priors[index].to(run.device)
    if run.images.labels is not None:  # class-conditional grids: one class per row, as reals.png shows
        from ..labels import one_hot
        from .labels import grid_cells

        classes, _ = grid_cells(run.images.labels, *cfg.sample_grid)
        run.grid_priors = one_hot(classes, run.images.labels.num_classes).to(run.device)
    run.out(f"run folder: {run.run_dir}")
    if run.is_main:
        run.out.attach(layout.log_path(run.run_dir))


def _grid_reals(run: Run) -> torch.Tensor:
    """The training images of reals.png: the first ones, or for a class-conditional run each row's class's."""
    cols, rows = run.cfg.sample_grid
    if run.images.labels is None:
        return run.images.images[: cols * rows]
    from .labels import grid_cells

    return run.images.images[grid_cells(run.images.labels, cols, rows)[1]]
