"""`serving bench`: Knative's data-plane benchmarks run on one machine, with an open-loop load generator,
raw samples, summaries, plots and a report per run."""

from __future__ import annotations


def main(argv: list[str]) -> int:
    # Imported on call so that importing a submodule (the load generator, say) loads no scenario code.
    from controller.bench.command import main as run

    return run(argv)
