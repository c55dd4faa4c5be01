"""Generation commands: ``fewshot sample``, ``fewshot interpolate``, ``fewshot mix``.

Cheap checks (seed lists, psi, formats, output paths) run before the checkpoint is loaded, so a
typo costs nothing; torch and the networks are imported inside the command bodies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import PANEL_GENERATE, app

CKPT_HELP = "A .safetensors bundle, an official .pkl, a run folder (its best or last checkpoint), or a hub reference."
DEVICE_HELP = "auto (CUDA when available), cpu or cuda."
NOISE_HELP = "const (the stored noise, reproducible), random, or none."
PSI_HELP = "Truncation psi around the average w: 1 = none, 0.7 typical, 0 = the average image. Range [-2, 2]."
BATCH_HELP = "Images per forward pass."
CLASS_HELP = "Class-conditional generators: a class index, or a class name the checkpoint records."
SAMPLE_CLASS_HELP = CLASS_HELP[:-1] + "; all: every class (class03/ folders, and grid.png with one row per class)."
PRIOR_HELP = (
    "DISP checkpoints: mixup (two training priors mixed, default up to 1000 images), gmm (a Gaussian mixture "
    "fitted on the priors), bank (one training image, --prior-index), or image files/folders (their features; "
    "seed s uses image s mod n). Repeat for several images."
)
PRIOR_INDEX_HELP = "With --prior bank: the training image (N and above: its x-flip, when the run mirrored)."
GMM_HELP = "With --prior gmm: number of mixture components."
PRIOR_WEIGHTS_HELP = "Extractor weights file for image priors (default: the weights registry)."
TRANSLATE_HELP = ("StyleGAN3: move the picture by TX,TY image widths, as gen_images.py's --translate "
                  "(sets the Fourier input's transform).")
ROTATE_HELP = "StyleGAN3: rotate the picture by DEG degrees, as gen_images.py's --rotate."
WALK_TRANSLATE_HELP = ("StyleGAN3: pan the input grid over the frames, from no shift to TX,TY image widths at the "
                       "last frame (the equivariance video; one seed: a fixed latent).")
WALK_ROTATE_HELP = ("StyleGAN3: rotate the input grid over the frames, from 0 to DEG degrees (with --loop, 360 "
                    "turns seamlessly).")


def _vec2(text: Optional[str], option: str) -> Optional[tuple[float, float]]:
    from .parsing import parse_vec2

    return parse_vec2(text, option) if text is not None else None


def _disp_conditions(G, path, prior, prior_index, gmm_components, prior_weights, device):  # type: ignore[no-untyped-def]
    """Per-seed priors for a DISP checkpoint (None for any other: sampling stays exactly as before)."""
    from ..disp.sample import checkpoint_bank, conditions_for

    return conditions_for(G, checkpoint_bank(path), prior, index=prior_index, components=gmm_components,
                          weights_path=prior_weights, device=device)


def _class_choice(value, G, path, allow_all=False):  # type: ignore[no-untyped-def]
    """--class as an index (a recorded class name maps to its index), ``all`` (sample), or None."""
    from ..labels import checkpoint_class_names, parse_class

    names = checkpoint_class_names(path) if value is not None else None
    return parse_class(value, int(getattr(G, "c_dim", 0)), names, allow_all=allow_all), names


def _sample_every_class(G, path, seeds, outdir, names, grid_cols, write_files, overwrite, fmt, options):  # type: ignore[no-untyped-def]
    """`sample --class all`: per-class folders of the seeds, and grid.png with one row per class."""
    from ..errors import FewshotError
    from ..image_output import class_grid, sample_to_folder
    from ..labels import class_folder

    if G.c_dim > 256:
        raise FewshotError(f"--class all would write {G.c_dim} rows; pick classes with --class N")
    written = kept = 0
    if write_files:
        for k in range(G.c_dim):
            report = sample_to_folder(G, seeds, outdir / class_folder(k, names), fmt=fmt, overwrite=overwrite,
                                      class_idx=k, **options)
            written, kept = written + len(report.written), kept + len(report.kept)
        typer.echo(f"wrote {written} images to {outdir}/class*/" + (f" (kept {kept} existing)" if kept else ""))
    grid_path = outdir / f"grid.{fmt}"
    if grid_path.exists() and not overwrite:
        typer.echo(f"kept existing grid {grid_path}")
        return
    shown = seeds[:grid_cols]
    options = {k: v for k, v in options.items() if k != "writers"}
    class_grid(G, shown, range(G.c_dim), grid_path, **options)
    typer.echo(f"wrote grid {grid_path} ({G.c_dim} classes x {len(shown)} seeds, one row per class)")


def _echo_written(what: str, path: Path) -> None:
    typer.echo(f"wrote {what} {path}")


def _refuse_existing(path: Path, overwrite: bool) -> None:
    from ..errors import FewshotError

    if path.exists() and not overwrite:
        raise FewshotError(f"{path} exists", hint="pass --overwrite to replace it")


def _sample_projected(ckpt: str, w_file: Path, outdir: Path, *, psi: float, trunc_cutoff: Optional[int],
                      noise_mode: str, batch: int, device: str, fmt: str, overwrite: bool) -> None:
    """``sample --w``: proj00.png, proj01.png, ... (the official generate.py's names) of the file's ws."""
    from ..errors import FewshotError
    from ..image_output import output_folder, save_image
    from ..loading import load_generator, prepare_device, resolve_device
    from ..projector import load_projected_w, render_ws, truncate_ws
    from ..synthesis import check_truncation

    if not w_file.is_file():
        raise FewshotError(f"--w {w_file} is not a file")
    if batch < 1:
        raise FewshotError(f"--batch must be at least 1, got {batch}")
    torch_device = prepare_device(resolve_device(device))
    with output_folder(outdir):
        G = load_generator(ckpt, torch_device)
        check_truncation(G, psi, trunc_cutoff)
        ws, noise = load_projected_w(w_file, G)
        paths = [outdir / f"proj{i:02d}.{fmt}" for i in range(ws.shape[0])]
        if not overwrite and any(p.exists() for p in paths):
            raise FewshotError(f"{next(p for p in paths if p.exists())} exists", hint="pass --overwrite to replace it")
        ws = truncate_ws(G, ws.to(torch_device), psi, trunc_cutoff)
        for image, path in zip(render_ws(G, ws, noise, noise_mode, batch), paths, strict=True):
            save_image(image, path)
    typer.echo(f"wrote {len(paths)} image{'' if len(paths) == 1 else 's'} of {w_file} to {outdir}")


@app.command(
    rich_help_panel=PANEL_GENERATE,
    epilog=(
        "[bold]Examples[/bold]\n\n"
        "  fewshot sample runs/00000-obama/best.safetensors --seeds 0-63 --psi 0.7\n\n"
        "  fewshot sample G.safetensors --n 5000 --outdir fid5k --batch 32\n\n"
        "  fewshot sample ffhq256.pkl --grid 4x8 --grid-only --outdir sheet\n\n"
        "  fewshot sample cifar10 --class all --seeds 0-7 --grid-only     (one row per class)\n\n"
        "  fewshot sample runs/00001-disp/final.safetensors --prior gmm --gmm-components 8\n\n"
        "  fewshot sample runs/00001-disp/final.safetensors --prior my_sketch.png --seeds 0-7\n\n"
        "  fewshot sample runs/00003-vangogh --w projection/projected_w.npz --outdir me-vangogh\n\n"
        "  fewshot sample stylegan3-t-ffhqu-256 --seeds 0-7 --translate 0.2,-0.1 --rotate 15     (StyleGAN3)"
    ),
)
def sample(
    ckpt: str = typer.Argument(..., help=CKPT_HELP),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Seeds, e.g. 0-63,100 (default 0-15, or as many as the grid)."),
    n: Optional[int] = typer.Option(None, "--n", help="Sample seeds 0..N-1 (instead of --seeds)."),
    psi: float = typer.Option(1.0, "--psi", help=PSI_HELP),
    trunc_cutoff: Optional[int] = typer.Option(None, "--trunc-cutoff", help="Truncate only the first K ws (coarse layers)."),
    trunc_z: Optional[float] = typer.Option(
        None, "--trunc-z", help="BigGAN truncation: redraw z components beyond this threshold (deterministic per seed)."
    ),
    noise_mode: str = typer.Option("const", "--noise-mode", help=NOISE_HELP),
    outdir: Path = typer.Option(Path("samples"), "--outdir", help="Folder for seed0042.png files and grid.png."),
    grid: Optional[str] = typer.Option(None, "--grid", help="Also write grid.png of the first ROWSxCOLS seeds, e.g. 8x8."),
    grid_only: bool = typer.Option(False, "--grid-only", help="Write only the grid, no per-seed files."),
    batch: int = typer.Option(16, "--batch", help=BATCH_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    image_format: str = typer.Option("png", "--format", help="png or jpg."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing files (default: keep them, skip their seeds)."),
    writers: Optional[int] = typer.Option(
        None, "--writers", help="Threads encoding and writing the files while the next batch is generated "
        "(default: one per CPU core, up to 8; 0: in the main thread)."
    ),
    class_idx: Optional[str] = typer.Option(None, "--class", help=SAMPLE_CLASS_HELP),
    prior: Optional[list[str]] = typer.Option(None, "--prior", help=PRIOR_HELP),
    prior_index: Optional[int] = typer.Option(None, "--prior-index", help=PRIOR_INDEX_HELP),
    gmm_components: int = typer.Option(8, "--gmm-components", help=GMM_HELP),
    prior_weights: Optional[Path] = typer.Option(None, "--prior-weights", help=PRIOR_WEIGHTS_HELP),
    w: Optional[Path] = typer.Option(
        None, "--w", help="Render the ws of a projected_w.npz (fewshot project's or the official projector's) instead "
        "of seeds: proj00.png, ... (--psi pulls them towards CKPT's average w)."),
    translate: Optional[str] = typer.Option(None, "--translate", metavar="TX,TY", help=TRANSLATE_HELP),
    rotate: Optional[float] = typer.Option(None, "--rotate", metavar="DEG", help=ROTATE_HELP),
) -> None:
    """Images for seeds, exactly as the official generate.py (gen_images.py for StyleGAN3) draws them."""
    from ..equivariance import check_transformable, transformed_input
    from ..errors import FewshotError
    from ..image_output import IMAGE_FORMATS, output_folder, sample_to_folder
    from ..loading import load_generator, prepare_device, resolve_device, resolve_reference
    from ..synthesis import NOISE_MODES, check_choice, check_psi
    from .parsing import parse_grid, parse_seeds

    image_format = check_choice(image_format.lower().replace("jpeg", "jpg"), IMAGE_FORMATS, "image format")
    check_choice(noise_mode, NOISE_MODES, "noise mode")
    check_psi(psi)
    shift = _vec2(translate, "--translate")
    if w is not None:
        if seeds is not None or n is not None or grid is not None or prior or trunc_z is not None or \
                shift is not None or rotate is not None:
            raise FewshotError("--w renders the file's ws: it takes no --seeds, --n, --grid, --prior, --trunc-z, "
                               "--translate or --rotate")
        _sample_projected(ckpt, w, outdir, psi=psi, trunc_cutoff=trunc_cutoff, noise_mode=noise_mode, batch=batch,
                          device=device, fmt=image_format, overwrite=overwrite)
        return
    grid_shape = parse_grid(grid) if grid is not None else None
    every_class = class_idx is not None and class_idx.strip().lower() == "all"
    if grid_only and grid_shape is None and not every_class:
        raise FewshotError("--grid-only needs --grid ROWSxCOLS (or --class all)")
    if seeds is not None and n is not None:
        raise FewshotError("give either --seeds or --n, not both")
    if n is not None:
        if n < 1:
            raise FewshotError(f"--n must be at least 1, got {n}")
        seed_list = list(range(n))
    elif seeds is not None:
        seed_list = parse_seeds(seeds)
    else:
        seed_list = list(range(grid_shape.cells if grid_shape else 16))
    if grid_shape is not None and grid_shape.cells > len(seed_list):
        raise FewshotError(
            f"a {grid_shape.rows}x{grid_shape.cols} grid needs {grid_shape.cells} seeds, but only {len(seed_list)} were given"
        )
    if batch < 1:
        raise FewshotError(f"--batch must be at least 1, got {batch}")
    if writers is not None and writers < 0:
        raise FewshotError(f"--writers must be 0 or more, got {writers}")
    torch_device = prepare_device(resolve_device(device))
    with output_folder(outdir):  # checked before the checkpoint loads; removed again if the command fails
        path = resolve_reference(ckpt)
        G = load_generator(path, torch_device)
        check_transformable(G, shift, rotate)
        conditions = _disp_conditions(G, path, prior, prior_index, gmm_components, prior_weights, torch_device)
        choice, names = _class_choice(class_idx, G, path, allow_all=True)
        if choice == "all":
            if conditions is not None:
                raise FewshotError("--class is for class-conditional generators; this one is conditioned on priors")
            options = dict(psi=psi, trunc_cutoff=trunc_cutoff, trunc_z=trunc_z, noise_mode=noise_mode,
                           batch_size=batch, writers=writers)
            with transformed_input(G, shift, rotate):
                _sample_every_class(G, path, seed_list, outdir, names, grid_shape.cols if grid_shape else 8,
                                    not grid_only, overwrite, image_format, options)
            return
        with transformed_input(G, shift, rotate):
            report = sample_to_folder(
                G, seed_list, outdir, psi=psi, trunc_cutoff=trunc_cutoff, trunc_z=trunc_z, noise_mode=noise_mode,
                grid=grid_shape, write_files=not grid_only, batch_size=batch, fmt=image_format,
                overwrite=overwrite, class_idx=choice, conditions=conditions, writers=writers,
            )
    if not grid_only:
        kept = f" (kept {len(report.kept)} existing; --overwrite replaces them)" if report.kept else ""
        count = len(report.written)
        typer.echo(f"wrote {count} image{'' if count == 1 else 's'} to {outdir}{kept}")
    if report.grid is not None:
        typer.echo(f"kept existing grid {report.grid}" if report.grid_kept else f"wrote grid {report.grid}")


@app.command(
    rich_help_panel=PANEL_GENERATE,
    epilog=(
        "[bold]Examples[/bold]\n\n"
        "  fewshot interpolate G.safetensors --seeds 1,7,9 --loop --out walk.gif\n\n"
        "  fewshot interpolate G.safetensors --seeds 0-15 --grid 2x2 --space z --out walk.mp4\n\n"
        "  fewshot interpolate G.safetensors --seeds 3,4 --steps 8 --out strip.png\n\n"
        "  fewshot interpolate disp.safetensors --seeds 5 --priors 0,3,7 --loop --out priors.gif\n\n"
        "  fewshot interpolate stylegan3-r-afhqv2-512 --seeds 2 --rotate 360 --loop --steps 90 --out spin.mp4\n\n"
        "  fewshot interpolate sg3.safetensors --seeds 1,7 --translate 0.5,0 --out pan-walk.gif"
    ),
)
def interpolate(
    ckpt: str = typer.Argument(..., help=CKPT_HELP),
    seeds: str = typer.Option(..., "--seeds", help="Keyframe seeds in order, e.g. 1,7,9 (with --grid: a run per tile)."),
    out: str = typer.Option(..., "--out", help="walk.gif, walk.mp4 (needs the video extra), a .png strip, or a folder/ for frames."),
    steps: int = typer.Option(60, "--steps", help="Frames from one keyframe to the next."),
    space: str = typer.Option("w", "--space", help="Interpolate in w (after mapping) or z."),
    method: Optional[str] = typer.Option(None, "--method", help="lerp or slerp (default: slerp in z, lerp in w)."),
    loop: bool = typer.Option(False, "--loop", help="Return to the first seed, seamlessly."),
    psi: float = typer.Option(1.0, "--psi", help=PSI_HELP),
    trunc_cutoff: Optional[int] = typer.Option(None, "--trunc-cutoff", help="Truncate only the first K ws."),
    grid: Optional[str] = typer.Option(None, "--grid", help="ROWSxCOLS walks side by side; seeds split evenly over tiles."),
    fps: float = typer.Option(30.0, "--fps", help="Frames per second (GIF delays round to 10 ms)."),
    strip: bool = typer.Option(False, "--strip", help="Also write all frames side by side as one PNG (NAME-strip.png)."),
    noise_mode: str = typer.Option("const", "--noise-mode", help=NOISE_HELP),
    batch: int = typer.Option(16, "--batch", help=BATCH_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
    class_idx: Optional[str] = typer.Option(None, "--class", help=CLASS_HELP),
    prior: Optional[list[str]] = typer.Option(None, "--prior", help=PRIOR_HELP),
    prior_index: Optional[int] = typer.Option(None, "--prior-index", help=PRIOR_INDEX_HELP),
    priors: Optional[str] = typer.Option(
        None, "--priors",
        help="DISP checkpoints: walk between priors instead of latents, e.g. 0,5,9 (training images) or "
        "a.png,b.png; the latent of the first seed stays fixed.",
    ),
    prior_weights: Optional[Path] = typer.Option(None, "--prior-weights", help=PRIOR_WEIGHTS_HELP),
    translate: Optional[str] = typer.Option(None, "--translate", metavar="TX,TY", help=WALK_TRANSLATE_HELP),
    rotate: Optional[float] = typer.Option(None, "--rotate", metavar="DEG", help=WALK_ROTATE_HELP),
) -> None:
    """A latent walk through seeds (or, for DISP, a walk between priors; for StyleGAN3, a pan or rotation),
    as a GIF, an MP4, PNG frames or a strip."""
    from ..equivariance import check_transformable, frame_transforms
    from ..errors import FewshotError
    from ..image_output import (
        animation_kind,
        ensure_writable_dir,
        save_image,
        strip_image,
        strip_path_for,
        write_frames,
        write_gif,
        write_mp4,
    )
    from ..loading import load_generator, prepare_device, resolve_device, resolve_reference
    from ..synthesis import METHODS, NOISE_MODES, SPACES, check_choice, check_psi, iter_walk_frames, walk_frame_count
    from .parsing import parse_grid, parse_seeds

    seed_list = parse_seeds(seeds)
    shift = _vec2(translate, "--translate")
    moving = shift is not None or rotate is not None
    if moving and priors is not None:
        raise FewshotError("--translate/--rotate move the picture along a latent walk: they take no --priors")
    fixed_latent = moving and len(seed_list) == 1
    if fixed_latent:  # one seed: the picture moves at a fixed latent, over --steps + 1 frames
        seed_list = seed_list * 2
    walk_loop = loop and not fixed_latent  # --loop then only makes the motion seamless
    check_choice(space, SPACES, "latent space")
    if method is not None:
        check_choice(method, METHODS, "interpolation method")
    check_choice(noise_mode, NOISE_MODES, "noise mode")
    check_psi(psi)
    if steps < 1:
        raise FewshotError(f"--steps must be at least 1, got {steps}")
    if not (0 < fps <= 240):
        raise FewshotError(f"--fps must be between 0 and 240, got {fps}")
    grid_shape = parse_grid(grid) if grid is not None else None
    tiles = grid_shape.cells if grid_shape else 1
    prior_items = [p.strip() for p in priors.split(",") if p.strip()] if priors is not None else None
    if prior_items is not None:
        if grid_shape is not None or prior:
            raise FewshotError("--priors walks one latent between priors: it takes no --grid or --prior")
        if len(prior_items) < 2:
            raise FewshotError("--priors needs at least two keyframes, e.g. 0,5")
        num_frames = walk_frame_count(len(prior_items), steps, loop)
    elif len(seed_list) % tiles or len(seed_list) < 2 * tiles:
        raise FewshotError(
            f"a {grid} walk needs a multiple of {tiles} seeds and at least {2 * tiles} (two keyframes per tile), "
            f"got {len(seed_list)}" if tiles > 1 else f"a walk needs at least 2 seeds (keyframes), got {len(seed_list)}",
            hint="e.g. --seeds 1,2,3",
        )
    else:
        num_frames = walk_frame_count(len(seed_list) // tiles, steps, walk_loop)
    if num_frames > 100_000:
        raise FewshotError(f"this walk would have {num_frames} frames; lower --steps or the number of seeds")

    kind = animation_kind(out)
    out_path = Path(out)
    if kind == "frames":
        if out_path.is_dir() and any(out_path.glob("frame*.png")) and not overwrite:
            raise FewshotError(f"{out_path} already holds frames", hint="pass --overwrite to replace them")
        ensure_writable_dir(out_path)
    else:
        _refuse_existing(out_path, overwrite)
        ensure_writable_dir(out_path.parent)
    if kind == "mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise FewshotError(
                "writing MP4 needs imageio-ffmpeg, which is not installed",
                hint="pip install 'fewshot[video]', or write a .gif or a frames folder",
            ) from None
    strip_path = out_path if kind == "png" else (strip_path_for(out_path, kind) if strip else None)
    if strip_path is not None and strip_path != out_path:
        _refuse_existing(strip_path, overwrite)
    torch_device = prepare_device(resolve_device(device))

    path = resolve_reference(ckpt)
    G = load_generator(path, torch_device)
    if prior_items is not None:
        from ..disp.sample import checkpoint_bank, iter_prior_walk_frames, walk_keyframe_priors

        bank = checkpoint_bank(path)
        if bank is None:
            raise FewshotError("--priors needs a DISP checkpoint (a bundle with a prior bank); this one has none")
        keyframes = walk_keyframe_priors(bank, prior_items, G, prior_weights, torch_device)
        frames = iter_prior_walk_frames(G, keyframes, seed=seed_list[0], steps=steps, loop=loop, psi=psi,
                                        trunc_cutoff=trunc_cutoff, noise_mode=noise_mode, batch_size=batch)
    else:
        transforms = frame_transforms(num_frames, shift, rotate, loop) if check_transformable(G, shift, rotate) else None
        conditions = _disp_conditions(G, path, prior, prior_index, 8, prior_weights, torch_device)
        frames = iter_walk_frames(
            G, seed_list, steps=steps, space=space, method=method, loop=walk_loop, psi=psi,
            trunc_cutoff=trunc_cutoff, grid=grid_shape, noise_mode=noise_mode, batch_size=batch,
            class_idx=_class_choice(class_idx, G, path)[0], progress=num_frames > 64, conditions=conditions,
            frame_transforms=transforms,
        )
    # GIFs and strips need every frame at once; MP4s and frame folders are written as frames arrive.
    if kind in ("gif", "png") or strip_path is not None:
        frames = list(frames)
    if kind == "gif":
        _echo_written(f"{num_frames}-frame GIF", write_gif(frames, out_path, fps))
    elif kind == "mp4":
        _echo_written(f"{num_frames}-frame MP4", write_mp4(frames, out_path, fps))
    elif kind == "frames":
        written = write_frames(frames, out_path)
        typer.echo(f"wrote {len(written)} frames to {out_path}")
    if strip_path is not None:
        _echo_written(f"{num_frames}-frame strip", save_image(strip_image(frames), strip_path))


@app.command(
    rich_help_panel=PANEL_GENERATE,
    epilog=(
        "[bold]Examples[/bold]\n\n"
        "  fewshot mix G.safetensors --rows 85,100,75 --cols 55,821,1789 --styles 0-6 --out mix.png\n\n"
        "  fewshot mix G.safetensors --rows 1,2 --cols 3,4 --styles 8-13 --out fine.png"
    ),
)
def mix(
    ckpt: str = typer.Argument(..., help=CKPT_HELP),
    rows: str = typer.Option(..., "--rows", help="Row seeds (their ws are the base), e.g. 85,100."),
    cols: str = typer.Option(..., "--cols", help="Column seeds (they lend the chosen layers), e.g. 55,821."),
    styles: str = typer.Option("0-6", "--styles", help="Layers taken from the column seed (0 = coarsest)."),
    out: Path = typer.Option(Path("mix.png"), "--out", help="The sheet, .png or .jpg."),
    psi: float = typer.Option(1.0, "--psi", help=PSI_HELP),
    noise_mode: str = typer.Option("const", "--noise-mode", help=NOISE_HELP),
    batch: int = typer.Option(16, "--batch", help=BATCH_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing sheet."),
    class_idx: Optional[str] = typer.Option(None, "--class", help=CLASS_HELP),
    prior: Optional[list[str]] = typer.Option(None, "--prior", help=PRIOR_HELP),
    prior_index: Optional[int] = typer.Option(None, "--prior-index", help=PRIOR_INDEX_HELP),
) -> None:
    """The style-mixing sheet of the official style_mixing.py: rows x columns of mixed images."""
    from ..errors import FewshotError
    from ..image_output import ensure_writable_dir, image_format, save_image, style_mix_sheet
    from ..loading import load_generator, prepare_device, resolve_device, resolve_reference
    from ..synthesis import NOISE_MODES, check_choice, check_psi
    from .parsing import parse_seeds, parse_styles

    row_seeds, col_seeds = parse_seeds(rows), parse_seeds(cols)
    if len(row_seeds) * len(col_seeds) > 4096:
        raise FewshotError(f"{len(row_seeds)} x {len(col_seeds)} cells is too many for one sheet (at most 4096)")
    check_choice(noise_mode, NOISE_MODES, "noise mode")
    check_psi(psi)
    if batch < 1:
        raise FewshotError(f"--batch must be at least 1, got {batch}")
    image_format(out)
    _refuse_existing(out, overwrite)
    ensure_writable_dir(out.parent)
    torch_device = prepare_device(resolve_device(device))

    path = resolve_reference(ckpt)
    G = load_generator(path, torch_device)
    conditions = _disp_conditions(G, path, prior, prior_index, 8, None, torch_device)
    style_layers = parse_styles(styles, G.num_ws)
    sheet = style_mix_sheet(
        G, row_seeds, col_seeds, style_layers, psi=psi, noise_mode=noise_mode, batch_size=batch,
        class_idx=_class_choice(class_idx, G, path)[0],
        conditions=conditions,
    )
    _echo_written(f"{len(row_seeds)}x{len(col_seeds)} style-mixing sheet", save_image(sheet, out))
