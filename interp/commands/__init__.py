"""CLI command modules: each defines ``register(groups)`` adding its typer commands.

``groups`` maps "app", "score", "calibrate", "patch" to typer apps (see `interp.cli`).
A command maps flags onto a config dataclass and calls one library function.
"""
