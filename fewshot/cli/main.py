"""``main``: the entry point, and the one place errors are rendered.

The command modules register themselves on :data:`fewshot.cli.app.app` when imported; ``register_commands``
imports them (cheap: they defer torch to the command bodies, so ``fewshot --help`` stays instant).
"""

from __future__ import annotations

import re
import sys

import typer

from .app import app, use_fewshot_commands

_REGISTERED = False


def register_commands() -> None:
    """Import the command modules, so each adds its commands to the app."""
    global _REGISTERED
    if _REGISTERED:
        return
    _REGISTERED = True
    from . import (
        checkpoints,  # noqa: F401
        doctor,  # noqa: F401
        editing,  # noqa: F401
        generate,  # noqa: F401
        hub,  # noqa: F401
        metrics,  # noqa: F401
        project,  # noqa: F401
        train,  # noqa: F401
        watch,  # noqa: F401
    )

    use_fewshot_commands(app)


_LONG_TOKEN = re.compile(r"\S{301,}")  # above any real path or URL a hint asks the user to copy


def _fit(text: str) -> str:
    # A message quotes what the user gave; a reference of thousands of characters (a pasted blob, a runaway
    # shell expansion) would fill the screen, so any run of 301+ non-space characters is shortened in the middle.
    return _LONG_TOKEN.sub(lambda m: _shortened(m.group(0), keep=160), text)


def render_error(message: str, hint: str | None = None) -> None:
    typer.secho(f"error: {_fit(message)}", fg=typer.colors.RED, err=True)
    if hint:
        typer.echo(f"hint: {_fit(hint)}", err=True)


def _shortened(name: object, keep: int = 100) -> str:
    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(name))
    if len(text) <= keep:
        return text
    return f"{text[:keep // 2]}...{text[-keep // 4:]} ({len(text):,} characters)"


def os_error_line(exc: OSError) -> str:
    """An operating-system failure on a path the user gave (a name too long, no permission, a full disk) as
    one line that says which path and what the system said, the path shortened when it is long."""
    reason = exc.strerror or str(exc)
    if exc.filename is None:
        return f"{reason}"
    target = f"'{_shortened(exc.filename)}'"
    if getattr(exc, "filename2", None) is not None:
        target += f" -> '{_shortened(exc.filename2)}'"
    return f"{reason}: {target}"


def _in_mro(exc: BaseException, class_name: str) -> bool:
    # Typer >= 0.2x vendors its own click (typer._click) while older ones use the click package:
    # their usage errors are different classes with the same names, so match by name.
    return any(cls.__name__ == class_name for cls in type(exc).__mro__)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, render a FewshotError as one line, exit non-zero."""
    from ..errors import FewshotError

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        register_commands()
        command = typer.main.get_command(app)
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
        if isinstance(exc, OSError) and exc.filename is not None:  # the system refused a path: say which, and why
            render_error(os_error_line(exc), "check the path (rerun with --debug for the traceback)")
            sys.exit(1)
        render_error(f"{type(exc).__name__}: {exc}", "rerun with --debug for the traceback")
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
