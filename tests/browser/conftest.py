"""The customer portal in a real browser: Playwright driving Chromium (Debian's package
`chromium`, which .ci/run installs with apt-get when missing). Skipped with the reason where
either is missing, unless BILLING_REQUIRE_BROWSER=1 (as .ci/run sets). Screenshots go to
artifacts/screenshots/ (BILLING_ARTIFACTS overrides the folder)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def unavailable() -> str | None:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[test]')"
    if chromium() is None:
        return "no Chromium on this machine (apt-get install chromium)"
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    reason = unavailable()
    if reason is not None:
        if os.environ.get("BILLING_REQUIRE_BROWSER") == "1":
            pytest.fail(f"the browser suite is required here: {reason}")
        pytest.skip(f"browser suite: {reason}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium(),
                                     args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def screenshots(request: pytest.FixtureRequest) -> Path:
    folder = Path(os.environ.get("BILLING_ARTIFACTS", ROOT / "artifacts")) / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
