"""TEMPORARY (lead's branch only, replaced by the metrics' own files): metric names in the one registry."""

from __future__ import annotations

from ..registry import metrics
from .compute import METRIC_NAMES

for _name in METRIC_NAMES:
    metrics.register(_name, help=_name, lower_is_better=_name in ("fid", "kid"))(_name)
