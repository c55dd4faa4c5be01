"""Checkpoint commands: convert official pickles and rosinality .pt files to bundles (and back), inspect one."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .app import PANEL_CHECKPOINTS, app

CONVERT_TARGETS = ("fewshot", "rosinality")


@app.command(
    rich_help_panel=PANEL_CHECKPOINTS,
    epilog="[bold]Examples[/bold]:\n\n"
    "  fewshot convert network-snapshot-000100.pkl snapshot.safetensors\n\n"
    "  fewshot convert 550000.pt base.safetensors        [dim]# a rosinality/stylegan2-pytorch checkpoint[/dim]\n\n"
    "  fewshot convert runs/00000-obama/final.safetensors obama.pt --to rosinality   [dim]# for e4e, pSp, CDC[/dim]",
)
def convert(
    src: str = typer.Argument(
        ..., help="An official stylegan2-ada-pytorch .pkl, a rosinality .pt, a fewshot bundle (with --to rosinality), "
        "or a name / hf://... / URL (fetched and converted)."
    ),
    dst: Path = typer.Argument(..., help="Where to write the safetensors bundle (or the .pt, with --to rosinality)."),
    to: str = typer.Option("fewshot", "--to", help="Output format: fewshot (a safetensors bundle) or rosinality "
                           "(a .pt dict of g_ema, g, d, latent_avg, args, as rosinality/stylegan2-pytorch saves)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace DST if it exists."),
) -> None:
    """Convert an official pickle or a rosinality .pt to a safetensors bundle (no code from the file runs),
    or a fewshot checkpoint back to rosinality's format."""
    from ..checkpoint import FOREIGN_KINDS, convert_pickle, detect_format, export_rosinality
    from ..errors import FewshotError

    if to not in CONVERT_TARGETS:
        raise FewshotError(f"unknown --to {to!r}; choose {' or '.join(CONVERT_TARGETS)}")
    if dst.exists() and not overwrite:
        raise FewshotError(f"{dst} exists", hint="pass --overwrite to replace it")
    if to == "rosinality":
        from ..loading import resolve_reference

        for note in export_rosinality(resolve_reference(src), dst):
            typer.echo(note, err=True)
        typer.echo(f"wrote {dst} (rosinality/stylegan2-pytorch format: torch.load(path)['g_ema'])")
        return
    if not Path(src).exists():  # a name, hf:// reference or URL: the hub resolves and converts it
        import shutil

        from ..hub import resolve_checkpoint

        shutil.copyfile(resolve_checkpoint(src), dst)
        typer.echo(f"wrote {dst}")
        return
    src = Path(src)
    if detect_format(src) not in FOREIGN_KINDS:
        raise FewshotError(f"{src} is neither an official pickle nor a rosinality .pt "
                           "(fewshot convert reads those; bundles convert with --to rosinality)")
    convert_pickle(src, dst)
    typer.echo(f"wrote {dst}")


def _run_lines(run: dict) -> list[str]:
    """A run folder in a few lines: recipe, how far it got, the last tick, the best metric, what to do next."""
    lines = [f"{run['path']}  [run folder]"]
    recipe = f"  preset {run['preset'] or '-'}, data {run['data'] or '-'}"
    note = run.get("base_note")
    if run["base"]:
        recipe += f", base {run['base']}" + (f" ({note})" if note and note != "--base" else "")
    elif note is not None or run["preset"]:
        recipe += ", from scratch" + (f" ({note})" if note else "")
    lines.append(recipe)
    target = run["target_kimg"]
    progress = f"  trained {run['done_kimg']:.3f}" + (f" of {target:g} kimg" if target else " kimg")
    tick = run["last_tick"]
    if tick:
        shown = ("loss_G", "loss_D", "aug_p", "sec_per_kimg")
        progress += f" (tick {tick.get('tick')}: " + ", ".join(
            f"{k} {tick[k]:.4g}" for k in shown if isinstance(tick.get(k), (int, float))) + ")"
    lines.append(progress)
    if run["best"]:
        best = run["best"]
        lines.append(f"  best {best['metric']} {best['value']:.4g} at {best['kimg']} kimg")
    snaps = run["snapshots"]
    files = ([f"{len(snaps)} snapshot(s), newest {snaps[-1]}"] if snaps else ["no snapshot"]) + run["exports"]
    lines.append("  " + "; ".join(files))
    if run.get("training_now"):
        pid = run["training_now"]
        lines.append("  being trained now" + (f" by pid {pid}" if pid > 0 else " by another process"))
    elif snaps and target and run["done_kimg"] < target:
        lines.append(f"  continue: fewshot train --resume {run['path']}")
    return lines


def _format_count(n: int) -> str:
    return f"{n:,}"


def _classes(result: dict) -> dict | None:
    """A class-conditional generator's classes: their count, and names when the training run recorded them
    (folder labels). None for an unconditional generator and for DISP's (conditioned on priors, not classes)."""
    spec = (result["networks"].get("G_ema") or result["networks"].get("G") or {}).get("init_kwargs") or {}
    training = result.get("training") or {}
    c_dim = int(spec.get("c_dim") or 0)
    if c_dim == 0 or training.get("disp"):
        return None
    labels = training.get("labels") or {}
    out: dict = {"count": c_dim}
    if labels.get("names"):
        out["names"] = list(labels["names"])
    if labels.get("source"):
        out["trained_with"] = labels["source"]
    return out


def _describe_spec(class_name: str, kw: dict) -> str:
    if class_name == "Generator":
        syn = kw.get("synthesis_kwargs", {})
        mapping = kw.get("mapping_kwargs", {})
        return (
            f"z_dim={kw.get('z_dim')} c_dim={kw.get('c_dim')} w_dim={kw.get('w_dim')} "
            f"mapping_layers={mapping.get('num_layers', 8)} channel_base={syn.get('channel_base', 32768)} "
            f"channel_max={syn.get('channel_max', 512)} architecture={syn.get('architecture', 'skip')} "
            f"num_fp16_res={syn.get('num_fp16_res', 0)} conv_clamp={syn.get('conv_clamp')}"
        )
    if class_name == "StyleGAN3Generator":  # synthesis kwargs at the top level, as the official _init_kwargs
        mapping = kw.get("mapping_kwargs", {})
        config = "R" if kw.get("use_radial_filters") else "T"
        return (
            f"config={config} z_dim={kw.get('z_dim')} c_dim={kw.get('c_dim')} w_dim={kw.get('w_dim')} "
            f"mapping_layers={mapping.get('num_layers', 2)} channel_base={kw.get('channel_base', 32768)} "
            f"channel_max={kw.get('channel_max', 512)} conv_kernel={kw.get('conv_kernel', 3)} "
            f"num_fp16_res={kw.get('num_fp16_res', 4)} conv_clamp={kw.get('conv_clamp', 256)}"
        )
    return (
        f"c_dim={kw.get('c_dim')} channel_base={kw.get('channel_base', 32768)} "
        f"channel_max={kw.get('channel_max', 512)} architecture={kw.get('architecture', 'resnet')} "
        f"mbstd_group_size={(kw.get('epilogue_kwargs') or {}).get('mbstd_group_size', 4)} "
        f"freeze_layers={(kw.get('block_kwargs') or {}).get('freeze_layers', 0)}"
    )


@app.command(
    rich_help_panel=PANEL_CHECKPOINTS,
    epilog="[bold]Example[/bold]: fewshot info runs/00000-obama_100/best.safetensors",
)
def info(
    ckpt: str = typer.Argument(..., help="A fewshot bundle, an official pickle, a name, hf://org/repo/file[@rev] or a URL."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Show architecture, resolution, parameter counts and provenance (bundles: header only)."""
    from ..checkpoint import detect_format, read_header
    from ..errors import FewshotError
    from ..pathkind import path_kind

    run = None
    on_disk = path_kind(Path(ckpt))
    if on_disk == "folder":  # a run folder: its progress, then the checkpoint it stands for
        from ..loading import resolve_run_folder
        from ..train.run_dir import describe_run

        run = describe_run(Path(ckpt))
        ckpt = resolve_run_folder(Path(ckpt))
    elif on_disk is None:  # a name, hf:// reference or URL: resolved (and converted) through the hub
        from ..hub import resolve_checkpoint

        ckpt = resolve_checkpoint(ckpt)
    ckpt = Path(ckpt)
    kind = detect_format(ckpt)
    if kind == "safetensors":
        header = read_header(ckpt)
        nets = {
            name: {"class": spec.class_name, "init_kwargs": spec.init_kwargs, "params": header.num_params(name)}
            for name, spec in header.specs.items()
        }
        result = {
            "path": str(ckpt), "format": f"fewshot bundle v{header.format_version}",
            "written_by": f"fewshot {header.fewshot_version}", "networks": nets,
            "provenance": header.provenance, "training": header.training or {},
        }
    elif kind in ("pickle", "torch-zip"):
        from ..checkpoint import bundle_from_foreign

        bundle, training = bundle_from_foreign(ckpt, kind)
        nets = {
            name: {
                "class": spec.class_name, "init_kwargs": spec.init_kwargs,
                "params": sum(t.numel() for t in bundle.networks[name].state_dict().values()),
            }
            for name, spec in bundle.specs.items()
        }
        result = {
            "path": str(ckpt), "format": f"{bundle.provenance['source_format']} (read safely)", "networks": nets,
            "provenance": bundle.provenance, "training": training,
        }
    else:
        raise FewshotError(f"{ckpt} is not a checkpoint (neither a fewshot bundle, an official pickle nor a rosinality .pt)")

    if run is not None:
        result["run"] = run
    classes = _classes(result)
    if classes is not None:
        result["classes"] = classes
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    if run is not None:
        for line in _run_lines(run):
            typer.echo(line)
    typer.echo(f"{result['path']}  [{result['format']}]")
    for name, net in result["networks"].items():
        kw = net["init_kwargs"]
        res = kw.get("img_resolution")
        typer.echo(f"  {name:6s} {net['class']:13s} {res}x{res}x{kw.get('img_channels')}  "
                   f"{_format_count(net['params'])} tensor values")
        typer.echo(f"         {_describe_spec(net['class'], kw)}")
    provenance = {k: v for k, v in result["provenance"].items() if k != "truncation"}
    if provenance:
        typer.echo("  provenance: " + ", ".join(f"{k}={v}" for k, v in provenance.items()))
    if any(net["class"] == "Generator" for net in result["networks"].values()):
        # The centre --trunc pulls w towards; rosinality checkpoints say which one they were given.
        typer.echo("  truncation: " + result["provenance"].get(
            "truncation", "w_avg = mapping.w_avg, the running mean of w kept during training (official convention)"))
    training = result.get("training") or {}
    if "augment_p" in training:
        typer.echo(f"  augment p: {training['augment_p']:.4f}")
    if classes is not None:
        names = classes.get("names")
        typer.echo(f"  classes: {classes['count']} (" + (", ".join(f"{k} {n}" for k, n in enumerate(names)) if names
                   else "names not recorded") + f"; sample one with --class N{' or a name' if names else ''})")
