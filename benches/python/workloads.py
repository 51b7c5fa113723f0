"""The ftrt workloads written in Python, for comparing real interpreters in the same report.

Usage (as cargo xtask bench --python PATH runs it):
    python workloads.py WORKLOAD --threads N [--scale F] [--warm-up F]   one run, one JSON line
    python workloads.py --list | --info

Each workload is the twin of a Rust workload (crates/workloads): the same operations on the same
kinds of objects, a fixed total amount of work split over N threads (strong scaling), timed from
the earliest thread's start to the last join after an untimed warm-up pass in the same process,
and a check of its own result (outside the timed region) that fails when the work was done
wrong. The sizes are the interpreter's own (an interpreter is slower than ftrt): reports compare
interpreters by ratios and by the time per operation, an operation being the same unit as in
the Rust twin.

FTRT_PY_SABOTAGE=1 makes thread 0 of every workload do its work wrong in one place (one unit of
work too many, or a reference kept that it should drop), so that a test can see each check fail.
"""

import gc
import json
import math
import os
import platform
import sys
import sysconfig
import threading
import time

WARM_UP_FRACTION = 0.1
SABOTAGE = bool(os.environ.get("FTRT_PY_SABOTAGE"))


def built_free_threaded():
    return bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def free_threaded():
    """Whether this run has no GIL: a free-threaded build runs with one when the environment
    asks for it (PYTHON_GIL=1) or an extension module needs it."""
    gil_enabled = getattr(sys, "_is_gil_enabled", lambda: True)
    return built_free_threaded() and not gil_enabled()


def build_name():
    # A free-threaded build running with its GIL is named apart from both of its twins.
    suffix = "t" if built_free_threaded() else ""
    if built_free_threaded() and not free_threaded():
        suffix += "-with-gil"
    return f"python-{platform.python_version()}{suffix}"


def run_threads(n, work):
    """Runs work(t) on n threads released together; returns (seconds from the earliest
    thread's start to the last join, results). An exception in a thread is raised here."""
    results = [None] * n
    starts = [None] * n
    errors = []
    ready = threading.Barrier(n + 1)

    def body(t):
        ready.wait()
        # Each thread reads the clock as it starts: the main thread may wake from the barrier
        # after the workers began.
        starts[t] = time.perf_counter()
        try:
            results[t] = work(t)
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=body, args=(t,)) for t in range(n)]
    try:
        for th in threads:
            th.start()
    except BaseException:
        # A thread that could not start: the started ones leave the barrier, broken.
        ready.abort()
        raise
    ready.wait()
    for th in threads:
        th.join()
    finished = time.perf_counter()
    if errors:
        raise errors[0]
    return finished - min(starts), results


def share(total, n, t):
    return total // n + (1 if t < total % n else 0)


def sabotaged(t):
    return SABOTAGE and t == 0


def steps(total, n, t):
    """Thread t's share of the work; one unit too many when sabotaged."""
    return share(total, n, t) + (1 if sabotaged(t) else 0)


def first_wrong(n, total, got, expected):
    """The check of per-thread results: 'ok' or which thread computed what."""
    for t in range(n):
        want = expected(share(total, n, t))
        if got[t] != want:
            return f"thread {t} computed {got[t]!r}, expected {want!r}"
    return "ok"


def countdown(n, total):
    def work(t):
        k = share(total, n, t)
        for _ in range(steps(total, n, t)):
            k -= 1
        return k

    elapsed, finals = run_threads(n, work)
    return elapsed, "ok" if all(f == 0 for f in finals) else f"countdowns ended at {finals}, not 0", {}


def child_countdown(share_, steps_):
    """What a child process of countdown-processes runs: the countdown's final value."""
    k = share_
    for _ in range(steps_):
        k -= 1
    return k


def countdown_processes(n, total):
    """The countdown, each share in its own OS process (start-up included), as the Rust twin
    starts its own executable again."""
    import subprocess
    script = os.path.abspath(__file__)
    start = time.perf_counter()
    # Start every process first, then wait for them all: they run at the same time.
    children = [
        subprocess.Popen([sys.executable, script, "--child-countdown", str(share(total, n, t)),
                          str(steps(total, n, t))],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for t in range(n)
    ]
    outputs = [child.communicate() + (child.returncode,) for child in children]
    elapsed = time.perf_counter() - start
    for t, (out, err, code) in enumerate(outputs):
        if code != 0 or out.strip() != "0":
            return elapsed, f"child process {t} failed (exit {code}, printed {out.strip()!r}): {err.strip()}", {}
    return elapsed, "ok", {}


NATIVE_CHUNK = 1 << 20
NATIVE_DATA = []  # the 1 MiB buffer, made on first use (not by every child of countdown-processes)


def native_data():
    if not NATIVE_DATA:
        NATIVE_DATA.append(memoryview(bytes(range(256)) * (NATIVE_CHUNK // 256)))
    return NATIVE_DATA[0]


def native_digests(share_, steps_):
    """Hashes steps_ bytes in chunks of at most NATIVE_CHUNK; one digest per chunk, each chunk
    salted with where it starts. hashlib releases the GIL while it hashes a buffer of 2 KiB or
    more: a native kernel that touches no Python object, as the Rust twin's."""
    import hashlib
    data = native_data()
    digests = []
    done = 0
    while done < steps_:
        chunk = min(NATIVE_CHUNK, steps_ - done)
        h = hashlib.sha256(done.to_bytes(8, "little"))
        h.update(data[:chunk])
        digests.append(h.digest())
        done += chunk
    return digests


def native_release(n, total):
    elapsed, results = run_threads(n, lambda t: native_digests(share(total, n, t), steps(total, n, t)))
    # Against a serial run of each share, outside the timing.
    for t in range(n):
        s = share(total, n, t)
        if results[t] != native_digests(s, s):
            return elapsed, f"thread {t}'s digests differ from a serial run", {}
    return elapsed, "ok", {}


def io_sleep(n, total):
    def work(t):
        done = 0
        for _ in range(steps(total, n, t)):
            time.sleep(0.002)
            done += 1
        return done

    elapsed, done = run_threads(n, work)
    slept = sum(done)
    if slept != total:
        return elapsed, f"{slept} of {total} sleeps done", {}
    # A sleep lasts at least its time: a count alone would pass sleeps that returned at once.
    least = 0.002 * max(share(total, n, t) for t in range(n))
    if elapsed < least:
        return elapsed, f"the run took {elapsed:.6f} s, less than its longest share's sleeps ({least} s)", {}
    return elapsed, "ok", {}


counter = 0


def counter_race(n, total):
    global counter
    counter = 0

    def work(t):
        global counter
        i = -1
        for i in range(steps(total, n, t)):
            counter = counter + 1
        return i + 1

    elapsed, increments = run_threads(n, work)
    lost = total - counter
    # Lost updates are the point, so the count alone cannot tell them from increments never
    # made: each thread says how many it made, and one thread alone loses none.
    check = first_wrong(n, total, increments, lambda s: s)
    # The global's reads and writes are each atomic, and each write stores 1 or more: the last
    # write is one more than its thread's last read, which found 1 or more if that thread had
    # written before. So the counter ends at 2 or more when every thread makes two increments.
    shares = [share(total, n, t) for t in range(n)]
    lowest = min(min((s for s in shares if s > 0), default=0), 2)
    if check == "ok" and not lowest <= counter <= total:
        check = f"the counter ended at {counter}, outside {lowest}..={total}"
    if check == "ok" and n == 1 and lost != 0:
        check = f"one thread alone lost {lost} of {total} updates"
    return elapsed, check, {"lost_updates": float(lost), "lost_fraction": lost / total}


def counter_locked(n, total):
    global counter
    counter = 0
    lock = threading.Lock()

    def work(t):
        global counter
        # A local: a closure's variable would count a reference to the shared lock on every
        # read in a free-threaded interpreter, which the Rust twin does not.
        held = lock
        for _ in range(steps(total, n, t)):
            with held:
                counter = counter + 1

    elapsed, _ = run_threads(n, work)
    check = "ok" if counter == total else f"the locked counter ended at {counter}, expected {total}"
    return elapsed, check, {}


PRIVATE_LIST_CAP = 10_000


def shared_lock(n, total):
    lock = threading.Lock()

    def work(t):
        # Nothing inside: the section of the Rust twin is a load and a store, and a counter
        # here would cost an interpreter more than the lock does.
        held = lock  # a local, as in counter_locked
        i = -1
        for i in range(steps(total, n, t)):
            with held:
                pass
        return i + 1

    elapsed, acquired = run_threads(n, work)
    check = first_wrong(n, total, acquired, lambda s: s)
    if check == "ok" and lock.locked():
        check = "the lock is still held after every thread released it"
    return elapsed, check, {}


def list_append_private(n, total):
    def work(t):
        # A fresh list every PRIVATE_LIST_CAP items, as in the Rust twin.
        items, held = [], 0
        for i in range(steps(total, n, t)):
            if i % PRIVATE_LIST_CAP == 0 and i > 0:
                held += len(items)
                items = []
            items.append(i % 1000)
        return held + len(items)

    elapsed, counted = run_threads(n, work)
    return elapsed, first_wrong(n, total, counted, lambda s: s), {}


SHARED_ROUND = 250_000


def in_rounds(n, total, new, fill, check):
    """Works on a shared container in rounds of SHARED_ROUND units, as the Rust twin does: each
    thread does its share of a round on that round's container, all meet, and thread 0 checks
    the container (check(container, units) describes what is wrong with it, or returns None)
    and drops it before the next round starts. A round is timed from the earliest thread's
    start to the last one's end, and the drop of its container is timed too; the checks and the
    waits are not. Returns (elapsed, the first round's failure or "ok")."""
    sizes = [min(SHARED_ROUND, total - r) for r in range(0, total, SHARED_ROUND)]
    containers = [new() for _ in sizes]
    round_start, round_end = threading.Barrier(n), threading.Barrier(n)

    def work(t):
        try:
            return rounds(t)
        except BaseException:
            # The others leave their waits, broken, instead of waiting for this thread.
            round_start.abort()
            round_end.abort()
            raise

    def rounds(t):
        spans, failures, base, drops = [], [], 0, 0.0
        for r, size in enumerate(sizes):
            round_start.wait()
            started = time.perf_counter()
            fill(containers[r], base + t, n, steps(size, n, t))
            spans.append((started, time.perf_counter()))
            round_end.wait()
            if t == 0:
                wrong = check(containers[r], range(base, base + size))
                if wrong is not None:
                    failures.append(f"round {r}: {wrong}")
                dropping = time.perf_counter()
                containers[r] = None  # the last reference: frees the container and its items
                drops += time.perf_counter() - dropping
            base += size
        return spans, failures, drops

    _, results = run_threads(n, work)
    elapsed = sum(
        max(spans[r][1] for spans, _, _ in results) - min(spans[r][0] for spans, _, _ in results)
        for r in range(len(sizes))
    )
    failures, drops = results[0][1], results[0][2]
    return elapsed + drops, failures[0] if failures else "ok"


def each_unit_once(values, units):
    """What is wrong with values, the ints a round's container held, if anything: each of units
    must be there exactly once, and nothing else."""
    seen = [False] * len(units)
    held = 0
    for value in values:
        held += 1
        offset = value - units.start if isinstance(value, int) else -1
        if not 0 <= offset < len(units):
            return f"{value!r} held, outside {units.start}..{units.stop}"
        if seen[offset]:
            return f"{value!r} held twice"
        seen[offset] = True
    return None if held == len(units) else f"{held} held after {len(units)} units"


def list_append_shared(n, total):
    def fill(items, first, step, count):
        for i in range(count):
            items.append(first + i * step)

    def check(items, appended):
        wrong = each_unit_once(items, appended)
        return wrong and f"the shared list: {wrong}"

    elapsed, check = in_rounds(n, total, list, fill, check)
    return elapsed, check, {}


KEYS = [f"key-{k}" for k in range(1000)]


def dict_private(n, total):
    def work(t):
        d, s, i = {}, 0, -1
        # The thread's own keys, as in the Rust twin: the module's would be shared, and every
        # use would count a reference to another thread's string in a free-threaded interpreter.
        keys = [f"key-{k}" for k in range(1000)]
        for i in range(steps(total, n, t)):
            k = keys[i % 1000]
            d[k] = i % 1000
            s += d[k]
        return s, len(d), i + 1

    elapsed, results = run_threads(n, work)
    return elapsed, first_wrong(
        n, total, results, lambda s: (sum(i % 1000 for i in range(s)), min(s, 1000), s)
    ), {}


def dict_shared_read(n, total):
    # Ordinary mortal values, made at run time (code constants are immortal in free-threaded
    # CPython, which would not test a mortal shared object).
    d = {k: float(i) for i, k in enumerate(KEYS)}

    def work(t):
        s, i = 0.0, -1
        # Locals: a closure's variable would count a reference to the shared dict on every
        # read in a free-threaded interpreter, which the Rust twin does not.
        keys, mapping = KEYS, d
        for i in range(steps(total, n, t)):
            s += mapping[keys[i % 1000]]
        return s, i + 1

    elapsed, results = run_threads(n, work)
    return elapsed, first_wrong(
        n, total, results, lambda s: (sum(float(i % 1000) for i in range(s)), s)
    ), {}


def dict_shared_write(n, total):
    def fill(d, first, step, count):
        for i in range(count):
            k = first + i * step
            d[k] = k + 1

    def check(d, inserted):
        # Each key once, and each with its own value (a value is the key plus one).
        wrong = each_unit_once((k if v == k + 1 else None for k, v in d.items()), inserted)
        return wrong and f"the shared dict: {wrong}"

    elapsed, check = in_rounds(n, total, dict, fill, check)
    return elapsed, check, {}


class Point:
    pass


INSTANCES_HELD = 100_000


def object_create(n, total):
    def work(t):
        # Up to INSTANCES_HELD instances alive at once, as in the Rust twin.
        held, s, i = [], 0, -1
        for i in range(steps(total, n, t)):
            if len(held) == INSTANCES_HELD:
                held.clear()
            p = Point()
            p.x = i % 100
            p.y = 1
            s += p.x
            held.append(p)
        held.clear()
        return s, i + 1

    elapsed, results = run_threads(n, work)
    return elapsed, first_wrong(n, total, results, lambda s: (sum(i % 100 for i in range(s)), s)), {}


def float_mult(n, total):
    def work(t):
        x = 1.0
        for _ in range(steps(total, n, t)):
            x *= 1.000001
        return x

    def serial(s):
        x = 1.0
        for _ in range(s):
            x *= 1.000001
        return x

    elapsed, results = run_threads(n, work)
    # Bit for bit: each thread multiplies in the same order as a serial run.
    return elapsed, first_wrong(n, total, results, serial), {}


POOL = [f"identifier_{i}" for i in range(500)]


def string_intern(n, total):
    # The table holds every text before the threads start, and each thread looks up copies that
    # are not themselves interned: every sys.intern is a lookup in the shared table (an interned
    # string would return at once), as in the Rust twin.
    for text in POOL:
        sys.intern(text)

    def work(t):
        intern = sys.intern
        copies = ["".join(["identifier_", str(i)]) for i in range(500)]
        first = [intern(c) for c in copies]
        bad, i = 0, -1
        for i in range(steps(total, n, t)):
            j = (i * 7 + t) % 500
            if intern(copies[j]) is not first[j]:
                bad += 1
        return bad, i + 1, first

    elapsed, results = run_threads(n, work)
    check = first_wrong(n, total, [(bad, done) for bad, done, _ in results], lambda s: (0, s))
    unique = all(
        first[j] is results[0][2][j] is sys.intern(POOL[j]) for _, _, first in results for j in range(500)
    )
    if check == "ok" and not unique:
        check = "threads interned a text as different objects"
    return elapsed, check, {}


def shared_refcount(n, total):
    slot = []
    published = threading.Barrier(n)

    def work(t):
        if t == 0:
            # Made at run time by thread 0 and shared, as in the Rust twin: a mortal float (a
            # code constant would be immortal in free-threaded CPython).
            slot.append(float("1.5"))
        published.wait()
        v = slot[0]
        i = -1
        for i in range(share(total, n, t)):
            w = v  # takes a reference
            del w  # and drops it
        if sabotaged(t):
            slot.append(v)  # keeps a reference it should have dropped
        return i + 1

    elapsed, done = run_threads(n, work)
    # The count is back where it started: held by the slot alone, as a fresh float in a
    # one-item list is.
    control = [float("1.5")]
    count, expected = sys.getrefcount(slot[0]), sys.getrefcount(control[0])
    check = first_wrong(n, total, done, lambda s: s)
    if check == "ok" and count != expected:
        check = f"the shared object's count is {count}, expected {expected}"
    return elapsed, check, {}


class Config:
    pass


def shared_attribute_read(n, total):
    config = Config()
    config.scale = float("0.5")  # mortal, made at run time

    def work(t):
        s, i = 0.0, -1
        shared = config  # a local, as in dict_shared_read
        for i in range(steps(total, n, t)):
            s += shared.scale
        return s, i + 1

    elapsed, results = run_threads(n, work)
    return elapsed, first_wrong(n, total, results, lambda s: (s * 0.5, s)), {}


def shared_attribute_keep(n, total):
    config = Config()
    config.scale = float("0.5")  # mortal, made at run time
    # The count before the run, read as after it.
    baseline = sys.getrefcount(config.scale)
    still_held = []

    def work(t):
        kept = [None]  # each read replaces the value kept before, dropping it
        s, i = 0.0, -1
        shared = config  # a local, as in dict_shared_read
        for i in range(share(total, n, t)):
            # Two counted references to the shared float per read, where the Rust twin takes
            # one: the attribute load's, and the list's own (a store into a list takes a
            # reference of its own, whatever the value came from); CPython's bytecode has no
            # way to move the loaded reference into the list.
            v = shared.scale
            s += v
            kept[0] = v
        if sabotaged(t):
            still_held.append(kept)  # keeps a reference it should have dropped
        return s, i + 1

    elapsed, results = run_threads(n, work)
    count = sys.getrefcount(config.scale)
    check = first_wrong(n, total, results, lambda s: (s * 0.5, s))
    if check == "ok" and count != baseline:
        check = f"the shared value's count is {count}, expected {baseline} as before the run"
    return elapsed, check, {}


class Node:
    pass


def nodes_alive():
    """The Node instances the collector tracks (every one that can be in a cycle)."""
    return sum(1 for o in gc.get_objects() if type(o) is Node)


def collected_so_far():
    """What every collection so far found unreachable (and freed), all generations."""
    return sum(generation["collected"] for generation in gc.get_stats())


def cycle_create(n, total):
    # As in the Rust twin: two plain instances, nothing run when they are made or freed, and
    # the count of survivors and of what the collector found taken outside the timed region.
    gc.collect()
    before, collected = nodes_alive(), collected_so_far()
    kept = []

    def work(t):
        made = 0
        for _ in range(steps(total, n, t)):
            a, b = Node(), Node()
            a.other = b
            b.other = a
            made += 1
        if sabotaged(t):
            kept.append(a)  # keeps a cycle alive
        return made

    elapsed, results = run_threads(n, work)
    gc.collect()
    left = nodes_alive() - before
    found = collected_so_far() - collected
    check = first_wrong(n, total, results, lambda s: s)
    if check == "ok" and left != 0:
        check = f"{left} instances left alive after a collection"
    # And the collector freed them: nothing is left also when nothing was made.
    if check == "ok" and found < 2 * total:
        check = f"the collections found {found} objects unreachable, fewer than the {2 * total} instances the cycles made"
    return elapsed, check, {}


PING_IO = 0.001


def percentile_ms(delays, q):
    """The q quantile in milliseconds, by nearest rank as the Rust workloads take it: the
    smallest value with at least a q share of them at or below it."""
    if not delays:
        return 0.0
    ordered = sorted(delays)
    return ordered[min(max(math.ceil(q * len(ordered)), 1), len(ordered)) - 1] * 1e3


REPLACE_SLOTS = 1024


def list_replace_shared(n, total):
    """Each thread replaces its own run of adjacent slots of one shared list with fresh floats,
    cycling through them; every slot ends with its owner's last write (the Rust twin's layout:
    the list's length is 1024 or the thread count, if larger, so that every thread owns a slot).
    """
    slots = max(REPLACE_SLOTS, n)
    items = [float(-1 - s) for s in range(slots)]

    def owned(t):
        return range(-(-t * slots // n), -(-(t + 1) * slots // n))

    def work(t):
        mine = owned(t)
        first, length = mine.start, len(mine)
        # A local: a closure's variable would count a reference to the shared list on every
        # read in a free-threaded interpreter, which the Rust twin does not.
        shared = items
        made = 0
        for k in range(steps(total, n, t)):
            shared[first + k % length] = float(k * n + t)
            made += 1
        return made

    elapsed, made = run_threads(n, work)
    check = first_wrong(n, total, made, lambda s: s)
    if check == "ok":
        for slot, value in enumerate(items):
            t = slot * n // slots
            mine = owned(t)
            place, count = slot - mine.start, share(total, n, t)
            want = float(-1 - slot) if count <= place else float(
                (place + len(mine) * ((count - 1 - place) // len(mine))) * n + t)
            if value != want:
                check = f"the shared list: slot {slot} holds {value!r}, expected {want!r}"
                break
    return elapsed, check, {}


def latency_pings(total):
    """The pings `io-latency-under-load` answers, its operations: 10 at least, for its
    percentiles."""
    return max(10, total)


def io_latency_under_load(n, total):
    """One thread answers pings (a 1 ms sleep, which releases the GIL, then the GIL taken back)
    while the others count up until it is done. CPython has one scheduling, the switch
    interval's: the Rust twin's interval round (it also runs a fair one)."""
    pings = latency_pings(total)
    done = [False]

    def work(t):
        if t == 0:
            delays = []
            try:
                for _ in range(pings + (1 if sabotaged(t) else 0)):
                    asked = time.perf_counter()
                    time.sleep(PING_IO)
                    delays.append(max(0.0, time.perf_counter() - asked - PING_IO))
            finally:
                # Whatever happens, the loading threads stop (or the run would never end).
                done[0] = True
            return delays
        start = 1_000_000
        k = start
        while not done[0]:
            k += 1
        return k - start

    elapsed, results = run_threads(n, work)
    delays = results[0]
    metrics = {"p50_ms": percentile_ms(delays, 0.5), "p99_ms": percentile_ms(delays, 0.99)}
    if len(delays) != pings:
        return elapsed, f"{len(delays)} of {pings} pings answered", metrics
    if n > 1 and sum(results[1:]) == 0:
        return elapsed, "the loading threads took no step while the pings ran", metrics
    return elapsed, "ok", metrics


def immortal_read(n, total):
    def work(t):
        s = 0
        for _ in range(steps(total, n, t)):
            a, b = None, 42
            s += (a is None) + b
        return s

    elapsed, results = run_threads(n, work)
    # Still immortal, where the interpreter can say (CPython 3.14 and later).
    is_immortal = getattr(sys, "_is_immortal", None)
    if is_immortal is not None and not (is_immortal(None) and is_immortal(42)):
        return elapsed, "None or 42 is not immortal", {}
    return elapsed, first_wrong(n, total, results, lambda s: s * 43), {}


# name: (function, total work at scale 1, what one operation is). The sizes make a 1-thread run
# take about 0.4 s on CPython 3.11 on the project's machine (at least 0.3 s).
WORKLOADS = {
    "countdown": (countdown, 13_000_000, "countdown step"),
    "countdown-processes": (countdown_processes, 13_000_000, "countdown step"),
    "io-sleep": (io_sleep, 250, "2 ms sleep"),
    "native-release": (native_release, 600 * NATIVE_CHUNK, "byte hashed"),
    "counter-race": (counter_race, 11_000_000, "increment"),
    "counter-locked": (counter_locked, 1_700_000, "locked increment"),
    "shared-lock": (shared_lock, 2_400_000, "lock acquired and released"),
    "list-append-private": (list_append_private, 7_000_000, "append"),
    "list-append-shared": (list_append_shared, 8_000_000, "append"),
    "dict-private": (dict_private, 4_700_000, "set and get"),
    "dict-shared-read": (dict_shared_read, 8_000_000, "lookup"),
    "dict-shared-write": (dict_shared_write, 4_000_000, "insert"),
    "object-create": (object_create, 1_400_000, "instance"),
    "float-mult": (float_mult, 20_000_000, "multiplication"),
    "string-intern": (string_intern, 4_200_000, "interning"),
    "shared-refcount": (shared_refcount, 29_000_000, "reference taken and dropped"),
    "shared-attribute-read": (shared_attribute_read, 20_000_000, "attribute read"),
    "shared-attribute-keep": (shared_attribute_keep, 16_000_000, "attribute read and kept"),
    "immortal-read": (immortal_read, 11_000_000, "two references taken and dropped"),
    "cycle-create": (cycle_create, 1_500_000, "cycle built and dropped"),
    "list-replace-shared": (list_replace_shared, 5_000_000, "replacement"),
    "io-latency-under-load": (io_latency_under_load, 300, "ping"),
}


def peak_rss_kib():
    try:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except ImportError:
        return 0


def usage(problem):
    print(f"error: {problem}", file=sys.stderr)
    print(f"workloads: {', '.join(WORKLOADS)}", file=sys.stderr)
    return 2


def main(argv):
    if argv[:1] == ["--info"]:
        print(json.dumps({
            "build": build_name(), "version": platform.python_version(),
            "free_threaded": free_threaded(), "implementation": platform.python_implementation(),
            "executable": sys.executable, "header_size": None, "count_strategy": None,
        }))
        return 0
    if argv[:1] == ["--child-countdown"] and len(argv) == 3:
        print(child_countdown(int(argv[1]), int(argv[2])))
        return 0
    if argv[:1] == ["--list"]:
        print(json.dumps([{"name": name, "unit": unit} for name, (_, _, unit) in WORKLOADS.items()]))
        return 0
    if not argv or argv[0] not in WORKLOADS:
        return usage("unknown workload")
    name, threads, scale, warm_up = argv[0], 1, 1.0, WARM_UP_FRACTION
    rest = argv[1:]
    while rest:
        flag, value, rest = rest[0], rest[1] if len(rest) > 1 else None, rest[2:]
        # The runner's bounds: at most 1024 threads, a scale above 0 and at most 1000, a warm-up
        # from 0 to 1 of the size.
        try:
            if flag == "--threads" and 1 <= int(value) <= 1024:
                threads = int(value)
            elif flag == "--scale" and 0 < float(value) <= 1000:
                scale = float(value)
            elif flag == "--warm-up" and 0 <= float(value) <= 1:
                warm_up = float(value)
            else:
                return usage(f"bad argument {flag} {value}")
        except (TypeError, ValueError):
            return usage(f"bad argument {flag} {value}")
    function, size, _ = WORKLOADS[name]
    # The total does not grow with the thread count (strong scaling).
    total = max(1, int(size * scale))
    check = "ok"
    if warm_up > 0:
        _, warm_check, _ = function(threads, max(1, int(total * warm_up)))
        if warm_check != "ok":
            check = f"in the warm-up pass: {warm_check}"
    elapsed, measured_check, metrics = function(threads, total)
    if check == "ok":
        check = measured_check
    print(json.dumps({"workload": name, "build": build_name(), "threads": threads, "elapsed_s": elapsed,
                      "ops": latency_pings(total) if name == "io-latency-under-load" else total,
                      "warm_up": warm_up, "check": check, "metrics": metrics,
                      "peak_rss_kib": peak_rss_kib()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
