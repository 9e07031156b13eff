#!/usr/bin/env bash
# The test suite. `scripts/test.sh` runs every test: the unit, conformance, integration
# and migration tests in parallel (pytest-xdist; each test has its own database, Redis
# prefix and RabbitMQ queues), then the end-to-end scenarios one at a time, then, alone,
# the few marked `exclusive` that stop or reconfigure a shared service (one of them,
# marked `beside_parallel`, runs beside the parallel step instead). `scripts/test.sh quick`
# is the edit loop: unit tests, the store's conformance suite and the store tests on SQLite, no
# service needed (under 90 s).
# Extra arguments go to pytest. Exits non-zero if any test failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTEST=.venv/bin/pytest

case "${1:-all}" in
  quick)
    shift
    exec "$PYTEST" -n 2 -q tests/unit tests/conformance \
      tests/integration/test_store_integration.py \
      tests/integration/test_sqlite_writer_integration.py -k "not postgresql" "$@"
    ;;
  all)
    [ $# -gt 0 ] && shift
    rest_dirs=$(ls -d tests/*/ | grep -v '^tests/e2e/$')  # every test folder but e2e
    # The exclusive tests whose change the parallel step cannot notice (RabbitMQ's
    # consumer timeout, S7: it mostly waits for a 150 s job) run beside it, in a process
    # of their own; their output follows the parallel step's.
    beside_log=$(mktemp)
    "$PYTEST" -m "exclusive and beside_parallel" "$@" >"$beside_log" 2>&1 &
    beside_pid=$!
    # Unit, conformance, integration and migration tests in parallel (two workers).
    # shellcheck disable=SC2086  # the folders are words
    "$PYTEST" -n 2 --dist worksteal -m "not exclusive" $rest_dirs "$@"
    rest=$?
    wait "$beside_pid"
    beside=$?
    cat "$beside_log" && rm -f "$beside_log"
    [ "$beside" -eq 5 ] && beside=0  # 5: the caller's -k selected none of them
    # The end-to-end scenarios one at a time: each is a cluster of service processes
    # with timing bounds, and two clusters side by side on two cores broke those bounds
    # (a CI run with them in parallel: 5 of 67 failed, each passing alone).
    "$PYTEST" -m "not exclusive" tests/e2e "$@"
    e2e=$?
    "$PYTEST" -m "exclusive and not beside_parallel" "$@"
    alone=$?
    [ "$alone" -eq 5 ] && alone=0  # 5: the caller's -k selected none of them
    exit $((rest != 0 || beside != 0 || e2e != 0 || alone != 0))
    ;;
  *)
    echo "usage: scripts/test.sh [all|quick] [pytest arguments]" >&2
    exit 2
    ;;
esac
