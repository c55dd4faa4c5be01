"""The only module that reads the environment: cache folders, offline mode, ops choice.

Everything else receives these values as arguments or asks this module.
"""

from __future__ import annotations

import os
from pathlib import Path

OPS_CHOICES = ("auto", "compiled", "reference")


def home_dir() -> Path:
    """fewshot's cache root: ``$FEWSHOT_HOME``, else ``$XDG_CACHE_HOME/fewshot``, else ``~/.cache/fewshot``."""
    if os.environ.get("FEWSHOT_HOME"):
        return Path(os.environ["FEWSHOT_HOME"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "fewshot"


def checkpoints_dir() -> Path:
    return home_dir() / "checkpoints"


def weights_dir() -> Path:
    return home_dir() / "weights"


def ops_build_dir() -> Path:
    return home_dir() / "ops"


def torch_home() -> Path:
    """Where torchvision/facenet keep their downloads (``$TORCH_HOME``, default ``~/.cache/torch``)."""
    return Path(os.environ.get("TORCH_HOME") or Path.home() / ".cache" / "torch").expanduser()


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def offline() -> bool:
    """True when downloads are forbidden: ``FEWSHOT_OFFLINE`` or ``HF_HUB_OFFLINE`` is set."""
    return _truthy(os.environ.get("FEWSHOT_OFFLINE")) or _truthy(os.environ.get("HF_HUB_OFFLINE"))


def ops_choice() -> str:
    """``FEWSHOT_OPS``: auto (compiled when it builds, else reference), compiled, or reference."""
    value = (os.environ.get("FEWSHOT_OPS") or "auto").strip().lower()
    if value not in OPS_CHOICES:
        from .errors import FewshotError

        raise FewshotError(f"FEWSHOT_OPS must be one of {', '.join(OPS_CHOICES)}, got {value!r}")
    return value
