"""The control side: the `serving` command line, platform-neutral reconciling, the ingress router, and the
platforms (`local` for `serving up`, `kube` for a cluster)."""
