"""Burst admission: a burst of concurrent requests against a real `python -m service`, and what admission did.

The admission estimate (service/admission.py) predicts a queue's drain time from the batches it will form.
A burst the server can clear within the wait budget (half the request timeout) should be admitted in full;
one several times larger should be partly refused with 429 and a Retry-After, never collapse. This bench:
1. starts the server on `--task`'s default model under `--artifacts-dir` and sends `--warmup` requests one at a
   time (the batch-time fit then knows only single-item batches: the case the old per-item estimate got wrong);
2. sends `--burst` identical-shape requests at once and waits for every answer;
3. prints: answers by status, the time until the last admitted answer, each 429's reason, and the ratio of
   that drain time to the budget. A second burst `--factor` times larger shows the refusal side.

    python -m bench.burst --artifacts-dir artifacts --task generation --burst 48 --new-tokens 12 --mc-samples 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench.generation import PROMPTS
from bench.loadgen import server
from bench.texts import reviews

SENTENCES = ["In the beginning God created the heavens and the earth.", "The Lord is my shepherd; I shall not want.",
             "Blessed are the meek, for they shall inherit the earth.", "Love is patient and kind."]


def request(task: str, i: int, new_tokens: int, mc_samples: int) -> dict[str, Any]:
    if task == "generation":
        return {"task": task, "text": PROMPTS[i % len(PROMPTS)], "mc_samples": mc_samples, "seed": i,
                "parameters": {"max_new_tokens": new_tokens, "temperature": 0}}
    if task == "translation":
        return {"task": task, "text": SENTENCES[i % len(SENTENCES)], "mc_samples": mc_samples, "seed": i,
                "parameters": {"max_new_tokens": new_tokens}}
    return {"task": task, "text": reviews(1, seed=i)[0], "mc_samples": mc_samples, "seed": i}


async def burst(base: str, task: str, n: int, new_tokens: int, mc_samples: int, offset: int) -> dict[str, Any]:
    """`n` requests at once; answers by status, seconds until the last 200, the 429 reasons and Retry-After."""
    async with httpx.AsyncClient(base_url=base, timeout=120.0) as client:
        started = time.perf_counter()
        done_at: list[float] = []

        async def one(i: int) -> httpx.Response:
            response = await client.post("/predict", json=request(task, offset + i, new_tokens, mc_samples))
            if response.status_code == 200:
                done_at.append(time.perf_counter() - started)
            return response

        answers = await asyncio.gather(*(one(i) for i in range(n)))
    statuses = Counter(r.status_code for r in answers)
    refused = [r for r in answers if r.status_code == 429]
    return {"requests": n, "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "admitted_drain_s": round(max(done_at), 2) if done_at else None,
            "retry_after_s": sorted({r.headers.get("retry-after") for r in refused}),
            "reasons": sorted({str(r.json().get("error", ""))[:120] for r in refused})}


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    env = {"NLP_TASKS": args.task, "NLP_REQUEST_TIMEOUT_S": str(args.request_timeout_s)}
    with server(args.artifacts_dir, env, args.ready_timeout_s, workdir / "server.log") as (_proc, base):
        async with httpx.AsyncClient(base_url=base, timeout=120.0) as client:
            for i in range(args.warmup):
                warm = await client.post("/predict", json=request(args.task, 1000 + i, args.new_tokens,
                                                                  args.mc_samples))
                warm.raise_for_status()
        results = {"budget_s": args.request_timeout_s / 2,
                   "burst": await burst(base, args.task, args.burst, args.new_tokens, args.mc_samples, 0)}
        await asyncio.sleep(1.0)
        results["large_burst"] = await burst(base, args.task, args.burst * args.factor, args.new_tokens,
                                             args.mc_samples, 10_000)
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.burst", description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts-dir", type=Path, default=Path("artifacts"))
    parser.add_argument("--task", default="generation", choices=("sentiment", "translation", "generation"))
    parser.add_argument("--burst", type=int, default=48)
    parser.add_argument("--factor", type=int, default=4, help="the second burst is this many times larger")
    parser.add_argument("--new-tokens", type=int, default=12)
    parser.add_argument("--mc-samples", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--request-timeout-s", type=float, default=30.0)
    parser.add_argument("--ready-timeout-s", type=float, default=600.0)
    parser.add_argument("--json-out", type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        results = asyncio.run(run(args, Path(tmp)))
    for name in ("burst", "large_burst"):
        r = results[name]
        drained, budget = r["admitted_drain_s"], results["budget_s"]
        share = "" if drained is None else f", {drained / budget:.2f}× of it"
        refused = f"; 429 Retry-After {r['retry_after_s']}: {r['reasons'][0]}" if r["reasons"] else ""
        print(f"{name}: {r['requests']} requests → {r['statuses']}; admitted drained in {drained} s "
              f"(budget {budget:g} s{share}){refused}")
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
