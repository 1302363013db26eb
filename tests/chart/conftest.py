"""Fixtures of the chart tests: the helm binary (built once by tests/kube/build-control-plane.sh, a failure
says why) and the chart's renderings, each made once per session.
"""

from __future__ import annotations

import pytest

from tests.chart.helm import Helm, HelmUnavailable, Renders, build_helm


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    try:
        path = build_helm()
    except HelmUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    return Helm(path, tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="session")
def renders(helm: Helm) -> Renders:
    return Renders(helm)
