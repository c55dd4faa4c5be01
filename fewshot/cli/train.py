"""``fewshot train`` and ``fewshot presets``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from .app import PANEL_PRESET_OPTIONS, PANEL_TRAIN, app

TRAIN_EPILOG = """[bold]Examples[/bold]

  fewshot train ./obama_100 --preset reg-ada      (fine-tunes the preset's default base, ffhq256 for 256 px images)

  fewshot train ./obama_100 --preset reg-ada --resume latest     (the same command continues the run)

  fewshot train ./flowers --preset ada --base G.safetensors --kimg 500 --batch 16

  fewshot train ./sketches --preset adafm --dry-run     (what would train, and from which base)

  fewshot train --preset demo                 (fine-tune the shipped tiny base to built-in images, ~2 CPU min)

  fewshot train ./cats --preset scratch --resolution 64     (from scratch; or --base none with any preset)

  fewshot train ./data --preset ada --set ada_target=0.7 --set snap=10

  fewshot train ./pets --base cifar10 --labels folders     (class-conditional: one sub-folder per class)

  fewshot train ./cats --base cifar10 --class 3     (every image as class 3 of a conditional base)

  torchrun --nproc_per_node 2 -m fewshot train ./data --preset ada   (or: --gpus 2)
"""

_OPT = PANEL_PRESET_OPTIONS
DEFAULT_PRESET = "ada"


@app.command(rich_help_panel=PANEL_TRAIN, epilog=TRAIN_EPILOG)
def train(
    data: Optional[str] = typer.Argument(None, help="Image folder or .zip (or a built-in set: 'demo', 'demo:rings'). With --resume only to say where the run's data has moved."),
    preset: Optional[str] = typer.Option(None, "--preset", "-p", help="Recipe from presets/ (see `fewshot presets`); default: ada."),
    base: Optional[str] = typer.Option(None, "--base", help="Checkpoint to fine-tune from (name, hf://, URL, path); 'none' trains from scratch. Default: the preset's base for the images' size."),
    resume: Optional[str] = typer.Option(None, "--resume", help="'latest', a run folder, or a snapshot file."),
    kimg: Optional[float] = typer.Option(None, "--kimg", help="Train until this many thousand images.", rich_help_panel=_OPT),
    batch: Optional[int] = typer.Option(None, "--batch", help="Total batch size.", rich_help_panel=_OPT),
    batch_gpu: Optional[int] = typer.Option(None, "--batch-gpu", help="Chunk per device step (gradient accumulation).", rich_help_panel=_OPT),
    gamma: Optional[float] = typer.Option(None, "--gamma", help="R1 weight.", rich_help_panel=_OPT),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate of G and D.", rich_help_panel=_OPT),
    aug: Optional[str] = typer.Option(None, "--aug", help="Augmentation: {methods:augment}.", rich_help_panel=_OPT),
    aug_p: Optional[float] = typer.Option(None, "--aug-p", help="Initial augmentation probability.", rich_help_panel=_OPT),
    transfer: Optional[str] = typer.Option(None, "--transfer", help="Transfer method: {methods:transfer}.", rich_help_panel=_OPT),
    freeze_d: Optional[int] = typer.Option(
        None, "--freeze-d",
        help="Freeze the N D blocks nearest the input (official --freezed counts layers: 4 for the first block, 3 per later block).",
        rich_help_panel=_OPT),
    general: Optional[str] = typer.Option(None, "--general", help="G,D blocks of the general part (GmDn), e.g. 2,2 (on a StyleGAN3, G counts synthesis layers).", rich_help_panel=_OPT),
    specific: Optional[str] = typer.Option(None, "--specific", help="{option:transfer:general-part:specific}", rich_help_panel=_OPT),
    r1_fake: Optional[bool] = typer.Option(None, "--r1-fake/--no-r1-fake", help="Gradient penalty on fakes too.", rich_help_panel=_OPT),
    reg_lambda: Optional[float] = typer.Option(None, "--reg-lambda", help="Reg-DGM weight (0 = off).", rich_help_panel=_OPT),
    reg_model: Optional[str] = typer.Option(None, "--reg-model", help="Reg-DGM extractor: {option:regularizer:reg-dgm:model}", rich_help_panel=_OPT),
    reg_estimator: Optional[str] = typer.Option(None, "--reg-estimator", help="{option:regularizer:reg-dgm:estimator}", rich_help_panel=_OPT),
    reg_weights: Optional[str] = typer.Option(None, "--reg-weights", help="Weights file for the Reg-DGM extractor, in its upstream format (default: the weights registry).", rich_help_panel=_OPT),
    arch: Optional[str] = typer.Option(None, "--arch", help="Network family from scratch: {methods:arch} (a base decides it).", rich_help_panel=_OPT),
    resolution: Optional[int] = typer.Option(None, "--resolution", help="Image size when training from scratch (default: from the data, the power of two at or below the median short side).", rich_help_panel=_OPT),
    mirror: Optional[bool] = typer.Option(None, "--mirror/--no-mirror", help="Random x-flips of the data.", rich_help_panel=_OPT),
    crop: Optional[str] = typer.Option(None, "--crop", help="center | pad", rich_help_panel=_OPT),
    labels: Optional[str] = typer.Option(None, "--labels", help="Class labels: auto (the data's dataset.json, if any), folders (one sub-folder per class, sorted names = class indices), none.", rich_help_panel=_OPT),
    class_index: Optional[int] = typer.Option(None, "--class", help="Train every image as class N of a class-conditional base.", rich_help_panel=_OPT),
    metrics: Optional[str] = typer.Option(None, "--metrics", help="Metrics tracked during training, comma-separated: {methods:metric}; none for no metric.", rich_help_panel=_OPT),
    metrics_every: Optional[int] = typer.Option(None, "--metrics-every", help="Ticks between metric evaluations.", rich_help_panel=_OPT),
    snap: Optional[int] = typer.Option(None, "--snap", help="Ticks between snapshots.", rich_help_panel=_OPT),
    tick_kimg: Optional[float] = typer.Option(None, "--tick-kimg", help="kimg per tick (log line).", rich_help_panel=_OPT),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed.", rich_help_panel=_OPT),
    outdir: Optional[str] = typer.Option(None, "--outdir", help="Where run folders go (default runs/).", rich_help_panel=_OPT),
    name: Optional[str] = typer.Option(None, "--name", help="Run name (folder suffix).", rich_help_panel=_OPT),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda", rich_help_panel=_OPT),
    allow_partial: Optional[bool] = typer.Option(None, "--allow-partial", help="Train even if base tensors do not fit.", rich_help_panel=_OPT),
    deterministic: Optional[bool] = typer.Option(None, "--deterministic", help="Deterministic GPU kernels (no cuDNN autotuning): a resumed run then equals a straight one bit for bit, as CPU runs always do.", rich_help_panel=_OPT),
    cpu_bf16: Optional[bool] = typer.Option(None, "--cpu-bf16/--no-cpu-bf16", help="CPU: the direct convolutions of the num_fp16_res blocks in bfloat16 (needs AVX512-BF16 or AMX); faster, coarser rounding. May change on --resume.", rich_help_panel=_OPT),
    set_values: list[str] = typer.Option([], "--set", help="Any config key: --set key=value (repeatable).", rich_help_panel=_OPT),
    gpus: int = typer.Option(1, "--gpus", help="Processes to launch (torchrun) for data parallelism."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and what trains, then exit."),
    aug_preview: Optional[Path] = typer.Option(None, "--aug-preview", help="Write a grid of augmented reals to this PNG and exit."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Fine-tune (or train) a StyleGAN2 on a small image set; writes a resumable run folder."""
    from ..config import resolve_config
    from ..errors import FewshotError

    overrides = dict(
        data=data, base=base, kimg=kimg, batch=batch, batch_gpu=batch_gpu, gamma=gamma, lr=lr, aug=aug,
        aug_p=aug_p, transfer=transfer, freeze_d=freeze_d, general=general, specific=specific, r1_fake=r1_fake,
        reg_lambda=reg_lambda, reg_model=reg_model, reg_estimator=reg_estimator, reg_weights=reg_weights,
        resolution=resolution, arch=arch,
        mirror=mirror, crop=crop, labels=labels, class_index=class_index, metrics=metrics, metrics_every=metrics_every, snap=snap, tick_kimg=tick_kimg,
        seed=seed, outdir=outdir, name=name, device=device, allow_partial=allow_partial, deterministic=deterministic,
        cpu_bf16=cpu_bf16,
    )
    for item in set_values:
        if "=" not in item:
            raise FewshotError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip()
        overrides[key if "." in key else key.replace("-", "_")] = value.strip()  # section.method-name stays
    if gpus > 1:
        _launch(gpus)
        return
    if resume is None and not data and not (preset and preset == "demo"):
        raise FewshotError("give a data folder or zip (or --resume)", hint="fewshot train ./images --preset ada")
    if resume is not None:
        # The snapshot carries the config. The same command again is fine; a value that differs from the run's
        # is refused by name (kimg and device may change).
        request = {key: value for key, value in overrides.items() if value is not None and key != "data"}
        if preset:
            request["preset"] = preset
        cfg = resolve_config(None, {"outdir": outdir or "runs", "name": name, "device": device or "auto"})
    else:
        request = None
        if preset is None:
            preset = DEFAULT_PRESET
            typer.echo(f"preset: {preset} (the default; --preset NAME to choose another, `fewshot presets` lists them)")
        cfg = resolve_config(preset, overrides)

    from ..train.loop import TrainingInterrupted
    from ..train.loop import train as run_training

    try:
        run_training(cfg, resume=resume, dry_run=dry_run, aug_preview=aug_preview, progress=not quiet,
                     echo=typer.echo, kimg_override=kimg if resume is not None else None,
                     data_override=data if resume is not None else None, resume_request=request)
    except TrainingInterrupted as exc:  # the run has said where its snapshot is (on the terminal, or in its log)
        raise typer.Exit(exc.exit_code) from None


def _launch(gpus: int) -> None:
    """Re-run this command under torchrun with one process per device."""
    import subprocess

    args = [a for a in sys.argv[1:]]
    cleaned: list[str] = []
    skip = False
    for a in args:
        if skip:
            skip = False
            continue
        if a == "--gpus":
            skip = True
            continue
        if a.startswith("--gpus="):
            continue
        cleaned.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
           "-m", "fewshot", *cleaned, "--set", f"gpus={gpus}"]
    raise typer.Exit(subprocess.call(cmd))


@app.command(rich_help_panel=PANEL_TRAIN,
             epilog="[bold]Examples[/bold]\n\n  fewshot presets\n\n  fewshot presets --methods")
def presets(
    methods: bool = typer.Option(False, "--methods", help="Also list every registered method and its options."),
) -> None:
    """List the training presets with one-line descriptions (and, with --methods, the methods they combine)."""
    from ..config import list_presets, preset_description

    names = list_presets()
    width = max((len(n) for n in names), default=0)
    for name in names:
        typer.echo(f"{name.ljust(width)}  {preset_description(name)}")
    if methods:
        for line in method_listing():
            typer.echo(line)


def method_listing() -> list[str]:
    """Each family of methods (the registry), each method with its help, each option with default and help: what
    a preset section or `--set section.option=value` can name."""
    from dataclasses import MISSING, fields

    from ..registry import FAMILIES, option_info

    lines: list[str] = []
    for family in FAMILIES.values():
        entries = family.entries()
        if not entries:
            continue
        lines += ["", f"{family.plural} ({family.family}):"]
        for entry in entries:
            lines.append(f"  {entry.name}  {entry.help}".rstrip())
            for f in fields(entry.options):
                default = f.default if f.default is not MISSING else (
                    f.default_factory() if f.default_factory is not MISSING else "")
                lines.append(f"      {f.name} = {default!r}  {option_info(f).help}".rstrip())
    return lines
