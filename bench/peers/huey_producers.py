"""Huey's side of ``bench.producers`` (runs in bench/.venv-peers): threads enqueueing a
no-op task to ``RedisHuey`` for some seconds, in one process or several.

    huey_producers.py REDIS_URL NAME THREADS PROCESSES SECONDS

Prints ``{"made": N, "calls": [ms, ...]}``; the queue is flushed at the end.
"""

import json
import multiprocessing
import sys
import threading
import time

from huey import RedisHuey


def run(url, name, threads, seconds):
    huey = RedisHuey(name, url=url, results=False)

    @huey.task()
    def noop(x):
        return None

    calls = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def loop():
        mine = []
        while time.monotonic() < deadline:
            started = time.perf_counter()
            noop(None)  # one LPUSH
            mine.append((time.perf_counter() - started) * 1000)
        with lock:
            calls.extend(mine)

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return len(calls), calls


def child(args, out):
    out.put(run(*args))


def main():
    url, name = sys.argv[1], sys.argv[2]
    threads, processes, seconds = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    if processes == 1:
        made, calls = run(url, name, threads, seconds)
    else:
        context = multiprocessing.get_context("spawn")
        out = context.Queue()
        args = (url, name, threads, seconds)
        procs = [context.Process(target=child, args=(args, out)) for _ in range(processes)]
        for p in procs:
            p.start()
        results = [out.get() for _ in procs]
        for p in procs:
            p.join()
        made, calls = sum(r[0] for r in results), [c for r in results for c in r[1]]
    RedisHuey(name, url=url).flush()
    print(json.dumps({"made": made, "calls": calls}))


if __name__ == "__main__":
    main()
