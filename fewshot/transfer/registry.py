"""Name -> transfer class. A method registers itself with :func:`register_transfer`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import Transfer

TRANSFERS: dict[str, type[Transfer]] = {}


def register_transfer(cls: type[Transfer]) -> type[Transfer]:
    TRANSFERS[cls.name] = cls
    return cls
