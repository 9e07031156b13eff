"""Peer systems for ``bench.compare``: run only with bench/.venv-peers (see bench/README.md)."""
