"""The control side: the `serving` command line, platform-neutral reconciling, and the platforms (`local`)."""
