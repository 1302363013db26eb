"""`serving bench`: Knative's data-plane benchmarks run on one machine, with an open-loop load generator,
raw samples, summaries, plots and a report per run. Nothing in the data plane imports this package; the
`serving` command reaches it by name (`bench.command`), and its plots need the `bench` extra (matplotlib)."""
