"""Shared fixtures for the whole test suite."""
import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared datasets folder ($WEIGHTZIP_DATA); tests needing real data skip without it."""
    root = os.environ.get("WEIGHTZIP_DATA")
    if not root or not Path(root).is_dir():
        pytest.skip("real datasets not available: set WEIGHTZIP_DATA=/path/to/shared/data")
    return Path(root)
