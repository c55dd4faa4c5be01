"""Command line: ``fewshot <command>``. Each module below adds its commands to the app."""

from __future__ import annotations

from .app import app, main

_REGISTERED = False


def register_commands() -> None:
    """Import the command modules (cheap: they defer torch to the command bodies)."""
    global _REGISTERED
    if _REGISTERED:
        return
    _REGISTERED = True
    from . import (
        checkpoints,  # noqa: F401
        doctor,  # noqa: F401
        generate,  # noqa: F401
        hub,  # noqa: F401
        metrics,  # noqa: F401
        train,  # noqa: F401
    )
    from .app import use_fewshot_commands

    use_fewshot_commands(app)


__all__ = ["app", "main", "register_commands"]
