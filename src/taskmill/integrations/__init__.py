"""Helpers for web frameworks, at the level of the library facade (``taskmill.app``)."""
