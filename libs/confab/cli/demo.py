"""The demo workspace ``confab up`` creates once and prints."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def ensure_demo_workspace(info: dict[str, Any], data_dir: Path) -> dict[str, Any] | None:
    """Identity is not built yet: there is no workspace to create."""
    return None
