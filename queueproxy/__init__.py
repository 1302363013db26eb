"""queueproxy component."""
