"""The one-machine platform behind `serving up`: system, store, platform API, ingress router."""
