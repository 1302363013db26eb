"""The README's container quick start: `examples/helloworld-python` built into an image from its own
Dockerfile and served by `serving up service-image.yaml` (only `image:`). The Dockerfile's
`FROM python:3.11-slim` comes from a registry this machine cannot reach, so the copy built here starts from
the local Debian Python base."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from tests.containers.images import build_image
from tests.integration.conftest import ROOT, ServingUp

pytestmark = pytest.mark.containers

EXAMPLE = ROOT / "examples" / "helloworld-python"


@pytest.mark.timeout(600)
@pytest.mark.usefixtures("python_ref")
async def test_the_example_runs_from_its_image(tmp_path: Path) -> None:
    context = tmp_path / "helloworld-python"
    shutil.copytree(EXAMPLE, context)
    dockerfile = context / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace("FROM python:3.11-slim", "FROM python:3.7-slim"))
    image = "localhost/helloworld-python"
    await asyncio.to_thread(build_image, "podman", context, image)
    assert f"image: {image}\n" in (context / "service-image.yaml").read_text()

    up = ServingUp(tmp_path, [context / "service-image.yaml"], ["--no-live"])
    try:
        await up.start()
        assert await up.get("helloworld-python", timeout=None) == (200, "Hello Python Sample v1!\n")
    finally:
        assert await up.stop() == 0
