"""Platform-neutral reconciling: Service -> Configuration -> Revisions -> Route, and the route table.

Imports only `serving`; a platform (`controller.local`, later `controller.kube`) implements `Runtime`."""
