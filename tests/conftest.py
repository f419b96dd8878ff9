"""Shared fixtures: real Azurite for storage, the sandboxes over real HTTP."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.azurite import start_azurite  # noqa: E402


@pytest.fixture(scope="session")
def azurite():
    """One Azurite per test session, on free ports, in a temporary folder."""
    handle = start_azurite()
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def storage_connection_string(azurite) -> str:
    return azurite.connection_string
