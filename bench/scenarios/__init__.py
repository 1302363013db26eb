"""The five scenarios of `serving bench`, one module each, and their catalog by name."""
