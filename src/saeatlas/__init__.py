"""saeatlas: sparse autoencoders at several dictionary sizes, and a map of what they learn."""

__version__ = "0.1.0"
