"""The one-machine platform behind `serving up`: system, store, platform API, and the pods' runtime."""
