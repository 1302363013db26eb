"""activator component."""
