"""The Typer application, its help style, and the panels the commands are grouped in.

Command modules register themselves on :data:`app`; they import torch inside the command
bodies so that ``fewshot --help`` stays instant.
"""

from __future__ import annotations

import re

import typer

from .. import __version__

PANEL_GENERATE = "Generate"
PANEL_TRAIN = "Train and evaluate"
PANEL_CHECKPOINTS = "Checkpoints and the Hub"
PANEL_SETUP = "Setup"

EPILOG = """[bold]Examples[/bold]

  fewshot train ./obama_100 --preset reg-ada

  fewshot sample runs/00000-obama_100-reg-ada --psi 0.7 --seeds 0-63

  fewshot interpolate G.safetensors --seeds 1,2,3 --out walk.gif

  fewshot convert network-snapshot-000100.pkl G.safetensors
"""

PANEL_PRESET_OPTIONS = "Options (override the preset)"


class FewshotCommand(typer.core.TyperCommand):
    """Typer's command with help that reads as a user expects.

    - a flag shows no value type (``--mirror/--no-mirror``, not ``--mirror <bool>``);
    - the usage line names arguments in capitals without braces (``fewshot sample [OPTIONS] CKPT``);
    - an option that overrides a preset value says so: ``[default: from preset]``."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        from rich.markup import escape

        for param in self.params:
            if getattr(param, "is_flag", False) and not getattr(param, "count", False):
                param.metavar = ""  # typer prints the metavar in place of the type; empty: nothing
            if getattr(param, "rich_help_panel", None) == PANEL_PRESET_OPTIONS and param.default is None:
                param.help = (param.help or "").rstrip() + " " + escape("[default: from preset]")

    def format_help(self, ctx: typer.core._click.Context, formatter: typer.core._click.HelpFormatter) -> None:
        # Help that names methods reads the registry now, when it is shown (not when the command is built, which
        # happens for every invocation: the registry's methods import torch).
        for param in self.params:
            if param.help and "{" in param.help:
                param.help = expand_help(param.help)
        super().format_help(ctx, formatter)

    def collect_usage_pieces(self, ctx: typer.core._click.Context) -> list[str]:
        pieces = super().collect_usage_pieces(ctx)
        return [_usage_piece(piece) for piece in pieces]


_PLACEHOLDER = re.compile(r"\{(methods|option):([^{}]+)\}")


def expand_help(text: str) -> str:
    """``{methods:augment}`` -> the registered augmentations; ``{option:regularizer:reg-dgm:estimator}`` -> that
    option's help (with its choices). Unknown placeholders stay as they are."""
    from dataclasses import fields

    from ..registry import FAMILIES, option_info

    def substitute(match: re.Match) -> str:
        kind, arg = match.groups()
        if kind == "methods":
            family = FAMILIES.get(arg)
            return " | ".join(family.names()) if family else match.group(0)
        family_name, method, name = (arg.split(":") + ["", "", ""])[:3]
        family = FAMILIES.get(family_name)
        if family is None or method not in family:
            return match.group(0)
        found = [f for f in fields(family.get(method).options) if f.name == name]
        if not found:
            return match.group(0)
        info = option_info(found[0])
        choices = info.choices() if callable(info.choices) else info.choices
        return info.help + (f" ({' | '.join(choices)})" if choices else "")

    return _PLACEHOLDER.sub(substitute, text)


def _usage_piece(piece: str) -> str:
    # typer writes a required argument as {name} and an optional one as [name]
    if piece.startswith("{") and piece.rstrip(".").endswith("}"):
        return piece.replace("{", "").replace("}", "").upper()
    if piece.startswith("[") and piece != "[OPTIONS]" and piece.rstrip(".").endswith("]"):
        return piece.upper()
    return piece


def use_fewshot_commands(typer_app: typer.Typer) -> None:
    """Give every command of ``typer_app`` (and of its sub-apps) the :class:`FewshotCommand` help."""
    for info in typer_app.registered_commands:
        if info.cls in (None, typer.core.TyperCommand):  # typer fills in its own class when none is given
            info.cls = FewshotCommand
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            use_fewshot_commands(group.typer_instance)


app = typer.Typer(
    name="fewshot",
    help="Few-shot GAN fine-tuning: start from a pretrained StyleGAN2 and adapt it to 25-1000 images.",
    epilog=EPILOG,
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"fewshot {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    """Few-shot GAN fine-tuning with StyleGAN2."""
