"""One run of one stream processor (Leat on Kafka or Kafka Streams) on one
workload, measured from outside with confluent-kafka (bench/kafka-streams/run.sh).

    measure.py round --bootstrap ADDR --workload uppercase|word-count \
        --input T --output T --count N [--rate R --latency-seconds S] \
        --log FILE --ready PATTERN --group GROUP [--broker-pid PID] [--pid-file F] -- COMMAND...
    measure.py table --raw raw.jsonl... [--machine machine.txt...]

`round`:
1. creates the input and output topics (the admin API, 4 partitions);
2. preloads COUNT events to the input (partition i % partitions, key k<i>,
   values of about SIZE bytes; word-count: distinct words of a fixed
   vocabulary), acks=all, idempotent;
3. starts COMMAND (the system: its standard output and error to --log)
   and, every 50 ms, asks the broker for the input offsets the system's
   consumer group (--group) has committed: the **throughput** is COUNT /
   (time they first cover every preloaded event - time the system's log
   first shows --ready, its start of consuming). Under exactly-once an
   input offset is committed in the transaction of its outputs, so that is
   when the last outputs are committed. The outputs are read afterwards
   (a read_committed consumer from the beginning): reading them while the
   system runs put the measuring client on the critical path (word count's
   11 outputs an event in Python: about 140,000 outputs/s on one core,
   below what either system produces) and on the system's cores;
4. **latency**: produces at --rate events/s for --latency-seconds, each
   event's value carrying its send time (time.time_ns()); the same consumer
   takes each output's receive time minus that send time (uppercase: the
   value begins with X<ns>Y<seq>; word-count: each event holds one word
   x<ns>y<seq> of its own, counted once);
5. checks the outputs (uppercase: each input's uppercased value, with its
   key, exactly once; word-count: for every word, the counts emitted are
   exactly 1..k once per input partition that saw the word k times), stops
   the system with SIGTERM and prints one JSON object.

A wrong or missing output makes the run fail (non-zero exit, the reason on
standard error): it is not a figure. The helpers shared with the earlier
benchmark (client configuration, percentiles, failing) are bench/kafka/bench.py's.
"""

import argparse
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "kafka"))
import bench  # noqa: E402  (bench/kafka/bench.py)
from bench import fail, percentile  # noqa: E402
from confluent_kafka import (  # noqa: E402
    ConsumerGroupTopicPartitions,
    Consumer,
    KafkaError,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient  # noqa: E402

# The word-count vocabulary: 1,000 fixed words of 8 letters (4 syllables).
SYLLABLES = ["ba", "ce", "di", "fo", "gu", "ha", "je", "ki", "lo", "mu", "na", "pe", "ri", "so", "tu", "ve"]
VOCAB = ["".join(SYLLABLES[(i >> s) & 15] for s in (12, 8, 4, 0)) for i in range(1000)]
FILLER = ("the quick brown fox jumps over the lazy dog " * 4).strip()


def cpu_seconds(pid):
    """User + system CPU seconds of process `pid` so far (all its threads)."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class Workload:
    """What is produced, what is expected back, and the check."""

    def __init__(self, name, size, partitions):
        self.name = name
        self.size = size
        self.partitions = partitions
        # word-count: occurrences of each word per input partition, and the
        # counts seen per word (index = count, value = times seen).
        self.totals = [dict() for _ in range(partitions)]
        self.seen_counts = {}
        self.expected_outputs = 0
        self.outputs = 0
        self.seen = None  # uppercase: bytearray, one flag per preloaded event
        self.tokens = {}  # latency events: seq -> send time (ns)
        self.token_seen = {}  # seq -> times seen
        self.latencies = []  # ms
        self.errors = []

    # --- values ---
    def preload_value(self, i, rng):
        if self.name == "uppercase":
            head = f"e{i:09d} "
            return (head + FILLER)[: self.size].encode()
        words = rng.sample(VOCAB, max(1, (self.size + 1) // 9))
        self.count_words(words, i % self.partitions)
        return " ".join(words).encode()

    def latency_value(self, seq, now_ns, rng):
        token = f"x{now_ns}y{seq}"
        if self.name == "uppercase":
            self.expected_outputs += 1
            return (token + " " + FILLER)[: max(self.size, len(token))].encode()
        words = rng.sample(VOCAB, max(1, (self.size + 1 - len(token) - 1) // 9))
        self.count_words(words, seq % self.partitions)
        self.expected_outputs += 1
        return (token + " " + " ".join(words)).encode()

    def count_words(self, words, partition):
        t = self.totals[partition]
        for w in words:
            t[w] = t.get(w, 0) + 1
        self.expected_outputs += len(words)

    # --- outputs ---
    def take(self, key, value, now_ns):
        """One output read back; records a latency for a latency event's."""
        self.outputs += 1
        if self.name == "uppercase":
            if value[:1] == b"E":
                i = int(value[1:10])
                if value != (f"e{i:09d} " + FILLER)[: self.size].upper().encode() or key != b"k%d" % i:
                    self.error(f"output {key!r}: {value!r} is not the input's uppercased")
                elif self.seen[i]:
                    self.error(f"event {i}: a second output")
                else:
                    self.seen[i] = 1
            elif value[:1] == b"X":
                self.token(value.split(b" ", 1)[0].lower(), now_ns)
            else:
                self.error(f"unexpected output {key!r}: {value!r}")
            return
        if key[:1] == b"x":
            if value != b"1":
                self.error(f"latency word {key!r} counted {value!r}")
            self.token(key, now_ns)
            return
        word = key.decode()
        count = int(value)
        counts = self.seen_counts.get(word)
        if counts is None:
            counts = self.seen_counts[word] = []
        while len(counts) <= count:
            counts.append(0)
        counts[count] += 1

    def token(self, token, now_ns):
        send_ns, seq = token[1:].split(b"y")
        seq = int(seq)
        n = self.token_seen.get(seq, 0) + 1
        self.token_seen[seq] = n
        if n > 1:
            self.error(f"latency event {seq}: a second output")
        else:
            self.latencies.append((now_ns - int(send_ns)) / 1e6)

    def error(self, message):
        if len(self.errors) < 10:
            self.errors.append(message)

    def preload_done(self, count):
        """Whether every preloaded event's outputs are in."""
        if self.name == "uppercase":
            return self.outputs >= count
        return self.outputs >= self.expected_outputs

    def check(self, count, latency_events):
        """The reasons the outputs are wrong (empty: right)."""
        problems = list(self.errors)
        if self.name == "uppercase":
            missing = len(self.seen) - sum(self.seen)
            if missing:
                problems.append(f"{missing} of {count} preloaded events without an output")
        else:
            expected = {}
            for t in self.totals:
                for w, k in t.items():
                    e = expected.setdefault(w, [0])
                    while len(e) <= k:
                        e.append(0)
                    for c in range(1, k + 1):
                        e[c] += 1
            for w in sorted(set(expected) | set(self.seen_counts)):
                got = list(self.seen_counts.get(w, [0]))
                want = list(expected.get(w, [0]))
                n = max(len(got), len(want))
                got += [0] * (n - len(got))
                want += [0] * (n - len(want))
                if got != want:
                    bad = [c for c in range(n) if got[c] != want[c]][:5]
                    problems.append(
                        f"word {w}: counts {bad} emitted {[got[c] for c in bad]} times, "
                        f"expected {[want[c] for c in bad]}"
                    )
                    if len(problems) > 10:
                        break
        missing = latency_events - len(self.token_seen)
        if missing:
            problems.append(f"{missing} of {latency_events} latency events without an output")
        if self.outputs != self.expected_outputs:
            problems.append(f"{self.outputs} outputs, {self.expected_outputs} expected")
        return problems


class LogWatch:
    """The first time a pattern appears in a growing log file."""

    def __init__(self, path, pattern):
        self.path, self.pattern, self.offset, self.found, self.tail = path, pattern.encode(), 0, None, b""

    def poll(self):
        if self.found is not None:
            return self.found
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return None
        self.offset += len(data)
        text = self.tail + data
        if self.pattern in text:
            self.found = time.perf_counter()
        self.tail = text[-len(self.pattern):]
        return self.found


def committed_offsets(admin, group, topic, partitions):
    """The input offsets `group` has committed (0 where none), by partition."""
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(partitions)])
    result = admin.list_consumer_group_offsets([request], request_timeout=10)[group].result()
    out = [0] * partitions
    for tp in result.topic_partitions:
        if tp.error is None and tp.offset >= 0:
            out[tp.partition] = tp.offset
    return out


def producer_config(args, linger_ms):
    config = bench.base_config(args)
    config.update(
        {
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": linger_ms,
            "compression.type": "none",
            "queue.buffering.max.messages": 100_000,
        }
    )
    return config


def send(producer, topic, partition, key, value, deadline):
    while True:
        try:
            producer.produce(topic, value, key, partition=partition)
            return
        except BufferError:
            producer.poll(0.01)
            if time.perf_counter() > deadline:
                fail("produce timed out")


def round_(args):
    command = args.command_args
    if not command:
        fail("no system command after --")
    work = Workload(args.workload, args.size, args.partitions)
    with contextlib.redirect_stdout(sys.stderr):
        for topic in (args.input, args.output):
            bench.create(argparse.Namespace(bootstrap=args.bootstrap, token=None, topic=topic,
                                            partitions=args.partitions))

    # 1. Preload.
    rng = random.Random(args.seed)
    t = time.perf_counter()
    producer = Producer(producer_config(args, 5))
    deadline = t + args.timeout
    for i in range(args.count):
        send(producer, args.input, i % args.partitions, b"k%d" % i, work.preload_value(i, rng), deadline)
        if i % 1000 == 0:
            producer.poll(0)
    if producer.flush(args.timeout):
        fail("the preload was not all delivered")
    preload_s = time.perf_counter() - t
    if args.workload == "uppercase":
        work.expected_outputs = args.count
        work.seen = bytearray(args.count)

    # 2. The reader, then the system.
    consumer = Consumer(
        dict(
            bench.base_config(args),
            **{
                "group.id": f"measure-{os.getpid()}-{time.time_ns()}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                # Latency: answer a fetch as soon as anything is there.
                "fetch.wait.max.ms": 10,
            },
        )
    )
    consumer.assign([TopicPartition(args.output, p, -2) for p in range(args.partitions)])
    consumer.consume(num_messages=1, timeout=1.0)  # connected before the clock starts
    # The latency phase's producer, made now: connected, with its producer
    # id (idempotence) and the input's metadata long before its clock
    # starts. Made when that phase began, its start-up (0.25 to 1 s here)
    # went into the first events' latency, for every system alike.
    lp = None
    if args.rate > 0 and args.latency_seconds > 0:
        lp = Producer(producer_config(args, 1))
        lp.list_topics(args.input, timeout=10)
    # Where the preload ends, per input partition (no transaction markers:
    # the preload is not transactional).
    ends = [consumer.get_watermark_offsets(TopicPartition(args.input, p), timeout=10)[1]
            for p in range(args.partitions)]
    admin = AdminClient(bench.base_config(args))
    committed = [0] * args.partitions

    log = open(args.log, "ab")
    watch = LogWatch(args.log, args.ready)
    broker_cpu0 = cpu_seconds(args.broker_pid)
    spawned = time.perf_counter()
    system = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if args.pid_file:
        with open(args.pid_file, "w") as f:
            f.write(f"{system.pid}\n")

    def stop_system(*_):
        if system.poll() is None:
            system.terminate()
            try:
                system.wait(60)
            except subprocess.TimeoutExpired:
                system.kill()
                system.wait()

    def on_term(signum, _frame):
        stop_system()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    def read(timeout):
        msgs = consumer.consume(num_messages=10_000, timeout=timeout)
        now = time.time_ns()
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                fail(f"consume error: {err}")
            work.take(m.key() or b"", m.value() or b"", now)
        return len(msgs)

    def alive():
        if system.poll() is not None:
            fail(f"the system exited ({system.returncode}) early; log: {args.log}")

    # 3. Throughput: until the system's group has committed every preloaded
    # event's offset (its outputs are then committed), then every output read.
    first = last = None
    deadline = spawned + args.timeout
    try:
        while True:
            if time.perf_counter() > deadline:
                fail(f"offsets {committed} of {ends} committed after {args.timeout}s; log: {args.log}")
            alive()
            watch.poll()
            committed = committed_offsets(admin, args.group, args.input, args.partitions)
            now = time.perf_counter()
            if first is None and any(c > 0 for c in committed):
                first = now
            if all(c >= e for c, e in zip(committed, ends)):
                last = now
                break
            time.sleep(0.05)
        ready = watch.poll()
        if ready is None:
            fail(f"no {args.ready!r} in {args.log}")
        system_cpu_t = cpu_seconds(system.pid)
        broker_cpu_t = cpu_seconds(args.broker_pid)
        while not work.preload_done(args.count):
            if time.perf_counter() > deadline:
                fail(f"{work.outputs} of {work.expected_outputs} outputs after {args.timeout}s; log: {args.log}")
            read(0.2)
        seconds = last - ready
        throughput = {
            "events": args.count,
            "outputs": work.outputs,
            "seconds": seconds,
            "events_per_s": args.count / seconds,
            "outputs_per_s": work.outputs / seconds,
            "startup_s": ready - spawned,
            "first_commit_s": first - ready,
            "events_per_s_from_spawn": args.count / (last - spawned),
            "system_cpu_s": system_cpu_t,
            "broker_cpu_s": broker_cpu_t - broker_cpu0 if broker_cpu0 is not None else None,
            "preload_s": preload_s,
            "end": "committed input offsets",
        }
        print(f"measure: throughput {throughput['events_per_s']:,.0f} events/s", file=sys.stderr)

        # 4. Latency at a fixed rate.
        latency = None
        sent = 0
        if lp is not None:
            start = time.perf_counter()
            end = start + args.latency_seconds
            while True:
                now = time.perf_counter()
                if now >= end:
                    break
                due = min(int((now - start) * args.rate), int(args.latency_seconds * args.rate))
                while sent < due:
                    send(lp, args.input, sent % args.partitions, b"l%d" % sent,
                         work.latency_value(sent, time.time_ns(), rng), end + 60)
                    sent += 1
                lp.poll(0)
                alive()
                read(0.002)
            if lp.flush(60):
                fail("the latency events were not all delivered")
            drain = time.perf_counter() + args.timeout
            while len(work.token_seen) < sent or work.outputs < work.expected_outputs:
                if time.perf_counter() > drain:
                    break
                alive()
                read(0.05)
        # A moment more, for outputs that should not be there.
        settle = time.perf_counter() + args.settle
        while time.perf_counter() < settle:
            read(0.1)
        lat = sorted(work.latencies)
        if lat:
            latency = {
                "rate": args.rate,
                "seconds": args.latency_seconds,
                "events": sent,
                "p50_ms": percentile(lat, 50),
                "p99_ms": percentile(lat, 99),
                "p999_ms": percentile(lat, 99.9),
                "max_ms": lat[-1],
            }
            print(f"measure: latency p50 {latency['p50_ms']:.1f} ms, p99 {latency['p99_ms']:.1f} ms",
                  file=sys.stderr)
        system_cpu = cpu_seconds(system.pid)
        broker_cpu = cpu_seconds(args.broker_pid)
    finally:
        stop_system()
        consumer.close()
    problems = work.check(args.count, sent)
    # Leat's summary lines: "processor P: N event(s) in, M event(s) out, T transaction(s)".
    with open(args.log, errors="replace") as f:
        transactions = [int(n) for n in re.findall(r"(\d+) transaction\(s\)", f.read())]
    result = {
        "workload": args.workload,
        "count": args.count,
        "size": args.size,
        "partitions": args.partitions,
        "throughput": throughput,
        "latency": latency,
        "system_cpu_s": system_cpu,
        "broker_cpu_s_total": broker_cpu - broker_cpu0 if broker_cpu0 is not None else None,
        "exit_code": system.returncode,
        "transactions": sum(transactions) if transactions else None,
        "correct": not problems,
        "problems": problems,
    }
    print(json.dumps(result))
    if problems:
        print("measure: WRONG OUTPUT: " + "; ".join(problems), file=sys.stderr)
        sys.exit(3)


def table(args):
    """The Markdown table of raw.jsonl files: medians (min-max), ratios."""
    import statistics

    rows = [json.loads(line) for path in args.raw for line in open(path) if line.strip()]
    out = []
    for path in args.machine or []:
        out += ["```"] + [line.rstrip("\n") for line in open(path)] + ["```", ""]
    systems = list(dict.fromkeys(r["system"] for r in rows))
    metrics = [
        ("events/s (start of consuming to last input offset committed)", lambda r: r["throughput"]["events_per_s"], "{:,.0f}"),
        ("outputs/s", lambda r: r["throughput"]["outputs_per_s"], "{:,.0f}"),
        ("start to consuming (s)", lambda r: r["throughput"]["startup_s"], "{:.1f}"),
        ("first commit after start of consuming (s)", lambda r: r["throughput"].get("first_commit_s"), "{:.2f}"),
        ("system CPU s, throughput phase", lambda r: r["throughput"]["system_cpu_s"], "{:.1f}"),
        ("broker CPU s, throughput phase", lambda r: r["throughput"]["broker_cpu_s"], "{:.1f}"),
        ("latency rate (events/s)", lambda r: (r["latency"] or {}).get("rate"), "{:,.0f}"),
        ("latency p50 (ms)", lambda r: (r["latency"] or {}).get("p50_ms"), "{:.1f}"),
        ("latency p99 (ms)", lambda r: (r["latency"] or {}).get("p99_ms"), "{:.1f}"),
        ("latency p99.9 (ms)", lambda r: (r["latency"] or {}).get("p999_ms"), "{:.1f}"),
        ("latency max (ms)", lambda r: (r["latency"] or {}).get("max_ms"), "{:.1f}"),
    ]
    for workload in dict.fromkeys(r["workload"] for r in rows):
        wrows = [r for r in rows if r["workload"] == workload]
        good = [r for r in wrows if r["correct"]]
        counts = sorted({r["count"] for r in wrows})
        out.append(f"### {workload}")
        out.append("")
        rounds = {s: sum(1 for r in good if r["system"] == s) for s in systems}
        out.append(
            f"{', '.join(f'{c:,}' for c in counts)} preloaded events of about {wrows[0]['size']} bytes, "
            f"{wrows[0]['partitions']} partitions; correct rounds: "
            + ", ".join(f"{s} {n}" for s, n in rounds.items())
            + ". Median (min–max) over the correct rounds."
        )
        wrong = [r for r in wrows if not r["correct"]]
        for r in wrong:
            out.append(f"\n**WRONG RESULT** ({r['system']}, round {r['round']}): {'; '.join(r['problems'])}")
        out.append("")
        # The ratios: Leat against Kafka Streams, and against leat-base
        # (another leat binary) when the run had one.
        ratios = [(a, b) for a, b in (("leat", "kstreams"), ("leat", "leat-base")) if a in systems and b in systems]
        out.append("| metric | " + " | ".join(systems) + "".join(f" | {a} / {b}" for a, b in ratios) + " |")
        out.append("|---|" + "---|" * (len(systems) + len(ratios)))
        for name, get, fmt in metrics:
            cells, med = [], {}
            for s in systems:
                values = [v for v in (get(r) for r in good if r["system"] == s) if v is not None]
                if not values:
                    cells.append("–")
                    continue
                med[s] = statistics.median(values)
                cell = fmt.format(med[s])
                if len(values) > 1:
                    cell += f" ({fmt.format(min(values))}–{fmt.format(max(values))})"
                cells.append(cell)
            shown = [f"{med[a] / med[b]:.2f}×" if med.get(a) and med.get(b) else "–" for a, b in ratios]
            out.append(f"| {name} | " + " | ".join(cells + shown) + " |")
        out.append("")
        out.append("| round | system | events/s | p99 ms | correct | leat txns | load before | load after |")
        out.append("|---|---|---|---|---|---|---|---|")
        for r in wrows:
            p99 = (r["latency"] or {}).get("p99_ms")
            out.append(
                f"| {r['round']} | {r['system']} | {r['throughput']['events_per_s']:,.0f} "
                f"| {'–' if p99 is None else f'{p99:.1f}'} | {'yes' if r['correct'] else 'NO'} "
                f"| {r.get('transactions') or '–'} "
                f"| {' '.join(map(str, r.get('load_before', [])))} | {' '.join(map(str, r.get('load_after', [])))} |"
            )
        out.append("")
    print("\n".join(out))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cmd", choices=["round", "table"])
    parser.add_argument("--bootstrap")
    parser.add_argument("--workload", choices=["uppercase", "word-count"])
    parser.add_argument("--input")
    parser.add_argument("--output")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--rate", type=float, default=0, help="latency phase: events/s (0: none)")
    parser.add_argument("--latency-seconds", type=float, default=30)
    parser.add_argument("--settle", type=float, default=2.0, help="seconds of reading after the last output")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--log", help="the system's standard output and error")
    parser.add_argument("--ready", help="the system's log line of its start of consuming")
    parser.add_argument("--group", help="the system's consumer group (Leat's processor, Kafka Streams' application id)")
    parser.add_argument("--broker-pid", type=int)
    parser.add_argument("--pid-file")
    parser.add_argument("--raw", nargs="+")
    parser.add_argument("--machine", nargs="+")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.command_args = argv[split + 1 :]
    args.token = None
    if args.cmd == "table":
        table(args)
    else:
        round_(args)


if __name__ == "__main__":
    main()
