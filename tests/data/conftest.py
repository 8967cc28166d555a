"""Fixtures for the data tests: nothing is ever downloaded, and home points at a temp dir."""
from __future__ import annotations

import pytest

from weightzip.data import files


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Downloads are disabled (WEIGHTZIP_NO_DOWNLOAD=1) and any attempt fails the test."""
    monkeypatch.setenv("WEIGHTZIP_NO_DOWNLOAD", "1")
    monkeypatch.delenv("WEIGHTZIP_NO_MD5", raising=False)

    def refuse(ds, dest):  # pragma: no cover - only runs if a test goes wrong
        raise AssertionError(f"test tried to download {ds.key} into {dest}")

    prev = files.set_downloader(refuse)
    yield
    files.set_downloader(prev)


@pytest.fixture
def fake_home(tmp_path, monkeypatch):
    """An empty home directory, so ~/.cache/weightzip is a known, empty place."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home
