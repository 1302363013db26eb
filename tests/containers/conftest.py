"""Fixtures for tests that run real containers: `busybox_ref` and `python_ref` name the test images, built (or
found) once collection is done, outside any test's timeout, for the tests that request them."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.containers.images import ContainerError, busybox_image, python_image

IMAGES: dict[str, Callable[[], str]] = {"busybox_ref": busybox_image, "python_ref": python_image}
"""Each fixture and the function that makes its image (a cold Python image takes about two minutes)."""

_made: dict[str, str | ContainerError] = {}


def pytest_collection_finish(session: pytest.Session) -> None:
    """Make the images the selected tests request now, not inside the first test's timeout."""
    if session.config.option.collectonly:
        return
    requested = {name for item in session.items for name in getattr(item, "fixturenames", ())}
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for fixture, make in IMAGES.items():
        if fixture not in requested or fixture in _made:
            continue
        started = time.monotonic()
        try:
            _made[fixture] = make()
        except ContainerError as exc:
            _made[fixture] = exc
            continue
        if reporter is not None:
            reporter.write_line(f"containers: {_made[fixture]} ({time.monotonic() - started:.0f}s)")


def _image(fixture: str) -> str:
    made = _made.get(fixture)
    if isinstance(made, ContainerError):
        pytest.fail(f"the test image could not be made: {made}", pytrace=False)
    return made if made is not None else IMAGES[fixture]()


@pytest.fixture(scope="session")
def busybox_ref() -> str:
    """`tests.containers.images.busybox_image()`: busybox httpd on $PORT with the CGI scripts."""
    return _image("busybox_ref")


@pytest.fixture(scope="session")
def python_ref() -> str:
    """`tests.containers.images.python_image()`: Debian's python3, also tagged python:3.7-slim."""
    return _image("python_ref")
