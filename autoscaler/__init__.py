"""The KPA autoscaler: scrapes revisions' load, decides their pod counts with Knative's rules, scales them
through the platform (to zero when idle), and replays traces offline (`serving simulate`)."""
