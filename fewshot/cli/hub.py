"""Hub commands: download checkpoints, manage frozen-network weights, push a fine-tuned model."""

from __future__ import annotations

from pathlib import Path

import typer

from .app import PANEL_CHECKPOINTS, PANEL_SETUP, app

weights_app = typer.Typer(
    help="Frozen-network weights (Inception for FID, VGG-16, ResNets, CLIP, FaceNet): list, fetch, import, verify.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
app.add_typer(
    weights_app, name="weights", rich_help_panel=PANEL_SETUP,
    epilog="[bold]Examples[/bold]\n\n  fewshot weights list\n\n  fewshot weights fetch inception-v3-fid\n\n"
    "  fewshot weights import resnet18 ~/Downloads/resnet18-f37072fd.pth",
)


def _parse_seeds(text: str) -> list[int]:
    from ..errors import FewshotError

    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise FewshotError(f"bad seeds {text!r}", hint="write e.g. 0-7 or 1,5,9") from None
    if not seeds or any(s < 0 or s >= 2**32 for s in seeds):
        raise FewshotError(f"bad seeds {text!r}: need at least one seed in [0, 2^32)")
    return seeds


@app.command(
    rich_help_panel=PANEL_CHECKPOINTS,
    epilog="[bold]Examples[/bold]\n\n  fewshot download ffhq256\n\n"
    "  fewshot download hf://org/repo/network.pkl@v1\n\n"
    "  fewshot download https://example.org/network-snapshot-000100.pkl\n\n  fewshot download --list",
)
def download(
    ref: str = typer.Argument(None, help="A name (see --list), hf://org/repo/file[@revision], an https:// URL or a file."),
    list_names: bool = typer.Option(False, "--list", help="List the named checkpoints and exit."),
    offline: bool = typer.Option(False, "--offline", help="Use only the caches (same as FEWSHOT_OFFLINE=1)."),
) -> None:
    """Fetch a pretrained checkpoint once (verified, converted to safetensors) and print its local path."""
    from ..errors import FewshotError
    from ..hub import checkpoint_registry, converted_path, resolve_checkpoint, url_cache_path

    if list_names:
        for name, entry in checkpoint_registry().items():
            cached = url_cache_path(entry.url).exists() if entry.url else False
            typer.echo(f"{name:12s} {entry.resolution or '?':>5}px  {entry.config or '?':9s} "
                       f"{'cached' if cached else '      '}  {entry.description}")
        return
    if not ref:
        raise FewshotError("missing REF", hint="fewshot download ffhq256 (or --list to see the names)")
    path = resolve_checkpoint(ref, offline=True if offline else None)
    typer.echo(str(path))
    if path.parent == converted_path("x").parent:
        typer.echo(f"converted from the official pickle; source sha256 {path.stem}", err=True)


@weights_app.command("list", epilog="[bold]Example[/bold]: fewshot weights list")
def weights_list() -> None:
    """Show every known weights file, its source, how it is verified and whether it is present."""
    from ..weights import find_local_weights, weights_registry

    for name, entry in weights_registry().items():
        try:
            found, _ = find_local_weights(entry)
        except Exception:  # a broken env override shows up in `verify`; list stays informative
            found = None
        typer.echo(f"{name:18s} {'present' if found else 'missing':8s} {entry.filename}")
        typer.echo(f"{'':18s} {entry.used_for}; {entry.verification}")
        typer.echo(f"{'':18s} {found or entry.url}")


@weights_app.command("fetch", epilog="[bold]Example[/bold]: fewshot weights fetch resnet18")
def weights_fetch(
    name: str = typer.Argument(..., help="Weights name, see `fewshot weights list`."),
    path: Path = typer.Option(None, "--path", help="Use and verify this file instead of searching."),
) -> None:
    """Find (or download) and verify the weights; print the local path."""
    from ..weights import resolve_weights

    typer.echo(str(resolve_weights(name, path)))


@weights_app.command("import", epilog="[bold]Example[/bold]: fewshot weights import inception-v3-fid pt_inception-2015-12-05-6726825d.pth")
def weights_import(
    name: str = typer.Argument(..., help="Weights name, see `fewshot weights list`."),
    file: Path = typer.Argument(..., help="A copy of the file obtained elsewhere (e.g. on a machine with network)."),
) -> None:
    """Verify a weights file you downloaded yourself and copy it into fewshot's cache (for offline use)."""
    from ..weights import import_weights

    typer.echo(f"imported {import_weights(name, file)}")


@weights_app.command("verify", epilog="[bold]Example[/bold]: fewshot weights verify inception-v3-fid vgg16")
def weights_verify(
    names: list[str] = typer.Argument(None, help="Names to check (default: all)."),
) -> None:
    """Re-hash the local weights files; exit 1 when a requested file is missing or does not match."""
    from ..errors import FewshotError
    from ..weights import weights_registry, weights_status

    wanted = names or list(weights_registry())
    bad = []
    for name in wanted:
        status = weights_status(name)
        typer.echo(f"{name:18s} {status.state:10s} {status.path or ''}" + (f"  ({status.detail})" if status.detail else ""))
        if status.state == "mismatch" or (names and status.state == "missing"):
            bad.append(name)
    if bad:
        raise FewshotError(f"weights not usable: {', '.join(bad)}",
                           hint="`fewshot weights fetch NAME` where there is network, or `fewshot weights import NAME FILE`")


@app.command(
    rich_help_panel=PANEL_CHECKPOINTS,
    epilog="[bold]Examples[/bold]\n\n  fewshot push runs/00000-obama_100 --repo me/stylegan2-obama\n\n"
    "  fewshot push best.safetensors --repo me/obama --dry-run ./to_upload",
)
def push(
    ckpt_or_run: Path = typer.Argument(..., help="A fewshot bundle, or a run folder (its best/latest checkpoint)."),
    repo: str = typer.Option(..., "--repo", help="Target model repository, user/name."),
    private: bool = typer.Option(False, "--private", help="Create the repository as private."),
    dry_run: Path = typer.Option(None, "--dry-run", help="Write the folder that would be uploaded here, upload nothing."),
    base: str = typer.Option(None, "--base", help="Base model reference for the card (default: from the checkpoint)."),
    preset: str = typer.Option(None, "--preset", help="Preset name for the card (default: from the run)."),
    data_size: int = typer.Option(None, "--data-size", help="Number of training images (default: from the run)."),
    licence: str = typer.Option(None, "--license", help="Licence (default: inherited from the base model)."),
    seeds: str = typer.Option("0-7", "--seeds", help="Seeds of the sample grid."),
) -> None:
    """Upload a fine-tuned checkpoint with config.json, a sample grid and a model card to the Hugging Face Hub."""
    from ..hub import push_to_hub

    where = push_to_hub(ckpt_or_run, repo, private=private, dry_run_dir=dry_run, seeds=_parse_seeds(seeds),
                        base=base, preset=preset, data_size=data_size, licence=licence)
    typer.echo(f"wrote {where}" if dry_run else f"pushed to {where}")
