"""``fewshot metrics``: the registered metrics (FID, KID, precision-recall, IS, ...) of a checkpoint against real
images."""

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
    "  fewshot metrics ffhq256 --data ./faces_1k --ref ./ffhq_full.zip --psi 0.7",
)
def metrics_command(
    ckpt: str = typer.Argument(..., help="A fewshot bundle, an official .pkl, or a run folder."),
    data: Path = typer.Option(..., "--data", help="The training images (folder or zip)."),
    ref: Path | None = typer.Option(None, "--ref", help="Compare against this set instead of --data (folder or zip)."),
    metrics: str = typer.Option("fid,kid", "--metrics",
                                help="Comma-separated: {methods:metric}."),
    n: int = typer.Option(5000, "--n", help="Number of generated images (few-shot protocol: 5000)."),
    psi: float = typer.Option(1.0, "--psi", help="Truncation psi for the generated images."),
    batch: int = typer.Option(64, "--batch", help="Images per generator / extractor batch."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the result (with its protocol) here."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
    seed: int = typer.Option(0, "--seed", help="Seed of the generated latents and noise."),
    kid_subset: int | None = typer.Option(
        None, "--kid-subset", help="Largest KID subset, capped by the smaller set (default: KID's subset_size option)."),
    inception_weights: Path | None = typer.Option(
        None, "--inception-weights", help="pt_inception-2015-12-05-6726825d.pth, if not in the weights cache."),
    vgg_weights: Path | None = typer.Option(
        None, "--vgg-weights", help="vgg16-397923af.pth, if not in the weights cache (for pr)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompute the real-set features (and do not save them)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Measure a generator: FID, KID, precision/recall, IS, ..., computed in memory (no image dumps)."""
    from ..errors import FewshotError
    from ..loading import prepare_device, resolve_device
    from ..metrics import compute_metrics, open_real_images, parse_metrics

    names = parse_metrics(metrics)  # bad names fail before anything heavy loads
    if n < 2:
        raise FewshotError(f"--n must be at least 2, got {n}")
    if batch < 1:
        raise FewshotError(f"--batch must be at least 1, got {batch}")
    torch_device = prepare_device(resolve_device(device))  # on the CPU: freed memory kept for the next batch
    generator = _load_generator(ckpt, torch_device)
    source = ref if ref is not None else data
    if ref is None and not data.exists():
        raise FewshotError(f"--data {data} does not exist")
    # Decoded batch by batch while the features are computed (and not at all when they are cached).
    real = open_real_images(source, int(generator.img_resolution))
    weights = {k: v for k, v in (("inception-v3-fid", inception_weights), ("vgg16", vgg_weights)) if v is not None}
    from ..hub import suggesting

    with suggesting({"inception-v3-fid": "--inception-weights FILE", "vgg16": "--vgg-weights FILE"}):
        result = compute_metrics(
            generator, real, metrics=names, n_fake=n, psi=psi, batch_size=batch, device=torch_device,
            weights_paths=weights, seed=seed, progress=not quiet, kid_subset_size=kid_subset, use_cache=not no_cache,
        )
    result["protocol"]["checkpoint"] = str(ckpt)
    result["protocol"]["real_source"] = str(source)
    for line in _summary_lines(result):
        typer.echo(line)
    if json_out is not None:
        from ..checkpoint import atomic_write_bytes

        json_out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(json_out, (json.dumps(result, indent=2) + "\n").encode())
        typer.echo(f"wrote {json_out}")


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
    lines = [f"{proto['n_fake']} generated vs {proto['n_real']} real images at {proto['resolution']}px, "
             f"psi {proto['psi']:g}, {proto['seconds']:.1f} s"]
    lines.extend(summary_lines(result))  # each metric's own lines
    lines.extend(f"  note: {note}" for note in proto["notes"])
    return lines
