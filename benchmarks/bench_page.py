"""The demo page under load: concurrent real clients, good and bad uploads, against the page as a user serves it.

    make bench-page           # or: python benchmarks/bench_page.py [--ckpt RUN] [--clients 10] [--requests 50]

`python -m cremad_lit app ckpt_path=<model>` in a subprocess (its defaults: 2 worker processes, a queue of 16, a 100 MB
upload limit, 60 s per judgement), then `--clients` gradio_client clients at once send `--requests` judgements in all:
real RAVDESS takes (actors 01-15) mixed with a damaged copy, a text file named .wav, an upload over the size limit and
a take that crashes the decoder (the test fault hook). Reported: answers by cause, the latency of good judgements
(median, p95), whether every request was answered, and the peak memory of the server and its workers (RSS from /proc,
sampled every 0.2 s). The model: the lockbox opening's `ge2e_linear` (bench_lockbox.py --open), or `--ckpt`.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_section  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ROOT = Path(os.environ.get("CREMAD_LIT_SHARED", REPO.parent / "shared")) / "ravdess-speech"
WORK = REPO / "logs" / "bench-page"
DEFAULT_MODEL = REPO / "logs" / "bench-lockbox" / "ge2e_linear-final" / "model"


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        stack += children.get(current, [])
        try:
            rss = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{current}/status").read_text())
            total += int(rss.group(1)) * 1024 if rss else 0
        except OSError:
            continue
    return total


def uploads(count: int) -> list[tuple[str, Path]]:
    WORK.mkdir(parents=True, exist_ok=True)
    takes = [f for actor in range(1, 16) for f in sorted((ROOT / f"Actor_{actor:02d}").glob("*.wav"))[:3]]
    damaged, text, big, crash = (WORK / name for name in ("damaged.wav", "notes.wav", "big.wav", "crash.wav"))
    damaged.write_bytes(takes[0].read_bytes()[:44] + os.urandom(20000))
    text.write_text("not a recording")
    big.write_bytes(takes[0].read_bytes() + bytes(101 * 2**20))  # over the 100 MB limit
    crash.write_bytes(takes[1].read_bytes())
    bad = [("damaged", damaged), ("wrong type", text), ("oversized", big), ("decoder crash", crash)]
    good = [("good", takes[i % len(takes)]) for i in range(count - len(bad))]
    mixed = good[:]
    for i, item in enumerate(bad):  # spread through the run
        mixed.insert((i + 1) * len(good) // (len(bad) + 1), item)
    return mixed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default=str(DEFAULT_MODEL))
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    from gradio_client import Client, handle_file

    from cremad_lit.data.isolation import DEBUG_PLUGINS

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    work = uploads(args.requests)
    env = {  # the test plugin's decoder crash on crash.wav (tests/faults.py), in the page's workers only
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        DEBUG_PLUGINS: "tests.faults",
        "CREMAD_LIT_TEST_FAULTS": "crash:crash",
        "OMP_NUM_THREADS": "1",
    }
    command = [
        sys.executable,
        "-m",
        "cremad_lit",
        "app",
        f"ckpt_path={args.ckpt}",
        f"port={port}",
        f"hydra.run.dir={WORK / 'app'}",
    ]
    server = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss(server.pid))
            time.sleep(0.2)

    try:
        lines: list[str] = []
        deadline = time.time() + 300
        while not any("Running on local URL" in line for line in lines):
            if server.poll() is not None or time.time() > deadline:
                raise SystemExit("the page did not start:\n" + "".join(lines))
            lines.append(server.stdout.readline())
        threading.Thread(target=sample, daemon=True).start()
        idle = tree_rss(server.pid)
        url = f"http://127.0.0.1:{port}"

        def judge(item: tuple[str, Path]) -> tuple[str, str, float]:
            kind, path = item
            started = time.perf_counter()
            try:
                status = Client(url, verbose=False).predict(handle_file(str(path)), None, api_name="/judge")[
                    1
                ]
            except Exception as error:  # refused by the server (the size limit) or a lost connection
                status = f"refused: {error}"
            return kind, status, time.perf_counter() - started

        started = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            answers = list(pool.map(judge, work))
        wall = time.perf_counter() - started
        alive = server.poll() is None
    finally:
        done.set()
        server.terminate()
        server.wait(timeout=60)
    good = [a for a in answers if a[0] == "good"]
    predicted = [a for a in good if re.match(r"\*\*.+\*\*: [A-Z]{3}$", a[1])]
    latencies = np.array([seconds for _, _, seconds in predicted])
    rows = ["| upload | requests | answer (first seen) |", "| --- | ---: | --- |"]
    for kind in ("good", "damaged", "wrong type", "oversized", "decoder crash"):
        seen = [a for a in answers if a[0] == kind]
        first = seen[0][1].replace("|", "/")[:160] if seen else ""
        count = f"{len(predicted)} of {len(seen)} predicted" if kind == "good" else str(len(seen))
        rows.append(f"| {kind} | {count} | {first} |")
    body = (
        "## The demo page under load (`make bench-page`)\n\n"
        f"Machine: {machine()}. `python -m cremad_lit app` with its defaults (2 worker processes, a queue of 16, "
        f"100 MB uploads, 60 s per judgement) serving `{Path(args.ckpt).relative_to(REPO) if Path(args.ckpt).is_relative_to(REPO) else args.ckpt}`; "
        f"{args.clients} gradio_client clients at once sent {len(answers)} requests in {wall:.0f} s. Good judgements: "
        f"median {np.median(latencies):.2f} s, p95 {np.percentile(latencies, 95):.2f} s (queueing included). "
        f"The server {'answered every request and was still up at the end' if alive else 'DIED'}; memory of the "
        f"server and its workers: {idle / 2**20:.0f} MiB idle, peak {peak[0] / 2**20:.0f} MiB.\n\n"
        + "\n".join(rows)
    )
    write_section("bench-page", body)
    print(body)


if __name__ == "__main__":
    main()
