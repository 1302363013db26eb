"""Label and annotation keys on the objects the controller makes (Knative's, where Knative has one)."""

from __future__ import annotations

from typing import Final

from serving.kube.platform import ROUTING_STATE_LABEL

SERVICE: Final = "serving.knative.dev/service"
CONFIGURATION: Final = "serving.knative.dev/configuration"
CONFIGURATION_GENERATION: Final = "serving.knative.dev/configurationGeneration"
REVISION: Final = "serving.knative.dev/revision"
REVISION_UID: Final = "serving.knative.dev/revisionUID"
ROUTE: Final = "serving.knative.dev/route"
DIGEST: Final = "serving.knative.dev/template-digest"
"""Our own: the digest of the template a Revision was stamped from, so a restarted controller knows which
Service templates already have a revision."""
ROUTING_STATE: Final = ROUTING_STATE_LABEL
"""`active` while a route references the revision, `reserve` once none does (Knative's label)."""
ROUTING_STATE_MODIFIED: Final = "serving.knative.dev/routingStateModified"
"""When `routingState` last changed (RFC 3339), for garbage collection."""
