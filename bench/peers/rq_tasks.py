"""RQ: the job function (``rq worker --with-scheduler``)."""

from bench.compare_common import record


def noop(phase, enqueued, due):
    record(phase, enqueued, due)
