"""ML Hub version (single source of truth for packaging, images and the UI footer)."""

__version__ = "0.1.0"
