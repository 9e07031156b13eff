"""Pure domain: no I/O, no third-party frameworks."""
