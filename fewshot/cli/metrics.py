"""``fewshot metrics``: the registered metrics (FID, KID, precision-recall, IS, SWD, intra-LPIPS, copies, ...) of a
checkpoint, or of a folder of generated images, against real images."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .app import PANEL_TRAIN, app


@app.command(
    name="metrics",
    rich_help_panel=PANEL_TRAIN,
    epilog="[bold]Examples[/bold]\n\n"
    "  fewshot metrics runs/00000-obama/best.safetensors --data ./obama_100\n\n"
    "  fewshot metrics G.safetensors --data ./obama_100 --metrics fid,kid,pr,is --n 5000 --json metrics.json\n\n"
    "  fewshot metrics ffhq256 --data ./faces_1k --ref ./ffhq_full.zip --psi 0.7\n\n"
    "  fewshot metrics runs/00003-sketches --data ./sketches_10 --metrics intra-lpips,copies,swd --n 1000\n\n"
    "  fewshot metrics --fake ./other_tool_samples --data ./sketches_10 --metrics swd,copies --out ./report",
)
def metrics_command(
    ckpt: str | None = typer.Argument(None, help="A fewshot bundle, an official .pkl, or a run folder "
                                                 "(or --fake instead)."),
    data: Path = typer.Option(..., "--data", help="The training images (folder or zip)."),
    fake: Path | None = typer.Option(None, "--fake", help="Measure these generated images (folder or zip, "
                                                          "from any tool) instead of a checkpoint's."),
    ref: Path | None = typer.Option(None, "--ref", help="Compare against this set instead of --data (folder or zip)."),
    metrics: str = typer.Option("fid,kid", "--metrics",
                                help="Comma-separated: {methods:metric}."),
    n: int | None = typer.Option(None, "--n", help="Number of generated images (few-shot protocol: 5000; "
                                                   "intra-LPIPS: 1000). Default 5000."),
    psi: float = typer.Option(1.0, "--psi", help="Truncation psi for the generated images."),
    resolution: int | None = typer.Option(None, "--resolution", help="With --fake: the size both sets are measured "
                                          "at (default: the power of two at or below the median short side, of "
                                          "the smaller set)."),
    batch: int = typer.Option(64, "--batch", help="Images per generator / extractor batch."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the result (with its protocol) here."),
    out: Path | None = typer.Option(None, "--out", help="Folder for the pictures metrics make (the copies sheet); "
                                                        "default: the run folder when CKPT is one, else here."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
    seed: int = typer.Option(0, "--seed", help="Seed of the generated latents and noise, and of the metrics' "
                                               "own draws (KID subsets, SWD patches)."),
    kid_subset: int | None = typer.Option(
        None, "--kid-subset", help="Largest KID subset, capped by the smaller set (default: KID's subset_size option)."),
    inception_weights: Path | None = typer.Option(
        None, "--inception-weights", help="pt_inception-2015-12-05-6726825d.pth, if not in the weights cache."),
    vgg_weights: Path | None = typer.Option(
        None, "--vgg-weights", help="vgg16-397923af.pth, if not in the weights cache (for pr, intra-lpips, copies)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompute the real-set features (and do not save them)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Measure a generator, or a folder of generated images: FID, KID, precision/recall, IS, SWD, intra-LPIPS,
    copies, ..., computed in memory (no image dumps)."""
    from ..errors import FewshotError
    from ..loading import prepare_device, resolve_device
    from ..metrics import compute_metrics, compute_metrics_of_images, open_real_images, parse_metrics

    names = parse_metrics(metrics)  # bad names fail before anything heavy loads
    _check_source(ckpt, fake, n, resolution)
    if batch < 1:
        raise FewshotError(f"--batch must be at least 1, got {batch}")
    source = ref if ref is not None else data
    if ref is None and not data.exists():
        raise FewshotError(f"--data {data} does not exist")
    torch_device = prepare_device(resolve_device(device))  # on the CPU: freed memory kept for the next batch
    weights = {k: v for k, v in (("inception-v3-fid", inception_weights), ("vgg16", vgg_weights)) if v is not None}
    common = dict(metrics=names, batch_size=batch, device=torch_device, weights_paths=weights, seed=seed,
                  progress=not quiet, use_cache=not no_cache, sheets_dir=_sheets_dir(out, ckpt))
    from ..hub import suggesting

    with suggesting({"inception-v3-fid": "--inception-weights FILE", "vgg16": "--vgg-weights FILE"}):
        if fake is not None:
            fakes = _open_fakes(fake, source, resolution)
            # Decoded batch by batch while the features are computed (and not at all when they are cached).
            real = open_real_images(source, fakes.resolution)
            result = compute_metrics_of_images(fakes, real, **common)
        else:
            generator = _load_generator(ckpt, torch_device)
            real = open_real_images(source, int(generator.img_resolution))
            result = compute_metrics(generator, real, n_fake=5000 if n is None else n, psi=psi,
                                     kid_subset_size=kid_subset, **common)
    result["protocol"]["checkpoint" if fake is None else "generated_source"] = str(ckpt if fake is None else fake)
    result["protocol"]["real_source"] = str(source)
    for line in _summary_lines(result):
        typer.echo(line)
    if json_out is not None:
        from ..checkpoint import atomic_write_bytes

        json_out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(json_out, (json.dumps(result, indent=2) + "\n").encode())
        typer.echo(f"wrote {json_out}")


def _check_source(ckpt: str | None, fake: Path | None, n: int | None, resolution: int | None) -> None:
    """A checkpoint or --fake, not both; the options that only one of them reads."""
    from ..errors import FewshotError

    if (ckpt is None) == (fake is None):
        raise FewshotError("give a checkpoint or --fake FOLDER (one of them)",
                           hint="fewshot metrics CKPT --data DIR, or fewshot metrics --fake SAMPLES --data DIR")
    if fake is not None and n is not None:
        raise FewshotError("--n sets how many images a checkpoint generates; --fake measures every image in "
                           f"{fake}", hint="drop --n (or keep fewer images in the folder)")
    if fake is None and resolution is not None:
        raise FewshotError("--resolution is for --fake: a checkpoint is measured at its generator's size")
    if n is not None and n < 2:
        raise FewshotError(f"--n must be at least 2, got {n}")
    if resolution is not None and resolution < 8:
        raise FewshotError(f"--resolution must be at least 8, got {resolution}")


def _open_fakes(fake: Path, real: Path, resolution: int | None):  # -> ImageStream
    """The generated images as a stream at ``resolution``; by default the smaller of the sizes training would
    infer for them and for the real set, so that neither set is enlarged to meet the other."""
    from ..data import infer_resolution
    from ..errors import FewshotError
    from ..metrics import open_real_images

    if resolution is None:
        if not fake.exists():
            raise FewshotError(f"--fake {fake} does not exist")
        resolution = min(infer_resolution(fake)[0], infer_resolution(real)[0])
    return open_real_images(fake, resolution)


def _sheets_dir(out: Path | None, ckpt: str | None) -> Path:
    """Where the pictures metrics make go: --out, else the run folder CKPT is or lies in, else the working folder."""
    from ..train.run_dir import config_path

    if out is not None:
        return out
    path = Path(ckpt).expanduser() if ckpt is not None else None
    if path is not None and path.is_dir():
        return path
    if path is not None and path.is_file() and config_path(path.parent).is_file():  # runs/00003-x/best.safetensors
        return path.parent
    return Path.cwd()


def _load_generator(ckpt: str, device):  # -> nn.Module; torch stays out of module import time
    try:
        from ..loading import load_generator
    except ImportError:
        load_generator = None
    if load_generator is not None:
        G = load_generator(ckpt, device=device)
    else:
        from ..checkpoint import load_checkpoint

        G = load_checkpoint(ckpt, device=str(device)).generator.eval().requires_grad_(False)
    return _with_priors(ckpt, G)


def _with_priors(ckpt: str, G):
    """A DISP generator draws its priors from the bank its bundle carries (mixup / GMM), as sampling does."""
    if getattr(G, "c_dim", 0) == 0:
        return G
    from ..checkpoint import detect_format
    from ..disp.bank import read_bundle_bank
    from ..disp.sample import PriorSampledGenerator
    from ..loading import resolve_reference

    path = resolve_reference(ckpt)
    bank = read_bundle_bank(path) if detect_format(path) == "safetensors" else None
    return PriorSampledGenerator(G, bank) if bank is not None else G


def _summary_lines(result: dict) -> list[str]:
    from ..metrics import summary_lines

    proto = result["protocol"]
    psi = f"psi {proto['psi']:g}, " if "psi" in proto else ""
    lines = [f"{proto['n_fake']} generated vs {proto['n_real']} real images at {proto['resolution']}px, "
             f"{psi}{proto['seconds']:.1f} s"]
    lines.extend(summary_lines(result))  # each metric's own lines
    lines.extend(f"  note: {note}" for note in proto["notes"])
    return lines
