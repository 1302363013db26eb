"""Which platform a component talks to: the local platform API (an http(s) URL) or the Kubernetes API.

`SERVING_PLATFORM_URL=kubernetes` makes a component read revisions, pods and scale from the API server it runs
under (in-cluster service account, or the file named by `KUBECONFIG`); any http(s) URL is the local platform
API of `serving up`.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

KUBERNETES: Final = "kubernetes"


def parse_platform_url(text: str) -> str:
    """`kubernetes`, or the absolute http(s) URL of a local platform API (without a trailing slash)."""
    value = text.strip()
    if value == KUBERNETES:
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{text!r} is neither {KUBERNETES!r} nor an http(s) URL")
    return value.rstrip("/")


def is_kubernetes(platform_url: str) -> bool:
    return platform_url == KUBERNETES
