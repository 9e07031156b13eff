"""Executors run a claimed job's work: ``python`` handlers (http and process come later)."""
