"""Shared test setup: the `root` marker, skipped without privileges unless CI demands them."""

from __future__ import annotations

import os

import pytest

REQUIRE_ROOT = os.environ.get("TOPOCTL_REQUIRE_ROOT_TESTS") == "1"


def have_root() -> bool:
    from topoctl.kernel.privileges import missing_capabilities

    return not missing_capabilities()


def pytest_collection_modifyitems(config, items):
    if have_root():
        return
    for item in items:
        if "root" in item.keywords:
            if not REQUIRE_ROOT:
                item.add_marker(pytest.mark.skip(reason="needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN)"))


@pytest.fixture(autouse=True)
def _fail_without_root(request):
    # With TOPOCTL_REQUIRE_ROOT_TESTS=1 (CI), a root test that cannot run is a failure, not a skip.
    if "root" in request.keywords and not have_root() and REQUIRE_ROOT:
        pytest.fail("root integration test cannot run: not root, and TOPOCTL_REQUIRE_ROOT_TESTS=1")


def pytest_terminal_summary(terminalreporter):
    # Where the signal trials of test_interrupts landed, for the record of each run.
    import sys

    module = sys.modules.get("tests.integration.test_interrupts")
    summary = getattr(module, "SUMMARY", None)
    if summary:
        terminalreporter.write_line(f"signal trials: {summary}")
