"""Fixtures for tests/devices: fixture filesystem roots, tiny export folders, the opt-in qemu marker."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"
sys.path.insert(0, str(HERE))

import devices_tinymodel

# Short workloads keep the suite fast: each measurement is a fresh process of about 0.5 s.
FAST = ["--prompt-len", "16", "--decode-tokens", "8", "--warmup", "0", "--repeats", "1"]


def pytest_collection_modifyitems(config, items):
    """ARM64 emulation checks run only when asked for: ``pytest -m qemu``."""
    markexpr = config.getoption("-m") or ""
    if "qemu" in markexpr and "not qemu" not in markexpr:
        return
    skip = pytest.mark.skip(reason="ARM64 QEMU check is opt-in: run pytest -m qemu")
    for item in items:
        if "qemu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def fixture_root():
    """``fixture_root("rpi5")`` -> the fake filesystem root of that device."""

    def get(name: str) -> Path:
        root = FIXTURES / name
        assert root.is_dir(), root
        return root

    return get


@pytest.fixture(scope="session")
def tiny_exports(tmp_path_factory):
    """Pristine tiny export folders (do not modify): nbits (ort-cpu), dense (fp32), portable, slow, fp16kv."""
    base = tmp_path_factory.mktemp("exports")
    return {
        "nbits": devices_tinymodel.write_folder(base / "nbits", "nbits"),
        "dense": devices_tinymodel.write_folder(base / "dense", "dense"),
        "portable": devices_tinymodel.write_folder(base / "portable", "portable"),
        "slow": devices_tinymodel.write_folder(base / "slow", "nbits", accuracy_level=0),
        "fp16kv": devices_tinymodel.write_folder(base / "fp16kv", "dense", kv_dtype="float16"),
    }


@pytest.fixture
def export_copy(tiny_exports, tmp_path):
    """``export_copy("nbits")`` -> a private copy the test may modify (plans, tampering)."""

    def get(name: str) -> Path:
        dst = tmp_path / name
        shutil.copytree(tiny_exports[name], dst)
        return dst

    return get
