"""Use cases and the long-running services (each ``run_once()`` plus a thin loop)."""
