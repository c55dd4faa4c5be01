"""What a user's reference names on disk, without an exception for names that cannot be paths."""

from __future__ import annotations

from pathlib import Path


def path_kind(path: Path) -> str | None:
    """``"file"``, ``"folder"`` or None when ``path`` names nothing on disk.

    pathlib hides only "no such file" and its kin; a reference too long to be a path (ENAMETOOLONG, a long
    hf:// or URL string, say), a NUL byte or an unreadable parent raises. None of them names a local file,
    so the caller goes on to read the reference as a name, a URL or a hub address and errs there, in one line.
    """
    try:
        return "file" if path.is_file() else "folder" if path.is_dir() else None
    except (OSError, ValueError):
        return None
