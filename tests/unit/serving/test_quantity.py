from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from serving.quantity import QuantityError, parse_quantity
from serving.service import ServiceFileError, parse_documents


@pytest.mark.parametrize(
    ("text", "value"),
    [
        pytest.param("500m", Decimal("0.5"), id="millicores"),
        pytest.param("2", Decimal(2), id="whole"),
        pytest.param("1.5", Decimal("1.5"), id="decimal"),
        pytest.param("128Mi", Decimal(128 * 1024 * 1024), id="mebibytes"),
        pytest.param("1G", Decimal(10**9), id="gigabytes"),
        pytest.param("1e3", Decimal(1000), id="exponent"),
        pytest.param("1k", Decimal(1000), id="kilo"),
        pytest.param(".5", Decimal("0.5"), id="leading-dot"),
        pytest.param(3, Decimal(3), id="yaml-int"),
    ],
)
def test_parse_quantity(text: str | int, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "abc", "1.2.3", "5 Mi", "1KiB", "Mi"])
def test_not_a_quantity(text: str) -> None:
    with pytest.raises(QuantityError, match="not a quantity"):
        parse_quantity(text)


@pytest.mark.parametrize(
    ("resources", "problem"),
    [
        pytest.param(
            {"limits": {"cpu": "lots"}}, "resources.limits.cpu: 'lots' is not a quantity", id="bad-cpu"
        ),
        pytest.param(
            {"limits": {"memory": "-1Mi"}}, "resources.limits.memory: '-1Mi' must be greater", id="negative"
        ),
        pytest.param(
            {"limits": {"memory": True}}, "resources.limits.memory: must be a quantity", id="not-a-quantity"
        ),
        pytest.param(
            {"limits": {"cpu": "500m"}, "requests": {"cpu": "1"}},
            "resources.requests.cpu: must be less than or equal to the cpu limit",
            id="request-over-limit",
        ),
    ],
)
def test_container_resources_are_quantities(
    tmp_path: Path, resources: dict[str, object], problem: str
) -> None:
    doc = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "hello"},
        "spec": {"template": {"spec": {"containers": [{"image": "app", "resources": resources}]}}},
    }
    with pytest.raises(ServiceFileError) as caught:
        parse_documents(yaml.safe_dump(doc), tmp_path / "service.yaml")
    assert any(f"spec.template.spec.containers[0].{problem}" in p for p in caught.value.problems), (
        caught.value.problems
    )


def test_valid_resources_pass(tmp_path: Path) -> None:
    doc = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "hello"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "image": "app",
                            "resources": {
                                "limits": {"cpu": 1, "memory": "64Mi"},
                                "requests": {"cpu": "250m"},
                            },
                        }
                    ]
                }
            }
        },
    }
    [service] = parse_documents(yaml.safe_dump(doc), tmp_path / "service.yaml")
    assert service.name == "hello"
