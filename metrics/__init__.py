"""Observability: the one metrics registry (`registry.Metrics`), process stats, the JSON snapshot,
and the `/status` dashboard's page and assets (`static/`). Anyone may import this package.
"""

from metrics.registry import PREFIX, Metrics
from metrics.snapshot import build_snapshot

__all__ = ["PREFIX", "Metrics", "build_snapshot"]
