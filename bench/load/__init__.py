"""The load side of a benchmark: the open-loop generator, its per-request samples, phases and progress."""
