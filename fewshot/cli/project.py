"""``fewshot project``: a photo into a generator's w space (NVIDIA's projector), rendered through another generator.

Per image: ``target.png`` (the photo cropped and resized as training images are), ``proj.png``,
``projected_w.npz`` (the official file: ``w`` [1, num_ws, w_dim] float32, plus the optimised noise maps),
``sheet.png`` (target | projection [| the same w through --render-with]) and, with ``--video``, ``proj.mp4``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import PANEL_GENERATE, app
from .generate import CKPT_HELP, CLASS_HELP, DEVICE_HELP

OUTPUT_NAMES = ("target.png", "proj.png", "projected_w.npz", "sheet.png", "rendered.png", "proj.mp4")


def image_folders(images: list[Path], outdir: Path) -> list[Path]:
    """One image writes into ``outdir`` (the official layout); several into ``outdir/STEM`` each."""
    from ..errors import FewshotError

    if len(images) == 1:
        return [outdir]
    stems = [p.stem for p in images]
    repeated = sorted({s for s in stems if stems.count(s) > 1})
    if repeated:
        raise FewshotError(f"two images are named {repeated[0]!r}; their outputs would share outdir/{repeated[0]}",
                           hint="project them one at a time with their own --outdir")
    return [outdir / s for s in stems]


def load_render_with(ref: str, base, device):  # type: ignore[no-untyped-def]
    """The generator a projection is rendered through as well, checked to share the base's w space."""
    from ..errors import FewshotError
    from ..loading import load_generator

    other = load_generator(ref, device)
    mine = (base.num_ws, base.w_dim, base.img_channels, base.img_resolution)
    theirs = (other.num_ws, other.w_dim, other.img_channels, other.img_resolution)
    if mine != theirs:
        raise FewshotError(
            f"--render-with {ref} takes ws [{theirs[0]}, {theirs[1]}] and draws {theirs[2]}x{theirs[3]} px; the base "
            f"takes [{mine[0]}, {mine[1]}] and draws {mine[2]}x{mine[3]} px",
            hint="render through a fine-tune of the base (the same architecture)",
        )
    return other


def _write_video(G, projection, target, path: Path) -> None:  # type: ignore[no-untyped-def]
    """proj.mp4: target | the w of each step (rendered with the final noise maps), 10 frames a second."""
    import torch

    from ..image_output import write_mp4
    from ..projector import render_ws

    def frames():  # type: ignore[no-untyped-def]
        for start in range(0, len(projection.w_steps), 16):
            for image in render_ws(G, projection.w_steps[start:start + 16], projection.noise):
                yield torch.cat([target, image], dim=2)

    write_mp4(frames(), path, fps=10)


def load_target(G, image: Path, crop: str):  # type: ignore[no-untyped-def]
    """The photo as G's training images were made: uint8 [C, R, R]."""
    import torch

    from ..data import load_image
    from ..projector import target_tensor

    return target_tensor(torch.from_numpy(load_image(image, G.img_resolution, crop)).permute(2, 0, 1), G)


def project_one(G, lpips, target, folder: Path, settings, *, seed: int,  # type: ignore[no-untyped-def]
                class_idx: Optional[int], other=None, video: bool = False) -> list[Path]:
    """Project one target and write its outputs into ``folder``; returns the files written."""
    import torch

    from ..image_output import ensure_writable_dir, save_image
    from ..projector import project, render_ws, save_projected_w
    from ..synthesis import make_grid

    projection = project(G, target, lpips, settings, seed=seed, class_idx=class_idx, progress=True)
    ensure_writable_dir(folder)
    proj = render_ws(G, projection.w, projection.noise)[0]
    written = [save_image(target, folder / "target.png"), save_image(proj, folder / "proj.png"),
               save_projected_w(folder / "projected_w.npz", projection.w, projection.noise)]
    tiles = [target, proj]
    if other is not None:
        rendered = render_ws(other, projection.w, projection.noise)[0]
        written.append(save_image(rendered, folder / "rendered.png"))
        tiles.append(rendered)
    written.append(save_image(make_grid(torch.stack(tiles), (len(tiles), 1)), folder / "sheet.png"))
    if video:
        _write_video(G, projection, target, folder / "proj.mp4")
        written.append(folder / "proj.mp4")
    return written


@app.command(
    "project",
    rich_help_panel=PANEL_GENERATE,
    epilog=(
        "[bold]Examples[/bold]\n\n"
        "  fewshot project me.jpg --ckpt ffhq256.pkl --outdir out/me\n\n"
        "  fewshot project me.jpg --ckpt ffhq256.pkl --render-with runs/00003-vangogh --outdir out/me-vangogh\n\n"
        "  fewshot project a.png b.png --ckpt G.safetensors --steps 300 --wplus --video\n\n"
        "  fewshot sample runs/00003-vangogh --w out/me/projected_w.npz --outdir out/me-again"
    ),
)
def project_command(
    images: list[Path] = typer.Argument(..., help="Image files to project (cropped and resized as training images are)."),
    ckpt: str = typer.Option(..., "--ckpt", help="The generator to project into. " + CKPT_HELP),
    outdir: Path = typer.Option(Path("projection"), "--outdir", help="Output folder (several images: one subfolder each)."),
    steps: int = typer.Option(1000, "--steps", help="Optimisation steps (the official default 1000)."),
    seed: int = typer.Option(303, "--seed", help="Seed of the noise maps and the w noise (the official default 303)."),
    wplus: bool = typer.Option(False, "--wplus", help="Optimise one w per layer (W+) instead of one w for all."),
    render_with: Optional[str] = typer.Option(
        None, "--render-with", help="Also render the projected w through this generator (a fine-tune of --ckpt: a run "
        "folder, a bundle, a hub reference); the sheet shows target | projection | rendered."),
    video: bool = typer.Option(False, "--video", help="Also write proj.mp4, the progress (needs the video extra)."),
    crop: str = typer.Option("center", "--crop", help="center (the largest centred square) or pad (black bars)."),
    lpips_weights: Optional[Path] = typer.Option(
        None, "--lpips-weights", help="torchvision's VGG-16 file for LPIPS (default: the weights registry)."),
    class_idx: Optional[int] = typer.Option(None, "--class", help=CLASS_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
) -> None:
    """Project photos into a generator's latent space (NVIDIA's projector: LPIPS, noise regularisation)."""
    from ..data import CROP_MODES
    from ..errors import FewshotError
    from ..loading import load_generator, prepare_device, resolve_device
    from ..perceptual import load_lpips
    from ..projector import ProjectSettings
    from ..synthesis import check_choice

    settings = ProjectSettings(steps=steps, wplus=wplus).check()
    check_choice(crop, CROP_MODES, "crop mode")
    missing = [p for p in images if not p.is_file()]
    if missing:
        raise FewshotError(f"{missing[0]} is not an image file")
    folders = image_folders(images, outdir)
    if not overwrite:
        existing = [f / name for f in folders for name in OUTPUT_NAMES if (f / name).exists()]
        if existing:
            raise FewshotError(f"{existing[0]} exists", hint="pass --overwrite to replace it, or choose another --outdir")
    if video:
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise FewshotError("--video needs imageio-ffmpeg, which is not installed",
                               hint="pip install 'fewshot[video]'") from None
    torch_device = prepare_device(resolve_device(device))
    G = load_generator(ckpt, torch_device)
    other = load_render_with(render_with, G, torch_device) if render_with is not None else None
    targets = [load_target(G, image, crop) for image in images]  # a bad file fails before any work
    lpips = load_lpips(lpips_weights, device=torch_device, flag="--lpips-weights FILE")
    for image, target, folder in zip(images, targets, folders, strict=True):
        written = project_one(G, lpips, target, folder, settings, seed=seed, class_idx=class_idx, other=other,
                              video=video)
        typer.echo(f"{image}: wrote {', '.join(p.name for p in written)} to {folder}")
