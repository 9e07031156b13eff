"""Brokers carry hints ("job X is queued"); the database stays the truth (DESIGN.md §1)."""
