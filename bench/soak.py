"""Soak: about twice the saturating request rate against a real `python -m service` on loopback.

1. Start the server (`--tiny`: a random tiny sentiment artifact; else `--artifacts-dir`) and wait for ready.
2. Probe: a closed loop of `--probe-concurrency` clients for `--probe-seconds` measures the saturating
   rate R (answers/s).
3. Soak: an open loop launches requests at `--rate-factor` × R for `--seconds`, whatever the answers
   (so the queue fills and the server must shed load with 429), then waits for every answer. Each request
   has a client deadline of the server's request timeout + `--hang-margin` s: a request with no answer by
   then is *hung*; a transport error (reset, refused, …) is *lost*.
4. Resident memory of the server process (VmRSS) is sampled every `--rss-interval` s; the drift is the
   median of the last fifth of the soak minus the median of the first fifth (MiB and %).
5. The answers by status are reconciled against the server's `nlp_requests_total{task="sentiment"}`.

Prints a report and exits 1 if a request was lost, hung, answered 500, answered outside
200/429/503/504, answered an error without the error body, or the counts do not add up.

    python -m bench.soak --tiny --seconds 120                  # ~2 minutes on a random tiny model
    python -m bench.soak --artifacts-dir artifacts --seconds 300 --json-out bench/results/soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from bench.loadgen import server
from bench.texts import reviews

ALLOWED = {200, 429, 503, 504}


@dataclass
class SoakConfig:
    seconds: float = 120.0
    probe_seconds: float = 10.0
    probe_concurrency: int = 16
    rate_factor: float = 2.0
    mc_samples: int | None = None
    request_timeout_s: float = 10.0
    hang_margin_s: float = 20.0
    rss_interval_s: float = 0.5
    server_env: dict[str, str] = field(default_factory=dict)


@dataclass
class SoakReport:
    saturating_rate: float = 0.0  # answers/s of the closed-loop probe
    target_rate: float = 0.0
    launched: int = 0
    launch_rate: float = 0.0  # achieved: the client can fall behind its schedule on a busy machine
    by_status: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    hung: int = 0
    bad_error_bodies: int = 0
    p50_ms_ok: float = float("nan")
    p99_ms_ok: float = float("nan")
    p99_ms_all: float = float("nan")
    rss_start_mib: float = float("nan")
    rss_end_mib: float = float("nan")
    rss_drift_mib: float = float("nan")
    rss_drift_pct: float = float("nan")
    server_counts: dict[str, int] = field(default_factory=dict)
    reconciled: bool = False
    server_exit_code: int | None = None
    lost_examples: list[str] = field(default_factory=list)

    def failures(self) -> list[str]:
        """Why this soak failed (empty when it passed)."""
        problems = []
        if self.lost or self.hung:
            problems.append(f"{self.lost} lost and {self.hung} hung requests: {self.lost_examples[:3]}")
        unexpected = {s: n for s, n in self.by_status.items() if int(s) not in ALLOWED}
        if unexpected:
            problems.append(f"answers outside {sorted(ALLOWED)}: {unexpected}")
        if self.bad_error_bodies:
            problems.append(f"{self.bad_error_bodies} error answers without the error body")
        if not self.reconciled:
            problems.append(f"client counts {self.by_status} != nlp_requests_total deltas {self.server_counts}")
        if self.server_exit_code not in (0, None):
            problems.append(f"server exited with {self.server_exit_code}")
        return problems


def rss_mib(pid: int) -> float:
    """Resident set size of `pid` in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def requests_by_status(client: httpx.AsyncClient) -> Counter[str]:
    """nlp_requests_total{task="sentiment"} by status label, scraped from /metrics."""
    counts: Counter[str] = Counter()
    for line in (await client.get("/metrics")).text.splitlines():
        if line.startswith('nlp_requests_total{') and 'task="sentiment"' in line:
            status = line.split('status="', 1)[1].split('"', 1)[0]
            counts[status] += int(float(line.rsplit(" ", 1)[1]))
    return counts


def has_error_body(response: httpx.Response) -> bool:
    """Whether an error answer carries exactly the service's body `{"error": str, "error_type": str}`."""
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and set(body) == {"error", "error_type"} and all(
        isinstance(value, str) and value for value in body.values())


def percentile_ms(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] * 1000


async def probe_rate(base: str, texts: list[str], cfg: SoakConfig) -> float:
    """Answers/s of a closed loop (each client sends its next request when the last is answered)."""
    answered = 0
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        async def worker(offset: int) -> None:
            nonlocal answered
            index = offset
            while True:
                response = await client.post("/predict", json=payload(texts, index, cfg))
                answered += response.status_code == 200  # goodput: a fast 429 is not capacity
                index += cfg.probe_concurrency

        workers = [asyncio.create_task(worker(i)) for i in range(cfg.probe_concurrency)]
        started = time.perf_counter()
        await asyncio.sleep(cfg.probe_seconds)
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        return answered / (time.perf_counter() - started)


def payload(texts: list[str], index: int, cfg: SoakConfig) -> dict[str, object]:
    body: dict[str, object] = {"task": "sentiment", "text": texts[index % len(texts)], "seed": index}
    if cfg.mc_samples is not None:
        body["mc_samples"] = cfg.mc_samples
    return body


async def soak(base: str, pid: int, texts: list[str], cfg: SoakConfig, report: SoakReport) -> None:
    """The open-loop phase (see module docstring); fills `report`."""
    limits = httpx.Limits(max_connections=2048, max_keepalive_connections=256)
    timeout = httpx.Timeout(cfg.request_timeout_s + cfg.hang_margin_s)
    statuses: Counter[str] = Counter()
    ok_latencies: list[float] = []
    all_latencies: list[float] = []
    rss: list[float] = []
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=timeout) as client:
        before = await requests_by_status(client)

        async def one(index: int) -> None:
            started = time.perf_counter()
            try:
                async with asyncio.timeout(cfg.request_timeout_s + cfg.hang_margin_s):  # total, not per read
                    response = await client.post("/predict", json=payload(texts, index, cfg))
            except (TimeoutError, httpx.TimeoutException):
                report.hung += 1
                return
            except httpx.HTTPError as exc:
                report.lost += 1
                report.lost_examples.append(f"{type(exc).__name__}: {exc}")
                return
            elapsed = time.perf_counter() - started
            statuses[str(response.status_code)] += 1
            all_latencies.append(elapsed)
            if response.status_code == 200:
                ok_latencies.append(elapsed)
            elif not has_error_body(response):
                report.bad_error_bodies += 1

        async def sample_rss(stop: asyncio.Event) -> None:
            while not stop.is_set():
                rss.append(rss_mib(pid))
                try:
                    await asyncio.wait_for(stop.wait(), cfg.rss_interval_s)
                except TimeoutError:
                    pass

        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_rss(stop))
        interval = 1.0 / report.target_rate
        tasks: list[asyncio.Task[None]] = []
        started = time.perf_counter()
        while (now := time.perf_counter() - started) < cfg.seconds:
            due = int(now / interval) + 1  # launch every request whose time has come (catch up if behind)
            while len(tasks) < due:
                tasks.append(asyncio.create_task(one(len(tasks))))
            await asyncio.sleep(min(interval, 0.005))
        report.launch_rate = len(tasks) / (time.perf_counter() - started)
        await asyncio.gather(*tasks)
        stop.set()
        await sampler
        after = await requests_by_status(client)
    report.launched = len(tasks)
    report.by_status = dict(sorted(statuses.items()))
    report.server_counts = {s: n for s, n in sorted((after - before).items()) if n}
    report.reconciled = report.server_counts == report.by_status and sum(statuses.values()) == len(tasks)
    report.p50_ms_ok, report.p99_ms_ok = percentile_ms(ok_latencies, 50), percentile_ms(ok_latencies, 99)
    report.p99_ms_all = percentile_ms(all_latencies, 99)
    fifth = max(1, len(rss) // 5)
    report.rss_start_mib, report.rss_end_mib = statistics.median(rss[:fifth]), statistics.median(rss[-fifth:])
    report.rss_drift_mib = report.rss_end_mib - report.rss_start_mib
    report.rss_drift_pct = 100 * report.rss_drift_mib / report.rss_start_mib


async def run_soak_async(artifacts: Path, workdir: Path, cfg: SoakConfig) -> SoakReport:
    """Start a server, probe, soak, stop it with SIGTERM; the report (see `SoakReport.failures`)."""
    texts = reviews(512, seed=0)
    env = {"NLP_REQUEST_TIMEOUT_S": str(cfg.request_timeout_s), **cfg.server_env}
    report = SoakReport()
    with server(artifacts, env, 120.0, workdir / "soak-server.log") as (proc, base):
        report.saturating_rate = await probe_rate(base, texts, cfg)
        report.target_rate = cfg.rate_factor * report.saturating_rate
        print(f"saturating rate {report.saturating_rate:.1f} req/s; soaking at {report.target_rate:.1f} req/s",
              flush=True)
        await soak(base, proc.pid, texts, cfg, report)
        proc.send_signal(signal.SIGTERM)
        report.server_exit_code = proc.wait(timeout=60)
    return report


def print_report(report: SoakReport, cfg: SoakConfig) -> None:
    print(f"saturating rate (closed loop, c={cfg.probe_concurrency}): {report.saturating_rate:.1f} req/s")
    print(f"soak: {cfg.seconds:.0f} s at target {report.target_rate:.1f} req/s ({cfg.rate_factor:g}x), "
          f"launched {report.launched} ({report.launch_rate:.1f} req/s achieved)")
    print(f"answers by status: {report.by_status}; lost {report.lost}; hung {report.hung}; "
          f"error answers without the error body {report.bad_error_bodies}")
    print(f"latency of 200s: p50 {report.p50_ms_ok:.0f} ms, p99 {report.p99_ms_ok:.0f} ms; "
          f"p99 of all answers {report.p99_ms_all:.0f} ms")
    print(f"server RSS: {report.rss_start_mib:.1f} -> {report.rss_end_mib:.1f} MiB, drift "
          f"{report.rss_drift_mib:+.1f} MiB ({report.rss_drift_pct:+.1f}%)")
    print(f"nlp_requests_total deltas {report.server_counts}: "
          f"{'reconciled' if report.reconciled else 'DO NOT MATCH'}; server exit code {report.server_exit_code}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts-dir", type=Path, default=Path("artifacts"))
    parser.add_argument("--tiny", action="store_true", help="soak a random tiny artifact instead")
    parser.add_argument("--seconds", type=float, default=SoakConfig.seconds)
    parser.add_argument("--probe-seconds", type=float, default=SoakConfig.probe_seconds)
    parser.add_argument("--probe-concurrency", type=int, default=SoakConfig.probe_concurrency)
    parser.add_argument("--rate-factor", type=float, default=SoakConfig.rate_factor)
    parser.add_argument("--mc-samples", type=int, default=None, help="absent = the model's default")
    parser.add_argument("--request-timeout", type=float, default=SoakConfig.request_timeout_s)
    parser.add_argument("--server-env", action="append", default=[], metavar="NLP_X=value")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    cfg = SoakConfig(seconds=args.seconds, probe_seconds=args.probe_seconds, probe_concurrency=args.probe_concurrency,
                     rate_factor=args.rate_factor, mc_samples=args.mc_samples, request_timeout_s=args.request_timeout,
                     server_env=dict(item.split("=", 1) for item in args.server_env))
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        artifacts = args.artifacts_dir
        if args.tiny:
            from bench.tiny import tiny_sentiment_artifacts  # only for the smoke mode: imports training

            artifacts = tiny_sentiment_artifacts(Path(tmp))
        report = asyncio.run(run_soak_async(artifacts, Path(tmp), cfg))
    print_report(report, cfg)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps({"config": asdict(cfg), "report": asdict(report)}, indent=2))
    for problem in report.failures():
        print(f"FAIL: {problem}")
    return 1 if report.failures() else 0


if __name__ == "__main__":
    sys.exit(main())
