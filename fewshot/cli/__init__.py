"""Command line: ``fewshot <command>``. Each module below adds its commands to the app."""

from __future__ import annotations

from .app import app
from .main import main, register_commands

__all__ = ["app", "main", "register_commands"]
