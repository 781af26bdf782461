"""A member that dies without leaving: its session expires, and the other
member of the group takes its partitions.

argv: ADDR TOKEN TOPIC GROUP PARTITIONS

Member A runs in a child process; member B joins; once they share the
partitions, A is killed (SIGKILL: no LeaveGroup). B must own every
partition after A's session timeout (3 s) and before 3 times that. Prints
one JSON line: the split and how long the takeover took.
"""

import json
import multiprocessing
import os
import signal
import sys
import time

from confluent_kafka import Consumer

from common import confluent_config

SESSION_TIMEOUT_MS = 3000


def fail(message):
    # Exits at once: librdkafka's threads would keep the process alive.
    print(message, file=sys.stderr, flush=True)
    os._exit(1)


def member(addr, token, group, name):
    return Consumer(
        confluent_config(
            addr,
            token,
            **{
                "group.id": group,
                "client.id": f"member-{name}",
                "session.timeout.ms": SESSION_TIMEOUT_MS,
                "heartbeat.interval.ms": 300,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            },
        )
    )


def run_a(addr, token, topic, group):
    a = member(addr, token, group, "a")
    a.subscribe([topic])
    while True:
        a.poll(0.1)


def owned(consumer):
    return {tp.partition for tp in consumer.assignment()}


def main():
    addr, token, topic, group, partitions = sys.argv[1:6]
    everything = set(range(int(partitions)))
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=run_a, args=(addr, token, topic, group), daemon=True)
    child.start()
    # A alone first: B joins a group A leads.
    time.sleep(2)
    b = member(addr, token, group, "b")
    b.subscribe([topic])
    deadline = time.time() + 60
    while not (owned(b) and owned(b) != everything):
        if time.time() > deadline:
            fail(f"B never shared the partitions with A: owns {sorted(owned(b))}")
        b.poll(0.1)
    split = sorted(owned(b))
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    killed = time.time()
    while owned(b) != everything:
        if time.time() > killed + 3 * SESSION_TIMEOUT_MS / 1000:
            fail(f"B did not take over A's partitions: owns {sorted(owned(b))}")
        b.poll(0.1)
    took = time.time() - killed
    b.close()
    print(json.dumps({"b_shared": split, "takeover_secs": took}), flush=True)
    os._exit(0)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - any failure fails the test
        fail(repr(e))
