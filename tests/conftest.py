"""Shared fixtures. Real-Asterisk tests (``tests/asterisk/``) use one sandbox per session.

Outside CI a machine without root or debootstrap skips them with the reason; under ``CI=true``
they fail instead, so CI can never pass without exercising the real Asterisk.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from reffection_ari.errors import SandboxError
from reffection_ari.sandbox import Sandbox

pytest_plugins = ["tests.leakguard"]

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent.name == "asterisk":
            item.add_marker(pytest.mark.asterisk)


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    box = Sandbox()
    try:
        box.ensure_built()
    except SandboxError as exc:
        if IN_CI:
            pytest.fail(f"Asterisk sandbox unavailable under CI: [{exc.code}] {exc.message}")
        pytest.skip(f"Asterisk sandbox unavailable: [{exc.code}] {exc.message}")
    with box.lease():
        yield box


@pytest.fixture
def ari_app() -> str:
    """A unique ARI application name: a second socket with the same name would steal the app."""
    return f"t-{uuid.uuid4().hex[:10]}"
