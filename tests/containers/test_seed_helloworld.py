"""The hello-world the product was born from, exactly as its notes give it: a Flask app, its Dockerfile
(`FROM python:3.7-slim`, gunicorn on `$PORT`) built into an image here, and an image-only Knative Service
that `serving up` runs in a container and wakes from zero."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from controller.local.runtime.container import owner_label
from tests.containers.images import build_image
from tests.integration.conftest import ServingUp, eventually

pytestmark = pytest.mark.containers

IMAGE = "docker.io/example/helloworld-python"

APP = """\
import os

from flask import Flask

app = Flask(__name__)


@app.route('/')
def hello_world():
    target = os.environ.get('TARGET', 'World')
    return 'Hello {}!\\n'.format(target)


if __name__ == "__main__":
    app.run(debug=True, host='0.0.0.0', port=int(os.environ.get('PORT', 8080)))
"""

DOCKERFILE = """\
FROM python:3.7-slim
ENV PYTHONUNBUFFERED True
ENV APP_HOME /app
WORKDIR $APP_HOME
COPY . ./
RUN pip install Flask gunicorn
CMD exec gunicorn --bind :$PORT --workers 1 --threads 8 --timeout 0 app:app
"""

SERVICE = f"""\
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: helloworld-python
  namespace: default
spec:
  template:
    spec:
      containers:
        - image: {IMAGE}
          env:
            - name: TARGET
              value: "Python Sample v1"
"""


@pytest.mark.timeout(600)
@pytest.mark.usefixtures("python_ref")
async def test_seed_service_yaml_answers_from_its_own_image(tmp_path: Path) -> None:
    context = tmp_path / "helloworld-python"
    context.mkdir()
    (context / "app.py").write_text(APP)
    (context / "Dockerfile").write_text(DOCKERFILE)
    await asyncio.to_thread(build_image, "podman", context, IMAGE)
    (context / "service.yaml").write_text(SERVICE)

    up = ServingUp(context, [context / "service.yaml"], ["--no-live"])
    try:
        await up.start()
        # The first request finds the Service starting; the activator holds it until gunicorn listens.
        assert await up.get("helloworld-python", timeout=None) == (200, "Hello Python Sample v1!\n")
        rev = await up.revision("helloworld-python-00001")
        assert rev is not None
        assert rev["ready_pods"] == 1
    finally:
        code = await up.stop(signal.SIGINT)
    assert code == 0

    async def no_containers() -> bool:
        proc = await asyncio.create_subprocess_exec(
            "podman",
            "ps",
            "--all",
            "--quiet",
            "--filter",
            f"label={owner_label(up.state_dir)}",
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        return out.strip() == b""

    await eventually(no_containers, 10, "a container outlived `serving up`")
