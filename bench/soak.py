"""The soak (`bench/run.py --soak`): a long steady run of the project, by hand, not in CI.

1,000 readers, 5 comments/s for 30 minutes; every minute 5 % of the readers (picked at random)
close and reconnect with `resume` after the last seq they had, as the page does. Targets: no
reader misses a comment over the whole run, and the servers' RSS grows by at most 5 % after
the first 5 minutes. Writes bench/results/soak.json and soak.md.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import report
from bench.servers import rss_bytes

RSS_GROWTH_TARGET = 0.05


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--soak", action="store_true", help="run the soak instead (30 minutes; by hand, not in CI)")
    parser.add_argument("--soak-minutes", type=float, default=30.0)
    parser.add_argument("--soak-readers", type=int, default=1000)
    parser.add_argument("--soak-rate", type=float, default=5.0, help="comments/s")
    parser.add_argument("--soak-reconnect", type=float, default=0.05, help="fraction of readers reconnecting per interval")
    parser.add_argument("--soak-interval", type=float, default=60.0, help="seconds between reconnects and RSS samples")
    parser.add_argument("--soak-warm-minutes", type=float, default=5.0, help="RSS growth is measured from here")


async def run(args: argparse.Namespace, system_class: Any, bench_class: Any, workers_class: Any) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="livefeed-soak-"))
    result: dict[str, Any] = {
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {"minutes": args.soak_minutes, "readers": args.soak_readers, "rate": args.soak_rate,
                   "reconnect_fraction": args.soak_reconnect, "interval_s": args.soak_interval,
                   "warm_minutes": args.soak_warm_minutes, "servers": args.servers, "cpu_count": os.cpu_count(),
                   "database": "postgresql" if args.database_url else "sqlite",
                   "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
    }
    workers = workers_class(args.workers)
    system = system_class("project", args, workdir)
    try:
        system.start()
        bench = bench_class(args, system, workers)
        await workers.connect(system.reader_urls(10), hello=system.hello(), concurrency=10, timeout=30)
        await bench.deliver(name="warm-up", posts=3, rate=None, readers=10)
        await workers.close()
        bench.log(f"soak: connecting {args.soak_readers:,} readers")
        connect = await workers.connect(system.reader_urls(args.soak_readers), hello=system.hello(),
                                        concurrency=200, timeout=60)
        await bench.quiet("connecting")
        await workers.take(floor=system.last_seq())
        servers = system.servers_ps
        seconds = args.soak_minutes * 60
        poster = system.poster()
        started = time.monotonic()
        cpu_before = bench.cpu_snapshot()
        posting = asyncio.ensure_future(
            poster.run(count=round(args.soak_rate * seconds), rate=args.soak_rate, max_seconds=seconds))
        samples = [{"t_s": 0.0, "rss_mb": round(rss_bytes(servers) / 2**20, 2)}]
        reconnects = []
        tick = 1
        while not posting.done():
            wake = started + tick * args.soak_interval
            await asyncio.wait([posting], timeout=max(0.0, wake - time.monotonic()))
            if posting.done():
                break
            samples.append({"t_s": round(time.monotonic() - started, 1), "rss_mb": round(rss_bytes(servers) / 2**20, 2)})
            done = await workers.call("reconnect", {"fraction": args.soak_reconnect, "resume": True, "timeout": 30.0})
            reconnects.append({k: sum(d[k] for d in done) for k in ("reconnected", "failed")})
            bench.log(f"soak: {samples[-1]}, reconnects {reconnects[-1]}, posted {len(poster.sent):,}")
            tick += 1
        posted = posting.result()
        await poster.close()
        await bench.drain(len(poster.sent) * connect["connected"])
        usage = bench.cpu_usage(cpu_before, time.monotonic() - started)
        samples.append({"t_s": round(time.monotonic() - started, 1), "rss_mb": round(rss_bytes(servers) / 2**20, 2)})
        taken = await workers.take()
        stats = report.delivery_stats(connections=taken["connections"], sent=poster.sent, first_send=started)
        warm = [s for s in samples if s["t_s"] >= args.soak_warm_minutes * 60] or samples[-1:]
        growth = (max(s["rss_mb"] for s in warm) - warm[0]["rss_mb"]) / warm[0]["rss_mb"]
        result.update({
            "connect": connect, "posts": posted, "delivery": stats, "reconnects": reconnects,
            "rss_samples": samples, "rss_growth_after_warm": round(growth, 4), **usage,
            "met": {"lost": stats["lost"] == 0 and stats["received"] == stats["expected"] and stats["expected"] > 0,
                    "rss_growth": growth <= RSS_GROWTH_TARGET},
        })
        await workers.close()
    finally:
        system.stop()
        workers.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    result["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    result["config"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


def summary(result: dict[str, Any]) -> str:
    c, d = result["config"], result["delivery"]
    lines = [
        f"Soak: {c['readers']:,} readers, {c['rate']}/s for {c['minutes']} min, {c['reconnect_fraction']:.0%} of "
        f"readers reconnecting every {c['interval_s']:.0f} s ({c['servers']} daphne, {c['database']}; "
        f"started {result['started_at']}, load average at start {c['load_average_at_start']})",
        "",
        "| figure | value | target | met |", "|---|---|---|---|",
        f"| delivered / expected | {d['received']:,} / {d['expected']:,} | all | "
        f"{'yes' if result['met']['lost'] else 'no'} |",
        f"| lost / duplicated / out of order | {d['lost']:,} / {d['duplicated']:,} / {d['out_of_order']:,} | 0 lost | "
        f"{'yes' if result['met']['lost'] else 'no'} |",
        f"| latency p50 / p99 / max | {d['latency_ms']['p50']} / {d['latency_ms']['p99']} / {d['latency_ms']['max']} ms"
        " | – | – |",
        f"| reconnects (failed) | {sum(r['reconnected'] for r in result['reconnects']):,} "
        f"({sum(r['failed'] for r in result['reconnects'])}) | – | – |",
        f"| server RSS growth after {c['warm_minutes']} min | {result['rss_growth_after_warm']:.1%} | ≤ 5 % | "
        f"{'yes' if result['met']['rss_growth'] else 'no'} |",
        f"| server RSS samples (MB) | {', '.join(str(s['rss_mb']) for s in result['rss_samples'])} | – | – |",
    ]
    return "\n".join(lines)


def write(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "soak.md").write_text(summary(result) + "\n")
