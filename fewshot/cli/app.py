"""The Typer application and the one place errors are rendered.

Command modules register themselves on :data:`app`; they import torch inside the command
bodies so that ``fewshot --help`` stays instant.
"""

from __future__ import annotations

import sys

import typer

from .. import __version__

PANEL_GENERATE = "Generate"
PANEL_TRAIN = "Train and evaluate"
PANEL_CHECKPOINTS = "Checkpoints and the Hub"
PANEL_SETUP = "Setup"

EPILOG = """[bold]Examples[/bold]

  fewshot train ./obama_100 --preset reg-ada

  fewshot sample runs/00000-obama_100/best.safetensors --psi 0.7 --seeds 0-63

  fewshot interpolate G.safetensors --seeds 1,2,3 --out walk.gif

  fewshot convert network-snapshot-000100.pkl G.safetensors
"""

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


def render_error(message: str, hint: str | None = None) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    if hint:
        typer.echo(f"hint: {hint}", err=True)


def _in_mro(exc: BaseException, class_name: str) -> bool:
    # Typer >= 0.2x vendors its own click (typer._click) while older ones use the click package:
    # their usage errors are different classes with the same names, so match by name.
    return any(cls.__name__ == class_name for cls in type(exc).__mro__)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, render a FewshotError as one line, exit non-zero."""
    from ..errors import FewshotError
    from . import register_commands

    register_commands()
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    command = typer.main.get_command(app)
    try:
        code = command.main(args=args, prog_name="fewshot", standalone_mode=False)
    except FewshotError as exc:
        if debug:
            raise
        render_error(exc.message, exc.hint)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # an unexpected failure still gets one line unless --debug
        if _in_mro(exc, "ClickException"):  # usage errors: click's own message and exit code
            if exc.format_message().strip():  # bare `fewshot` already printed the help; nothing to add
                exc.show()
            sys.exit(exc.exit_code)
        if _in_mro(exc, "Abort"):
            typer.echo("aborted", err=True)
            sys.exit(130)
        if debug:
            raise
        render_error(f"{type(exc).__name__}: {exc}", "rerun with --debug for the traceback")
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
