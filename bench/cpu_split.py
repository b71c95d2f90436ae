"""Who gets the CPU while the server is under load: the machine's idle share, the server's and the load
generator's CPU, the server's CPU per thread (the event loop, the inference thread, torch's OpenMP threads), and
how long a batch's forward takes in the server (its own histograms) against the same batch size in-process.

A server whose model runs slower than in-process while cores sit idle is losing to scheduling (threads waiting
on each other while other work shares their cores), not to HTTP; `bench.profile_server` sorts the Python stacks
by stage, this script reads what the kernel counts (`/proc`), so it needs no ptrace rights.

    python -m bench.cpu_split --artifacts-dir artifacts [--requests 1000] [--concurrency 32] \
        [--server-env NLP_X=value ...]

Linux only (`/proc`). The load is bench/loadgen.py's closed loop at T = 0 after a warm-up of 200 requests.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.loadgen import measure, server
from bench.profile_server import histogram_sums
from bench.texts import reviews

HZ = os.sysconf("SC_CLK_TCK")
HISTOGRAMS = ("nlp_inference_duration_seconds", "nlp_batch_size")


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of process `pid` so far, by thread id."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended between the listing and the read
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / HZ
    return out


def machine_idle() -> float:
    """Idle + iowait CPU seconds of the whole machine so far (all cores)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (fields[3] + fields[4]) / HZ


async def run(args: argparse.Namespace, workdir: Path) -> None:
    texts = reviews(512, seed=0)
    extra = dict(item.split("=", 1) for item in args.server_env)
    with server(args.artifacts_dir, extra, args.ready_timeout, workdir / "server.log") as (proc, base):
        await measure(base, "warm-up", texts, args.concurrency, 200, 60.0, 0)
        before = await histogram_sums(base, HISTOGRAMS)
        threads0, idle0, client0 = thread_cpu(proc.pid), machine_idle(), time.process_time()
        result = await measure(base, "load", texts, args.concurrency, args.requests, args.time_limit, 0)
        threads1, idle1, client1 = thread_cpu(proc.pid), machine_idle(), time.process_time()
        after = await histogram_sums(base, HISTOGRAMS)
    wall = result.wall_s
    share = lambda seconds: 100.0 * seconds / wall  # noqa: E731 - % of one core
    per_thread = sorted(((tid, threads1[tid] - threads0.get(tid, 0.0)) for tid in threads1), key=lambda x: -x[1])
    delta = {name: after.get(name, 0.0) - before.get(name, 0.0) for name in after}
    forward_s, batches = delta["nlp_inference_duration_seconds_sum"], delta["nlp_inference_duration_seconds_count"]
    items = delta["nlp_batch_size_sum"]
    print(f"{result.throughput:.1f} req/s over {wall:.1f} s, {os.cpu_count()} cores")
    print(f"machine idle {share(idle1 - idle0):.0f} %, server {share(sum(d for _, d in per_thread)):.0f} %, "
          f"load generator {share(client1 - client0):.0f} % (100 % = one core)")
    print("server threads over 1 % (the main thread is the event loop):")
    for tid, seconds in per_thread:
        if share(seconds) >= 1.0:
            print(f"  {'main' if tid == proc.pid else tid:>8}  {share(seconds):5.1f} %")
    if batches:
        print(f"batches: {batches:.0f}, mean size {items / batches:.1f}, mean forward "
              f"{1000 * forward_s / batches:.0f} ms, forward time / wall {forward_s / wall:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts-dir", type=Path, default=Path("artifacts"))
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--time-limit", type=float, default=120.0)
    parser.add_argument("--ready-timeout", type=float, default=300.0)
    parser.add_argument("--server-env", action="append", default=[], metavar="NLP_X=value")
    args = parser.parse_args(argv)
    if not Path("/proc/stat").exists():
        print("bench.cpu_split reads /proc: Linux only", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="nlp-cpu-") as tmp:
        asyncio.run(run(args, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
