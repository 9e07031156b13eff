"""Environment the peers' worker modules read (set by bench/peers/driver.py)."""

import os

TOKEN = os.environ.get("BENCH_TOKEN", "cmpunset")  # in every key, queue and name used
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_DSN = os.environ.get("BENCH_PG_DSN", "")
