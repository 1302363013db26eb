"""Shared primitives of the serving data plane.

Everything the queue-proxy, activator, autoscaler and controller have in common lives here; this package
imports no component.
"""
