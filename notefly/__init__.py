"""Notefly: an actor-model pub/sub notification broker."""

__version__ = "0.1.0"
