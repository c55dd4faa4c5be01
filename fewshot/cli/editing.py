"""``fewshot directions`` (SeFa's closed-form directions) and ``fewshot edit`` (moving ws along one of them)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import typer

from .app import PANEL_GENERATE, app
from .generate import CKPT_HELP, DEVICE_HELP, NOISE_HELP, _refuse_existing

LAYERS_HELP = "The ws the directions read and the edit moves, e.g. 0-3 (coarse) or 4-7 (default: all)."
SHEET_TILE = 256  # the directions sheet's tiles are downsampled to this when larger
EDIT_PSI_HELP = "Truncation psi of the seeds' ws around the average w (SeFa's sheets use 0.7)."


def parse_strengths(text: str, frames: int) -> list[float]:
    """``-3:3`` -> ``frames`` strengths evenly from -3 to 3; ``2`` -> ``[2.0]``."""
    from ..errors import FewshotError

    number = r"\s*([-+]?(?:\d+\.?\d*|\.\d+))\s*"
    single = re.fullmatch(number, text or "")
    if single:
        return [float(single.group(1))]
    span = re.fullmatch(number + ":" + number, text or "")
    if span is None:
        raise FewshotError(f"malformed strength {text!r}", hint="write a range as -3:3, or one strength as 2")
    if frames < 2:
        raise FewshotError(f"a strength range needs at least 2 frames, got {frames}")
    low, high = float(span.group(1)), float(span.group(2))
    return [low + (high - low) * i / (frames - 1) for i in range(frames)]


def _layers(text: Optional[str], G, default) -> list[int]:  # type: ignore[no-untyped-def]
    from .parsing import parse_styles

    if text is not None:
        return parse_styles(text, G.num_ws)
    return list(default) if default else list(range(G.num_ws))


def _edit_grid(G, ws, noise, vectors, strengths, layers, noise_mode):  # type: ignore[no-untyped-def]
    """uint8 ``[D, S, N, C, H, W]``: each of ``vectors`` (D) at each strength (S) on each w (N)."""
    import torch

    from ..editing import edit_ws
    from ..projector import render_ws

    out = []
    for vector in vectors:
        moved = edit_ws(ws, vector, strengths, layers)  # [S, N, num_ws, w_dim]
        images = render_ws(G, moved.flatten(0, 1), noise, noise_mode)
        out.append(images.reshape(len(strengths), ws.shape[0], *images.shape[1:]))
    return torch.stack(out)


@app.command(
    rich_help_panel=PANEL_GENERATE,
    epilog=(
        "[bold]Examples[/bold]\n\n"
        "  fewshot directions ffhq256.pkl --k 10 --out ffhq-directions.npz\n\n"
        "  fewshot directions G.safetensors --layers 0-3 --k 5 --out coarse.npz --seeds 0-3"
    ),
)
def directions(
    ckpt: str = typer.Argument(..., help=CKPT_HELP),
    layers: Optional[str] = typer.Option(None, "--layers", help=LAYERS_HELP),
    k: int = typer.Option(10, "--k", help="How many directions (the top eigenvectors)."),
    out: Path = typer.Option(Path("directions.npz"), "--out", help="The directions file; its sheet goes beside it (.png)."),
    seeds: str = typer.Option("0-2", "--seeds", help="Seeds of the sheet's rows (each direction on each seed)."),
    strength: str = typer.Option("-3:3", "--strength", help="The sheet's strengths, a range LOW:HIGH."),
    columns: int = typer.Option(7, "--columns", help="Strengths per row of the sheet."),
    psi: float = typer.Option(0.7, "--psi", help=EDIT_PSI_HELP),
    noise_mode: str = typer.Option("const", "--noise-mode", help=NOISE_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing file and sheet."),
) -> None:
    """SeFa directions (Shen & Zhou 2021) from the style affine weights, and a sheet of each from -3 to +3."""
    from ..editing import save_directions, sefa_directions
    from ..image_output import ensure_writable_dir, save_image
    from ..loading import load_generator, prepare_device, resolve_device
    from ..synthesis import NOISE_MODES, check_choice, check_psi, make_grid, seeds_to_ws
    from .parsing import parse_seeds

    seed_list = parse_seeds(seeds)
    strengths = parse_strengths(strength, columns)
    check_psi(psi)
    check_choice(noise_mode, NOISE_MODES, "noise mode")
    sheet = out.with_suffix(".png")
    _refuse_existing(out, overwrite)
    _refuse_existing(sheet, overwrite)
    ensure_writable_dir(out.parent)
    G = load_generator(ckpt, prepare_device(resolve_device(device)))
    found = sefa_directions(G, _layers(layers, G, None), k)
    save_directions(out, found)
    ws = seeds_to_ws(G, seed_list, psi)
    cells = _edit_grid(G, ws, None, found.vectors, strengths, found.layers, noise_mode)  # [D, S, N, ...]
    rows = cells.permute(0, 2, 1, 3, 4, 5).flatten(0, 2)  # a row per direction and seed, strengths across
    if rows.shape[-1] > SHEET_TILE:  # 210 tiles of 1024 px would be a 0.7 GB sheet
        import torch.nn.functional as F

        rows = F.interpolate(rows.float(), size=(SHEET_TILE, SHEET_TILE), mode="area").round().to(rows.dtype)
    save_image(make_grid(rows, (len(strengths), k * len(seed_list))), sheet)
    values = ", ".join(f"{v:.3g}" for v in found.eigenvalues[:5].tolist())
    typer.echo(f"wrote {k} directions of ws {found.layers[0]}-{found.layers[-1]} to {out} (eigenvalues {values}"
               f"{', ...' if k > 5 else ''}) and the sheet {sheet}")


@app.command(
    rich_help_panel=PANEL_GENERATE,
    epilog=(
        "[bold]Examples[/bold]\n\n"
        "  fewshot edit ffhq256.pkl --w out/me/projected_w.npz --direction 0 --out me-edit.gif\n\n"
        "  fewshot edit runs/00003-vangogh --directions ffhq-directions.npz --w out/me/projected_w.npz "
        "--direction 2 --strength -4:4 --out vangogh-edit.png\n\n"
        "  fewshot edit G.safetensors --seeds 0-3 --direction 1 --layers 0-3 --out coarse.png"
    ),
)
def edit(
    ckpt: str = typer.Argument(..., help=CKPT_HELP),
    direction: int = typer.Option(..., "--direction", help="Which direction (0 = the top one)."),
    w: Optional[Path] = typer.Option(None, "--w", help="A projected_w.npz (fewshot project's or the official tool's)."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Seeds to edit instead of --w, e.g. 0-3."),
    directions_file: Optional[Path] = typer.Option(
        None, "--directions", help="A directions.npz (e.g. the base's, for a fine-tune); default: SeFa of CKPT."),
    strength: str = typer.Option("-3:3", "--strength", help="A range LOW:HIGH, or one strength."),
    frames: Optional[int] = typer.Option(None, "--frames", help="Strengths in the range (default 7 for a .png, 31 else)."),
    layers: Optional[str] = typer.Option(None, "--layers", help=LAYERS_HELP + " Default: the directions' own."),
    out: Path = typer.Option(Path("edit.gif"), "--out", help="edit.gif, edit.mp4 (the video extra) or a .png sheet."),
    psi: Optional[float] = typer.Option(
        None, "--psi", help=EDIT_PSI_HELP + " Default 0.7 for seeds, 1 (none) for --w, around CKPT's average w."),
    fps: float = typer.Option(15.0, "--fps", help="Frames per second of an animation."),
    noise_mode: str = typer.Option("const", "--noise-mode", help=NOISE_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
) -> None:
    """Edit projected ws or seeds along a SeFa direction: a .png sheet (strengths across) or an animation."""
    from ..editing import load_directions, sefa_directions
    from ..errors import FewshotError
    from ..image_output import animation_kind, ensure_writable_dir, save_image, write_gif, write_mp4
    from ..loading import load_generator, prepare_device, resolve_device
    from ..projector import load_projected_w, truncate_ws
    from ..synthesis import NOISE_MODES, check_choice, check_psi, check_truncation, make_grid, seeds_to_ws
    from .parsing import parse_seeds

    if (w is None) == (seeds is None):
        raise FewshotError("give either --w W.npz or --seeds S")
    seed_list = parse_seeds(seeds) if seeds is not None else None
    kind = animation_kind(out)
    if kind == "frames":
        raise FewshotError(f"--out {out}: write a .gif, an .mp4 or a .png sheet")
    strengths = parse_strengths(strength, frames or (7 if kind == "png" else 31))
    psi = check_psi(psi if psi is not None else (0.7 if seed_list is not None else 1.0))
    check_choice(noise_mode, NOISE_MODES, "noise mode")
    if direction < 0:
        raise FewshotError(f"--direction must be 0 or more, got {direction}")
    _refuse_existing(out, overwrite)
    ensure_writable_dir(out.parent)
    G = load_generator(ckpt, prepare_device(resolve_device(device)))
    found = load_directions(directions_file, G.w_dim) if directions_file else sefa_directions(G, None, direction + 1)
    if direction >= len(found.vectors):
        raise FewshotError(f"--direction {direction} is out of range ({len(found.vectors)} directions)")
    check_truncation(G, psi, None)
    if seed_list is not None:
        ws, noise = seeds_to_ws(G, seed_list, psi), None
    else:
        ws, noise = load_projected_w(w, G)
        ws = truncate_ws(G, ws.to(next(G.parameters()).device), psi)
    cells = _edit_grid(G, ws, noise, found.vectors[direction:direction + 1], strengths,
                       _layers(layers, G, found.layers), noise_mode)[0]  # [S, N, C, H, W]
    if kind == "png":  # a row per w, strengths across
        save_image(make_grid(cells.transpose(0, 1).flatten(0, 1), (len(strengths), ws.shape[0])), out)
    else:  # a frame per strength, the ws side by side
        import torch

        pictures = [torch.from_numpy(make_grid(frame, (frame.shape[0], 1))) for frame in cells]
        (write_gif if kind == "gif" else write_mp4)(pictures, out, fps)
    typer.echo(f"wrote {out}: direction {direction} at {len(strengths)} strength{'s' if len(strengths) > 1 else ''} "
               f"on {ws.shape[0]} w{'s' if ws.shape[0] > 1 else ''}")
