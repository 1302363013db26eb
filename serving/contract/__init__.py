"""Component contracts as typed data: the settings each component reads from its environment, owned here so
that a platform builds the same frozen dataclass the component loads and renders it with `to_env()`.
"""
