"""Stalls of the machine itself: reads the monotonic clock in a loop for
SECONDS and reports every gap over MS milliseconds (a thread that was not
running). Run one copy per core at once to see stalls of the whole machine
(gaps that begin at the same instant in every copy); optionally writes the
gaps, `<ns> <ms>` per line, to FILE.

    python3 bench/hiccup.py SECONDS MS [FILE]
"""
import sys
import time

if len(sys.argv) < 3:
    sys.exit(__doc__)
seconds, threshold = float(sys.argv[1]), int(float(sys.argv[2]) * 1e6)
end = time.monotonic_ns() + int(seconds * 1e9)
last = time.monotonic_ns()
gaps = []
while last < end:
    now = time.monotonic_ns()
    if now - last > threshold:
        gaps.append((now, (now - last) / 1e6))
    last = now
largest = sorted((round(g, 1) for _, g in gaps), reverse=True)[:10]
print(f"{len(gaps)} gaps over {threshold / 1e6} ms in {seconds} s; largest: {largest}")
if len(sys.argv) > 3:
    with open(sys.argv[3], "w") as out:
        out.writelines(f"{t} {g}\n" for t, g in gaps)
