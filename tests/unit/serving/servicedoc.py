"""Builders for Service YAML documents in tests: a valid base document and a setter for one field path."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

_STEP_RE = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def base_service(name: str = "hello", target: str = "v1") -> dict[str, Any]:
    """A minimal valid Service that also runs locally."""
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "image": "docker.io/example/hello",
                            "command": ["python", "-m", "http.server", "$(PORT)"],
                            "env": [{"name": "TARGET", "value": target}],
                        }
                    ]
                }
            }
        },
    }


def with_field(doc: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    """A copy of `doc` with the field at `path` (`a.b[0].c`) set to `value`, creating mappings on the way.

    A path ending in `!` removes the field instead; a list index one past the end appends.
    """
    out = copy.deepcopy(doc)
    remove = path.endswith("!")
    steps: list[str | int] = [
        m.group(1) if m.group(1) is not None else int(m.group(2)) for m in _STEP_RE.finditer(path.rstrip("!"))
    ]
    node: Any = out
    for step in steps[:-1]:
        if isinstance(step, str) and step not in node:
            node[step] = {}
        node = node[step]
    last = steps[-1]
    if remove:
        del node[last]
    elif isinstance(node, list) and last == len(node):
        node.append(value)
    else:
        node[last] = value
    return out


def dump(*docs: dict[str, Any]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)


def write(tmp: Path, name: str, *docs: dict[str, Any]) -> Path:
    path = tmp / name
    path.write_text(dump(*docs))
    return path
