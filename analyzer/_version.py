"""The package version, in a module of its own so reporters can read it without importing the
whole public API (``analyzer/__init__.py`` may import the engine, which must not import reporters).
Keep it equal to ``[project] version`` in ``pyproject.toml``."""

__version__ = "0.1.0"
