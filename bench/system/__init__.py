"""The system under test: `serving up` and bare apps as real processes, their Service files, the watchers of
their pods, and the machine they run on."""
