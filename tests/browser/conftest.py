"""Debian's headless Chromium driven by Playwright, for every browser test."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connections
from playwright.sync_api import Browser, sync_playwright

# The project's ASGI application under uvicorn, and alice's token (member of acme).
from tests.events.conftest import live_asgi, token  # noqa: F401

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def browser(monkeypatch) -> Iterator[Browser]:
    assert CHROMIUM.exists(), "Debian's chromium is missing: scripts/test installs it"
    # Playwright's sync API runs an event loop in this thread; the ORM calls the test makes
    # between browser steps are still plain synchronous calls.
    monkeypatch.setitem(os.environ, "DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()
        # Django's connections are context-local: the ones opened while Playwright's loop ran
        # belong to that context, and would keep the test database from being dropped.
        connections.close_all()
