"""autoscaler component."""
