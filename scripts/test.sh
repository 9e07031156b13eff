#!/usr/bin/env bash
# The test suite. `scripts/test.sh` runs every test: in parallel (pytest-xdist; each test
# has its own database, Redis prefix and RabbitMQ queues), then, alone, the few marked
# `exclusive` that stop or reconfigure a shared service. `scripts/test.sh quick` is the
# edit loop: unit tests, the store's conformance suite and the store tests on SQLite, no
# service needed (under 90 s).
# Extra arguments go to pytest. Exits non-zero if any test failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTEST=.venv/bin/pytest
WORKERS=${TASKMILL_TEST_WORKERS:-4}  # tests wait on I/O and timers: more workers than cores

case "${1:-all}" in
  quick)
    shift
    exec "$PYTEST" -n 2 -q tests/unit tests/conformance \
      tests/integration/test_store_integration.py \
      tests/integration/test_sqlite_writer_integration.py -k "not postgresql" "$@"
    ;;
  all)
    [ $# -gt 0 ] && shift
    "$PYTEST" -n "$WORKERS" --dist worksteal -m "not exclusive" "$@"
    parallel=$?
    "$PYTEST" -m exclusive "$@"
    alone=$?
    [ "$alone" -eq 5 ] && alone=0  # 5: the caller's -k selected none of them
    exit $((parallel != 0 || alone != 0))
    ;;
  *)
    echo "usage: scripts/test.sh [all|quick] [pytest arguments]" >&2
    exit 2
    ;;
esac
