"""controller component."""
