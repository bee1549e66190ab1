"""The write path: posts/s through the JSON API with no readers, two instances on PostgreSQL.

The project (numbering, idempotency, rate-limit check, event log, publishing) against a plain
Django view inserting the same Comment row (bench/peers/write_views.py). Each gets a
throwaway PostgreSQL database, created and dropped here, and its own Redis.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
from pathlib import Path
from typing import Any

from bench import loadgen
from bench.profiling import profile_start, profile_stop
from bench.servers import HOST, Stack, cpu_seconds, migrate, production_env

SYSTEMS = {
    "project": ("livefeed.asgi:application", {}),
    "write_peer": ("bench.peers.write_asgi:application", {"DJANGO_SETTINGS_MODULE": "bench.peers.write_settings"}),
}
TARGET_RATIO = 0.8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--write-posts", type=int, default=2000, help="write_path: posts per system and round")
    parser.add_argument("--write-rounds", type=int, default=3,
                        help="write_path: rounds of the project then the peer; the ratio is the rounds' median")
    parser.add_argument("--postgres-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="write_path: where throwaway databases are created and dropped")


def _admin(url: str) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=True)


async def run(args: argparse.Namespace, workdir: Path, log: Any) -> dict[str, Any]:
    """Measure each system in turn, `--write-rounds` times: each round's ratio compares two runs
    a few seconds apart, and the median of the rounds is what a passing load on the machine
    moves least."""
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in SYSTEMS}
    ratios: list[float] = []
    for number in range(max(1, args.write_rounds)):
        for name, (application, extra_env) in SYSTEMS.items():
            rounds[name].append(await _one(args, workdir / f"write-{name}-{number}", name, application, extra_env, log))
        project, peer = rounds["project"][-1].get("posts_per_s"), rounds["write_peer"][-1].get("posts_per_s")
        if project and peer:
            ratios.append(round(project / peer, 2))
        log(f"write path: round {number + 1}: ratio {ratios[-1] if ratios else None}")
    result: dict[str, Any] = {"posts": args.write_posts, "connections": args.post_connections, "servers": args.servers,
                              "rounds": len(rounds["project"]), "round_ratios": ratios}
    for name, runs in rounds.items():
        result[name] = {**_median_run(runs), "rounds": runs}
    result["ratio"] = statistics.median(ratios) if ratios else None
    result["met"] = result["ratio"] is not None and result["ratio"] >= TARGET_RATIO
    return result


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the run with the median posts/s, with the median CPU per post of all runs."""
    measured = [run for run in runs if run.get("posts_per_s")] or runs
    middle = sorted(measured, key=lambda run: run.get("posts_per_s") or 0)[len(measured) // 2]
    cpu = [run["server_cpu_ms_per_post"] for run in measured if run.get("server_cpu_ms_per_post")]
    return {**middle, "server_cpu_ms_per_post": statistics.median(cpu) if cpu else None}


async def _one(args: argparse.Namespace, workdir: Path, name: str, application: str, extra_env: dict[str, str],
               log: Any) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    database = f"livefeed_bench_{os.getpid()}_{name}"
    base = args.postgres_admin_url.rsplit("/", 1)[0]
    with _admin(args.postgres_admin_url) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}"')
        admin.execute(f'CREATE DATABASE "{database}"')
    stack = Stack(workdir)
    try:
        stack.start_redis()
        # Both with the project's production settings (DEBUG off): same middleware, same database.
        env = {"REDIS_URL": stack.redis_url, "FEED_POST_RATE": "off", "LOG_LEVEL": "WARNING",
               "PYTHONUNBUFFERED": "1", "DATABASE_URL": f"{base}/{database}", **production_env(workdir.parent), **extra_env}
        migrate(env=env, workdir=workdir)
        stack.start_daphnes(count=args.servers, application=application, env=env, name=name,
                            extra_args=args.daphne_arg, backlog=args.backlog or None)
        numbering = None
        if name != "project":
            numbering = loadgen.SeqCounter()
            numbering.last = 1_000_000  # clear of any seeded comment of the demo feed

        def poster() -> loadgen.Poster:
            return loadgen.Poster(bases=[(HOST, s.port) for s in stack.servers], path="/api/feeds/demo/comments/",
                                  connections=args.post_connections, numbering=numbering)

        warm = poster()
        await warm.run(count=4 * args.post_connections, rate=None, max_seconds=60)
        await warm.close()
        servers = [s.ps for s in stack.servers]
        before = sum(cpu_seconds(servers).values())
        log(f"write path: {name}: {args.write_posts} posts, no readers")
        profile = (profile_start(stack.servers[0].process.pid, workdir / "write-path.collapsed", log, gil_only=True)
                   if args.py_spy else None)
        timed = poster()
        posted = await timed.run(count=args.write_posts, rate=None, max_seconds=args.post_max)
        await timed.close()
        used = sum(cpu_seconds(servers).values()) - before
        profiled = {"profile": profile_stop(profile)} if profile else {}
        rate = round(posted["posted"] / posted["seconds"], 1) if posted["seconds"] else None
        log(f"write path: {name}: {rate} posts/s, errors {posted['errors']}")
        return {"posts": posted, "posts_per_s": rate,
                "server_cpu_ms_per_post": round(1000 * used / posted["posted"], 2) if posted["posted"] else None,
                "server_cpu_percent": round(100 * used / posted["seconds"], 1) if posted["seconds"] else None,
                **profiled}
    finally:
        stack.stop()
        await asyncio.sleep(0.5)
        with _admin(args.postgres_admin_url) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
