"""How local pods run: supervisor, pods, process launch, fork server, ports, probes, backoff, logs."""
