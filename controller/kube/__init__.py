"""The Kubernetes platform behind `serving controller --kubernetes`: Services become Configurations,
Revisions, Deployments, private Services and Routes in the cluster, through the shared `controller.reconcile`.
"""
