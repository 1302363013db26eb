"""A workload that appends, when it starts, the variables a SinkBinding or a ContainerSource gives it
(`K_SINK`, `K_CE_OVERRIDES`) as one JSON line to $RECORD_FILE, then waits to be stopped; the file outlives
the pod, so a test sees what each pod was started with. Standard library only."""

import json
import os
import signal
import threading

with open(os.environ["RECORD_FILE"], "a") as out:
    out.write(json.dumps({k: os.environ.get(k) for k in ("K_SINK", "K_CE_OVERRIDES", "HOSTNAME")}) + "\n")

stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
stop.wait()
