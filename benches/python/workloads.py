"""The ftrt workloads written in Python, for comparing real interpreters in the same report.

Usage (as cargo xtask bench --python PATH runs it):
    python workloads.py WORKLOAD --threads N [--scale F]   one run, one JSON line
    python workloads.py --list | --info

Each workload does the same fixed total work as its Rust twin (scaled down by PYTHON_SCALE,
since an interpreter is slower), splits it over N threads, times from the threads' start to the
last join, and checks its own result.
"""

import json
import platform
import sys
import sysconfig
import threading
import time

PYTHON_SCALE = 0.05


def build_name():
    free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    return f"python-{platform.python_version()}{'t' if free_threaded else ''}"


def run_threads(n, work):
    results = [None] * n
    ready = threading.Barrier(n + 1)

    def body(t):
        ready.wait()
        results[t] = work(t)

    threads = [threading.Thread(target=body, args=(t,)) for t in range(n)]
    for th in threads:
        th.start()
    ready.wait()
    start = time.perf_counter()
    for th in threads:
        th.join()
    return time.perf_counter() - start, results


def share(total, n, t):
    return total // n + (1 if t < total % n else 0)


def countdown(n, total):
    def work(t):
        k = share(total, n, t)
        while k > 0:
            k -= 1
        return k
    elapsed, finals = run_threads(n, work)
    return elapsed, "ok" if all(f == 0 for f in finals) else f"countdowns ended at {finals}", {}


def io_sleep(n, total):
    def work(t):
        for _ in range(share(total, n, t)):
            time.sleep(0.002)
        return share(total, n, t)
    elapsed, done = run_threads(n, work)
    return elapsed, "ok" if sum(done) == total else "sleeps were lost", {}


class Globals:
    counter = 0


def counter_race(n, total):
    Globals.counter = 0

    def work(t):
        for _ in range(share(total, n, t)):
            Globals.counter = Globals.counter + 1
    elapsed, _ = run_threads(n, work)
    lost = total - Globals.counter
    return elapsed, "ok", {"lost_updates": float(lost), "lost_fraction": lost / total}


def counter_locked(n, total):
    Globals.counter = 0
    lock = threading.Lock()

    def work(t):
        for _ in range(share(total, n, t)):
            with lock:
                Globals.counter = Globals.counter + 1
    elapsed, _ = run_threads(n, work)
    return elapsed, "ok" if Globals.counter == total else f"counter ended at {Globals.counter}", {}


def list_append_private(n, total):
    def work(t):
        items = []
        for i in range(share(total, n, t)):
            items.append(i % 1000)
        return len(items) == share(total, n, t)
    elapsed, oks = run_threads(n, work)
    return elapsed, "ok" if all(oks) else "a private list lost items", {}


def list_append_shared(n, total):
    items = []

    def work(t):
        base = sum(share(total, n, u) for u in range(t))
        for i in range(share(total, n, t)):
            items.append(base + i)
    elapsed, _ = run_threads(n, work)
    return elapsed, "ok" if sorted(items) == list(range(total)) else "appends were lost", {}


KEYS = [f"key-{k}" for k in range(1000)]


def dict_private(n, total):
    def work(t):
        d, s = {}, 0
        for i in range(share(total, n, t)):
            k = KEYS[i % 1000]
            d[k] = i % 1000
            s += d[k]
        return s == sum(i % 1000 for i in range(share(total, n, t)))
    elapsed, oks = run_threads(n, work)
    return elapsed, "ok" if all(oks) else "a private dict read a wrong value", {}


def dict_shared_read(n, total):
    d = {k: float(i) for i, k in enumerate(KEYS)}

    def work(t):
        s = 0.0
        for i in range(share(total, n, t)):
            s += d[KEYS[i % 1000]]
        return s == sum(float(i % 1000) for i in range(share(total, n, t)))
    elapsed, oks = run_threads(n, work)
    return elapsed, "ok" if all(oks) else "a shared dict read a wrong value", {}


def dict_shared_write(n, total):
    d = {}

    def work(t):
        for i in range(share(total, n, t)):
            k = i * n + t
            d[k] = k + 1
    elapsed, _ = run_threads(n, work)
    ok = len(d) == total and all(d[k] == k + 1 for k in range(total))
    return elapsed, "ok" if ok else "the shared dict lost keys", {}


class Point:
    pass


def object_create(n, total):
    def work(t):
        s = 0
        for i in range(share(total, n, t)):
            p = Point()
            p.x = i % 100
            p.y = 1
            s += p.x
        return s == sum(i % 100 for i in range(share(total, n, t)))
    elapsed, oks = run_threads(n, work)
    return elapsed, "ok" if all(oks) else "an attribute read back wrong", {}


def float_mult(n, total):
    def work(t):
        x = 1.0
        for _ in range(share(total, n, t)):
            x *= 1.000001
        return x
    elapsed, _ = run_threads(n, work)
    return elapsed, "ok", {}


POOL = [f"identifier_{i}" for i in range(500)]


def string_intern(n, total):
    def work(t):
        first = [sys.intern(s) for s in POOL]
        bad = 0
        for i in range(share(total, n, t)):
            j = (i * 7 + t) % 500
            if sys.intern("".join([POOL[j]])) is not first[j]:
                bad += 1
        return bad
    elapsed, bad = run_threads(n, work)
    return elapsed, "ok" if sum(bad) == 0 else "interned strings differed", {}


def shared_refcount(n, total):
    value = [1.5]

    def work(t):
        v = value[0]
        for _ in range(share(total, n, t)):
            w = v
            del w
    elapsed, _ = run_threads(n, work)
    return elapsed, "ok", {}


class Config:
    pass


def shared_attribute_read(n, total):
    config = Config()
    config.scale = 0.5

    def work(t):
        s = 0.0
        for _ in range(share(total, n, t)):
            s += config.scale
        return s == share(total, n, t) * 0.5
    elapsed, oks = run_threads(n, work)
    return elapsed, "ok" if all(oks) else "an attribute read wrong", {}


def immortal_read(n, total):
    def work(t):
        s = 0
        for _ in range(share(total, n, t)):
            a, b = None, 42
            s += (a is None) + b
        return s == share(total, n, t) * 43
    elapsed, oks = run_threads(n, work)
    return elapsed, "ok" if all(oks) else "a wrong sum", {}


# name: (function, total work at scale 1, before PYTHON_SCALE)
WORKLOADS = {
    "countdown": (countdown, 8_000_000),
    "io-sleep": (io_sleep, 96 / PYTHON_SCALE),
    "counter-race": (counter_race, 1_000_000),
    "counter-locked": (counter_locked, 1_000_000),
    "list-append-private": (list_append_private, 4_000_000),
    "list-append-shared": (list_append_shared, 1_000_000),
    "dict-private": (dict_private, 1_000_000),
    "dict-shared-read": (dict_shared_read, 4_000_000),
    "dict-shared-write": (dict_shared_write, 400_000),
    "object-create": (object_create, 1_000_000),
    "float-mult": (float_mult, 6_000_000),
    "string-intern": (string_intern, 2_000_000),
    "shared-refcount": (shared_refcount, 8_000_000),
    "shared-attribute-read": (shared_attribute_read, 8_000_000),
    "immortal-read": (immortal_read, 8_000_000),
}


def main(argv):
    if argv[:1] == ["--info"]:
        print(json.dumps({"build": build_name(), "header_size": None, "count_strategy": None}))
        return 0
    if argv[:1] == ["--list"]:
        print(json.dumps([{"name": name} for name in WORKLOADS]))
        return 0
    if not argv or argv[0] not in WORKLOADS:
        print(f"error: unknown workload; valid: {', '.join(WORKLOADS)}", file=sys.stderr)
        return 2
    name, threads, scale = argv[0], 1, 1.0
    rest = argv[1:]
    while rest:
        flag, value, rest = rest[0], rest[1] if len(rest) > 1 else None, rest[2:]
        if flag == "--threads" and value and value.isdigit() and int(value) >= 1:
            threads = int(value)
        elif flag == "--scale" and value:
            scale = float(value)
        else:
            print(f"error: bad argument {flag}", file=sys.stderr)
            return 2
    function, total = WORKLOADS[name]
    total = max(threads, int(total * scale * PYTHON_SCALE))
    elapsed, check, metrics = function(threads, total)
    print(json.dumps({"workload": name, "build": build_name(), "threads": threads, "elapsed_s": elapsed,
                      "check": check, "metrics": metrics, "peak_rss_kib": peak_rss_kib()}))
    return 0


def peak_rss_kib():
    try:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except ImportError:
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
