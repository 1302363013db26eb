"""Every call to the Kubernetes API goes through `Kube`: plain JSON objects in and out, a timeout on every
call, typed errors, server-side apply and merge patches with conflict retry, and raw watch streams.

Objects are the API's own JSON (dicts), not generated model classes: the controller builds and reads a few
fields of many kinds, custom resources among them, and a dict is what both sides of the wire speak.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, urlencode

import aiohttp
from kubernetes_asyncio import client, config  # type: ignore[import-untyped,unused-ignore]

log = logging.getLogger(__name__)

JSON = dict[str, Any]
CALL_TIMEOUT: Final = 10.0
"""Seconds any single non-watch call may take."""
WATCH_SECONDS: Final = 290
"""A watch asks the server to end it after this long (it is then resumed from the last resourceVersion)."""
FIELD_MANAGER: Final = "serving"


@dataclass(frozen=True, slots=True)
class Resource:
    """One API resource: where it lives on the wire."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if namespace is not None and self.namespaced:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{quote(name, safe='')}"
            if sub is not None:
                base += f"/{sub}"
        return base


SERVICES: Final = Resource("serving.knative.dev", "v1", "services", "Service")
CONFIGURATIONS: Final = Resource("serving.knative.dev", "v1", "configurations", "Configuration")
REVISIONS: Final = Resource("serving.knative.dev", "v1", "revisions", "Revision")
ROUTES: Final = Resource("serving.knative.dev", "v1", "routes", "Route")
DEPLOYMENTS: Final = Resource("apps", "v1", "deployments", "Deployment")
STATEFUL_SETS: Final = Resource("apps", "v1", "statefulsets", "StatefulSet")
DAEMON_SETS: Final = Resource("apps", "v1", "daemonsets", "DaemonSet")
CRON_JOBS: Final = Resource("batch", "v1", "cronjobs", "CronJob")
CORE_SERVICES: Final = Resource("", "v1", "services", "Service")
PODS: Final = Resource("", "v1", "pods", "Pod")
EVENTS: Final = Resource("", "v1", "events", "Event")
ENDPOINT_SLICES: Final = Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice")
LEASES: Final = Resource("coordination.k8s.io", "v1", "leases", "Lease")
NAMESPACES: Final = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
CONFIG_MAPS: Final = Resource("", "v1", "configmaps", "ConfigMap")
SECRETS: Final = Resource("", "v1", "secrets", "Secret")
BROKERS: Final = Resource("eventing.knative.dev", "v1", "brokers", "Broker")
TRIGGERS: Final = Resource("eventing.knative.dev", "v1", "triggers", "Trigger")
PING_SOURCES: Final = Resource("sources.knative.dev", "v1", "pingsources", "PingSource")
GITHUB_SOURCES: Final = Resource("sources.knative.dev", "v1alpha1", "githubsources", "GitHubSource")
CONTAINER_SOURCES: Final = Resource("sources.knative.dev", "v1", "containersources", "ContainerSource")
SINK_BINDINGS: Final = Resource("sources.knative.dev", "v1", "sinkbindings", "SinkBinding")


class ApiError(Exception):
    """The API server answered with an error status (or could not be reached: status 0)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        super().__init__(f"{status} {reason}: {message}")

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def gone(self) -> bool:
        return self.status == 410


THROTTLE_ATTEMPTS: Final = 10
"""Tries of a request the API server answers 429 Too Many Requests (each after its Retry-After)."""


def _retry_after(value: str | None) -> float:
    """Seconds to wait from a Retry-After header (delta-seconds), 1 when absent or unreadable, at most 10."""
    try:
        seconds = float(value) if value else 1.0
    except ValueError:
        seconds = 1.0
    return min(max(seconds, 0.1), 10.0)


def _error(status: int, body: bytes | str) -> ApiError:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        data = json.loads(text)
        return ApiError(status, str(data.get("reason", "")), str(data.get("message", text)))
    except (ValueError, AttributeError):
        return ApiError(status, "", text[:500])


async def load_api_client(kubeconfig: str | None = None) -> Any:
    """An `ApiClient` from `kubeconfig`, else `$KUBECONFIG`, else the pod's in-cluster service account."""
    path = kubeconfig or os.environ.get("KUBECONFIG")
    if path:
        configuration = client.Configuration()
        await config.load_kube_config(config_file=path, client_configuration=configuration)
        return client.ApiClient(configuration)
    configuration = client.Configuration()
    config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return client.ApiClient(configuration)


class Kube:
    """The adapter. `connect()` to build one from the environment; `close()` when done."""

    def __init__(self, api_client: Any, *, call_timeout: float = CALL_TIMEOUT) -> None:
        self._api = api_client
        self._timeout = call_timeout

    @classmethod
    async def connect(cls, kubeconfig: str | None = None) -> Kube:
        return cls(await load_api_client(kubeconfig))

    async def close(self) -> None:
        await self._api.close()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int | bool] | None = None,
        body: object = None,
        content_type: str = "application/json",
    ) -> JSON:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        params = [(k, str(v).lower() if isinstance(v, bool) else str(v)) for k, v in (query or {}).items()]
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._api.call_api(
                    path,
                    method,
                    query_params=params,
                    header_params=headers,
                    body=body,
                    auth_settings=["BearerToken"],
                    _preload_content=False,
                    _request_timeout=self._timeout,
                )
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise ApiError(0, "Unreachable", f"{method} {path}: {exc!r}") from exc
            try:
                data = await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise ApiError(0, "Unreachable", f"{method} {path}: {exc!r}") from exc
            finally:
                response.release()
            if response.status == 429 and attempt < THROTTLE_ATTEMPTS:
                # Not processed (priority and fairness, or a watch cache still initializing): the server
                # says when to come back, as client-go honours it.
                await asyncio.sleep(_retry_after(response.headers.get("Retry-After")))
                continue
            break
        if not 200 <= response.status < 300:
            raise _error(response.status, data)
        if not data:
            return {}
        result: JSON = json.loads(data)
        return result

    async def get(self, resource: Resource, namespace: str | None, name: str, sub: str | None = None) -> JSON:
        return await self._call("GET", resource.path(namespace, name, sub))

    async def list(
        self, resource: Resource, namespace: str | None = None, *, label_selector: str | None = None
    ) -> JSON:
        query: dict[str, str | int | bool] = {}
        if label_selector:
            query["labelSelector"] = label_selector
        return await self._call("GET", resource.path(namespace), query=query)

    async def create(self, resource: Resource, namespace: str | None, obj: Mapping[str, Any]) -> JSON:
        return await self._call("POST", resource.path(namespace), body=dict(obj))

    async def delete(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        *,
        propagation: str = "Background",
        grace_seconds: int | None = None,
    ) -> None:
        body: JSON = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds
        try:
            await self._call("DELETE", resource.path(namespace, name), body=body)
        except ApiError as exc:
            if not exc.not_found:
                raise

    async def replace(
        self, resource: Resource, namespace: str | None, name: str, obj: Mapping[str, Any]
    ) -> JSON:
        """PUT: fails with 409 when `obj`'s resourceVersion is no longer current."""
        return await self._call("PUT", resource.path(namespace, name), body=dict(obj))

    async def merge_patch(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        patch: Mapping[str, Any],
        sub: str | None = None,
    ) -> JSON:
        return await self._call(
            "PATCH",
            resource.path(namespace, name, sub),
            body=dict(patch),
            content_type="application/merge-patch+json",
        )

    async def apply(
        self,
        resource: Resource,
        obj: Mapping[str, Any],
        *,
        sub: str | None = None,
        manager: str = FIELD_MANAGER,
    ) -> JSON:
        """Server-side apply of `obj` (which names its namespace and name), forcing ownership of its fields.

        Apply has no resourceVersion precondition, so it cannot conflict on a stale read; a 409 from a
        concurrent writer of the same fields is retried a few times.
        """
        meta = obj["metadata"]
        path = resource.path(meta.get("namespace"), meta["name"], sub)
        query: dict[str, str | int | bool] = {"fieldManager": manager, "force": True}
        for attempt in range(5):
            try:
                return await self._call(
                    "PATCH", path, query=query, body=dict(obj), content_type="application/apply-patch+yaml"
                )
            except ApiError as exc:
                if not exc.conflict or attempt == 4:
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    async def watch(
        self,
        resource: Resource,
        namespace: str | None,
        resource_version: str,
        *,
        label_selector: str | None = None,
        seconds: int = WATCH_SECONDS,
    ) -> AsyncIterator[tuple[str, JSON]]:
        """Events after `resource_version` as (type, object), BOOKMARKs included; ends when the server ends
        the watch. A `410 Gone` (as an ERROR event or a status) raises `ApiError` with status 410."""
        query: dict[str, str | int | bool] = {
            "watch": True,
            "resourceVersion": resource_version,
            "allowWatchBookmarks": True,
            "timeoutSeconds": seconds,
        }
        if label_selector:
            query["labelSelector"] = label_selector
        path = (
            resource.path(namespace)
            + "?"
            + urlencode({k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in query.items()})
        )
        try:
            response = await self._api.call_api(
                path,
                "GET",
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self._timeout, sock_read=seconds + 30
                ),
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ApiError(0, "Unreachable", f"watch {resource.plural}: {exc!r}") from exc
        try:
            if response.status != 200:
                raise _error(response.status, await response.read())
            while True:
                try:
                    line = await response.content.readline()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    raise ApiError(0, "Unreachable", f"watch {resource.plural}: {exc!r}") from exc
                if not line:
                    return
                event = json.loads(line)
                kind = str(event.get("type", ""))
                obj = event.get("object") or {}
                if kind == "ERROR":
                    raise ApiError(
                        int(obj.get("code", 0)), str(obj.get("reason", "")), str(obj.get("message", ""))
                    )
                yield kind, obj
        finally:
            response.release()


def key_of(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace", "")), str(meta.get("name", "")))


def owner_reference(obj: Mapping[str, Any], *, controller: bool = True) -> JSON:
    meta = obj["metadata"]
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }
