"""The registry-free test images work: busybox serves its page, CGI and environment and stops on SIGTERM;
the Python image runs python3 and builds a `FROM python:3.7-slim` Dockerfile."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from tests.containers.images import build_image, runtime_argv
from tests.containers.running import run_once, served

pytestmark = pytest.mark.containers


def test_busybox_serves_its_page_and_the_environment_it_was_given(busybox_ref: str) -> None:
    with served(busybox_ref, env={"FOO": "bar"}) as container:
        assert container.get("/") == (200, "hello from busybox\n")
        status, body = container.get("/cgi-bin/env")
        assert status == 200
        assert {"FOO=bar", "PORT=8080"} <= set(body.splitlines())


def test_busybox_cgi_files_and_sleep_and_prompt_stop(busybox_ref: str) -> None:
    with served(busybox_ref, port=9090) as container:
        assert container.get("/cgi-bin/file?/www/index.html") == (200, "hello from busybox\n")
        assert container.get("/cgi-bin/file?/no/such/file")[0] == 404
        assert container.get("/cgi-bin/sleep?0.2") == (200, "slept\n")
        assert container.stop() < 5  # httpd ends on SIGTERM; a container ignoring it would take 10 s
        assert container.state() == "exited"


def test_python_image_runs_python3_under_both_names(python_ref: str) -> None:
    for image in (python_ref, "python:3.7-slim"):
        done = run_once(image, "python3", "-c", "import sys; print(sys.version)")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("3.")
    # Like the official image: `python` and `pip` on PATH, and pip may install into the system (PEP 668).
    script = (
        "import os, sysconfig; print(os.path.exists(sysconfig.get_path('stdlib') + '/EXTERNALLY-MANAGED'))"
    )
    done = run_once(python_ref, "sh", "-c", f'pip --version >&2 && python -c "{script}"')
    assert (done.returncode, done.stdout) == (0, "False\n"), done.stderr


@pytest.mark.usefixtures("python_ref")
def test_a_python_dockerfile_builds_and_serves(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(
        "FROM python:3.7-slim\nENV APP_HOME /app\nWORKDIR $APP_HOME\nCOPY . ./\n"
        'RUN python -c "import http.server"\nCMD exec python -m http.server $PORT\n'
    )
    (tmp_path / "index.html").write_text("built\n")
    tag = f"localhost/serving-test-build:{uuid.uuid4().hex[:12]}"
    try:
        assert build_image("podman", tmp_path, tag) == tag
        with served(tag, port=8000) as container:
            assert container.get("/index.html") == (200, "built\n")
    finally:
        subprocess.run([*runtime_argv("podman"), "rmi", "-f", tag], capture_output=True, check=False)
