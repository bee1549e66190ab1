"""Load benchmark of the live feed, side by side with the Node `ws` peer and the Channels-tutorial peer.

    .venv/bin/python bench/run.py            # the full run, a few minutes
    .venv/bin/python bench/run.py --quick    # small numbers, a smoke run

For each system (the project, then the peer) it starts a throwaway redis-server and two
daphne instances, connects readers spread over them, posts comments through the JSON API and
checks every frame every reader gets. Scenarios: memory (RSS per idle connection), keep-up
(a steady rate), full speed (as fast as the servers take posts), storm (thousands of
handshakes at once, then disconnects at once), and (bench/scenarios.py) keep-up at 5,000
readers and many feeds, (bench/writepath.py) the write path on PostgreSQL; `--soak` runs the
long soak instead (bench/soak.py). Seqs are unique for the whole run, and after
each phase the bench waits (bounded) until the servers go quiet, so no phase is measured
while the servers still deliver an earlier one, and a late frame counts for no other phase. Writes bench/results/latest.json and
latest.png, and prints the table. Everything runs on loopback and stops itself.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402
import redis  # noqa: E402

from bench import loadgen, report, scenarios as more, soak, writepath  # noqa: E402
from bench.profiling import profile_start, profile_stop  # noqa: E402
from bench.notif_scenario import run_notifications  # noqa: E402
from bench.scenarios import frame_cost, generator_saturated  # noqa: E402
from bench.servers import HOST, ROOT, Stack, cpu_seconds, migrate, production_env, rss_bytes, start_node_peer  # noqa: E402

FEED = "demo"
NODE_LABEL = "Node ws peer (1 process)"
RESULTS = ROOT / "bench" / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small numbers: a smoke run of every scenario")
    parser.add_argument("--systems", default="project,node,peer", help="comma-separated: project, peer, node")
    parser.add_argument("--scenarios", default="memory,keep_up,full_speed,storm,keep_up_big,many_feeds,write_path,notifications",
                        help="comma-separated; notifications runs on the project only (the others have none)")
    parser.add_argument("--notif-users", type=int, default=1000, help="notifications: signed-in users, a socket each")
    parser.add_argument("--notif-rate", type=float, default=50.0, help="notifications: comments per second")
    parser.add_argument("--notif-seconds", type=float, default=10.0)
    parser.add_argument("--notif-mentions", type=int, default=10, help="notifications: users mentioned per comment")
    parser.add_argument("--notif-seed", type=int, default=11, help="notifications: seed of the random mentions")
    parser.add_argument("--notif-connect-concurrency", type=int, default=50,
                        help="notifications: handshakes in flight (each looks its token up in the database)")
    parser.add_argument("--servers", type=int, default=2, help="daphne instances per system")
    parser.add_argument("--readers", type=int, default=1000)
    parser.add_argument("--keep-up-rate", type=float, default=20.0, help="comments per second")
    parser.add_argument("--keep-up-seconds", type=float, default=10.0)
    parser.add_argument("--full-speed-posts", type=int, default=200)
    parser.add_argument("--storm-readers", type=int, default=2000)
    parser.add_argument("--post-connections", type=int, default=8, help="keep-alive HTTP connections of the poster")
    parser.add_argument("--workers", type=int, default=2, help="reader processes of the load generator")
    parser.add_argument("--drain-stall", type=float, default=10.0, help="stop waiting after this long without a frame")
    parser.add_argument("--drain-max", type=float, default=30.0, help="after posting, wait at most this long for frames")
    parser.add_argument("--post-max", type=float, default=20.0, help="start no post later than this into a phase")
    parser.add_argument("--quiet-seconds", type=float, default=1.5,
                        help="between phases: the servers are quiet after this long without a frame and under --quiet-cpu")
    parser.add_argument("--quiet-cpu", type=float, default=10.0,
                        help="between phases: CPU %% (100 = one core) of the servers and Redis together that counts as quiet")
    parser.add_argument("--settle-max", type=float, default=120.0,
                        help="between phases: wait at most this long for the servers to go quiet")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="stop the whole run after this long")
    parser.add_argument("--database-url", default="", help="PostgreSQL URL (default: a throwaway SQLite file)")
    parser.add_argument("--backlog", type=int, default=4096,
                        help="daphne's listen backlog, as `make run` and the Dockerfile set it (0: Twisted's 50)")
    parser.add_argument("--daphne-arg", action="append", default=[], help="extra daphne argument (repeatable)")
    parser.add_argument("--py-spy", action="store_true", help="profile one daphne during full speed (py-spy)")
    parser.add_argument("--project-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment of the project's daphne (repeatable), e.g. LOG_LEVEL=DEBUG; it runs with DEBUG off")
    parser.add_argument("--py-spy-keep-up", action="store_true", help="with --py-spy: profile keep-up instead of full speed")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where latest.json and latest.png go")
    parser.add_argument("--merge", action="store_true",
                        help="keep the systems and phases of the existing latest.json this run does not measure")
    parser.add_argument("--keep-logs", action="store_true", help="keep the work directory with the server logs")
    more.add_arguments(parser)
    writepath.add_arguments(parser)
    soak.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        more.quick(args)
        args.write_posts = min(args.write_posts, 50)
        args.write_rounds = 1
        args.readers = min(args.readers, 50)
        args.keep_up_seconds = min(args.keep_up_seconds, 3.0)
        args.full_speed_posts = min(args.full_speed_posts, 30)
        args.storm_readers = min(args.storm_readers, 100)
        args.notif_users = min(args.notif_users, 50)
        args.notif_seconds = min(args.notif_seconds, 3.0)
        args.drain_max = min(args.drain_max, 15.0)
        args.post_max = min(args.post_max, 10.0)
        args.drain_stall = min(args.drain_stall, 5.0)
        args.quiet_seconds = min(args.quiet_seconds, 1.0)
        args.settle_max = min(args.settle_max, 30.0)
    return args


def raise_fd_limit(needed: int) -> None:
    """Lift the soft open-files limit to the hard one (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        print(f"warning: open-files limit {target} is below the {needed} this run needs", file=sys.stderr)


class Workers:
    """The reader processes of the load generator."""

    def __init__(self, count: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes = []
        self.processes = []
        for _ in range(count):
            parent, child = context.Pipe()
            process = context.Process(target=loadgen.worker_main, args=(child,), daemon=True)
            process.start()
            self.pipes.append(parent)
            self.processes.append(process)

    @property
    def ps(self) -> list[psutil.Process]:
        return [psutil.Process(p.pid) for p in self.processes]

    async def call(self, command: str, args: list[Any] | Any = None) -> list[Any]:
        loop = asyncio.get_running_loop()
        per_worker = args if isinstance(args, list) else [args] * len(self.pipes)
        for pipe, arg in zip(self.pipes, per_worker):
            pipe.send((command, arg))
        return await asyncio.gather(*(loop.run_in_executor(None, pipe.recv) for pipe in self.pipes))

    async def connect(self, urls: list[str], *, hello: bytes | None, concurrency: int, timeout: float,
                      tokens: list[tuple[int, str]] | None = None) -> dict[str, Any]:
        """Open the readers; with `tokens` ((label, Bearer token) per URL), notification sockets."""
        n = len(self.pipes)
        shares = [urls[i::n] for i in range(n)]
        token_shares = [tokens[i::n] for i in range(n)] if tokens is not None else [None] * n
        per = max(1, concurrency // n)
        started = time.monotonic()
        results = await self.call(
            "connect", [{"urls": s, "hello": hello, "concurrency": per, "timeout": timeout, "tokens": t}
                        for s, t in zip(shares, token_shares)]
        )
        seconds = time.monotonic() - started
        failures: dict[str, int] = {}
        for result in results:
            for key, count in result["failures"].items():
                failures[key] = failures.get(key, 0) + count
        connected = sum(r["connected"] for r in results)
        return {
            "requested": len(urls),
            "connected": connected,
            "failed": sum(r["failed"] for r in results),
            "failures": failures,
            "seconds": round(seconds, 3),
            "per_s": round(connected / seconds, 1) if seconds > 0 else None,
        }

    async def received(self) -> dict[str, int]:
        """Return the frames since the last take: all, and the current phase's ("fresh": above the floor);
        "presence": the open readers' feed.presence frames since they connected."""
        results = await self.call("received")
        return {key: sum(r[key] for r in results) for key in ("frames", "fresh", "presence")}

    async def take(self, floor: int | None = None) -> dict[str, Any]:
        results = await self.call("take", floor)
        connections = [c for r in results for c in r["connections"]]
        paths = [c for r in results for c in r["paths"]]
        codes: dict[str, int] = {}
        for r in results:
            for code in r["close_codes"]:
                codes[str(code)] = codes.get(str(code), 0) + 1
        return {"connections": connections, "paths": paths, "dropped": sum(r["dropped"] for r in results), "close_codes": codes}

    async def close(self, *, abrupt: bool = False) -> int:
        results = await self.call("close", {"abrupt": abrupt, "timeout": 30.0})
        return sum(r["closed"] for r in results)

    def stop(self) -> None:
        for pipe, process in zip(self.pipes, self.processes):
            try:
                pipe.send(("exit", None))
                if pipe.poll(5):
                    pipe.recv()
            except (OSError, EOFError):
                pass
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)


class System:
    """One system under test: how to start it and how to talk to it."""

    def __init__(self, name: str, args: argparse.Namespace, workdir: Path) -> None:
        self.name = name
        self.args = args
        self.workdir = workdir / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.stack = Stack(self.workdir)
        self.label = {"project": "project", "peer": "tutorial peer (core layer)", "node": NODE_LABEL}[name]
        # One counter for the whole run: the peer's seqs go on from phase to phase.
        self.numbering = loadgen.SeqCounter() if name in ("peer", "node") else None
        self.posted_seqs: set[int] = set()

    def start(self) -> None:
        self.stack.start_redis()
        # FEED_POST_RATE off: one poster posts every comment; WS_MAX_PER_CLIENT off: every reader
        # comes from the same loopback address (the per-address limit would close all but 100 per process).
        self.env = env = {"REDIS_URL": self.stack.redis_url, "FEED_POST_RATE": "off", "WS_MAX_PER_CLIENT": "0", "LOG_LEVEL": "WARNING",
               "PYTHONUNBUFFERED": "1"}
        if self.name == "node":
            # One Node process; the Redis started above stays idle (the bench asks it for group members).
            start_node_peer(self.stack)
            return
        if self.name == "project":
            env["LOG_LEVEL"] = "INFO"  # for the hub's delivery counts at shutdown (hub_deliveries)
            # Every reader of the bench comes from 127.0.0.1: lift the per-address socket cap
            # (WS_MAX_PER_CLIENT, 100 by default; 0 disables it), as FEED_POST_RATE=off lifts the post limit.
            env["WS_MAX_PER_CLIENT"] = "0"
            env.update(production_env(self.workdir.parent))
            env.update(kv.split("=", 1) for kv in self.args.project_env)
            env["DATABASE_URL"] = self.args.database_url or f"sqlite:///{self.workdir / 'bench.sqlite3'}"
            migrate(env=env, workdir=self.workdir)
            application = "livefeed.asgi:application"
        else:
            env["DJANGO_SETTINGS_MODULE"] = "bench.peers.settings"
            application = "bench.peers.asgi:application"
        self.stack.start_daphnes(
            count=self.args.servers, application=application, env=env, name=self.name,
            extra_args=self.args.daphne_arg, backlog=self.args.backlog or None,
        )

    @property
    def servers_ps(self) -> list[psutil.Process]:
        return [s.ps for s in self.stack.servers]

    def reader_urls(self, count: int) -> list[str]:
        ports = [s.port for s in self.stack.servers]
        return [f"ws://{HOST}:{ports[i % len(ports)]}/ws/feeds/{FEED}/?format=json" for i in range(count)]

    def poster(self) -> loadgen.Poster:
        return loadgen.Poster(
            bases=[(HOST, s.port) for s in self.stack.servers], path=f"/api/feeds/{FEED}/comments/",
            connections=self.args.post_connections, numbering=self.numbering,
        )

    def record_seqs(self, sent: dict[int, float]) -> int:
        """Remember a phase's posted seqs; return how many an earlier phase had posted already (should be 0)."""
        reused = len(self.posted_seqs.intersection(sent))
        self.posted_seqs.update(sent)
        return reused

    def last_seq(self) -> int:
        """Return the highest seq posted so far: the run's counter for the peer, the database's for the project."""
        if self.numbering is not None:
            return self.numbering.last
        import urllib.request

        port = self.stack.servers[0].port
        with urllib.request.urlopen(f"http://{HOST}:{port}/api/feeds/", timeout=30) as response:
            payload = json.load(response)
        feeds = payload["items"] if isinstance(payload, dict) and "items" in payload else payload
        return next(int(f["last_seq"]) for f in feeds if f["slug"] == FEED)

    def hello(self) -> bytes | None:
        # The project's readers resume like the page does, so a gap would be filled from
        # the database; the peer has no resume and ignores client frames.
        if self.name in ("peer", "node"):
            return None
        return json.dumps({"type": "resume", "after": self.last_seq()}).encode()

    def group_members(self) -> dict[str, int]:
        client = redis.Redis(host=HOST, port=self.stack.redis.port, socket_timeout=10)
        try:
            return {key.decode(): client.zcard(key) for key in client.scan_iter(match="*group*", count=1000)
                    if client.type(key) == b"zset"}
        finally:
            client.close()

    def stop(self) -> None:
        self.stack.stop()

    def hub_deliveries(self) -> dict[str, int] | None:
        """Return the events the project's hubs delivered, received live vs read from the database."""
        pattern = re.compile(r"Events delivered since start: (\d+) received live, (\d+) read from the database")
        counts = {"live": 0, "database": 0}
        found = False
        for log in self.workdir.glob(f"{self.name}-*.log"):
            for match in pattern.finditer(log.read_text(errors="replace")):
                found = True
                counts["live"] += int(match[1])
                counts["database"] += int(match[2])
        return counts if found else None


class Bench:
    def __init__(self, args: argparse.Namespace, system: System, workers: Workers) -> None:
        self.args = args
        self.system = system
        self.workers = workers
        self.generator_ps = [psutil.Process(os.getpid()), *workers.ps]
        self.load_at_start = [round(x, 2) for x in os.getloadavg()]

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {self.system.name}: {message}", flush=True)

    def processes(self) -> dict[str, list[psutil.Process]]:
        return {"servers": self.system.servers_ps, "redis": [self.system.stack.redis.ps], "generator": self.generator_ps}

    def cpu_snapshot(self) -> dict[str, Any]:
        snapshot: dict[str, Any] = {group: cpu_seconds(ps) for group, ps in self.processes().items()}
        machine = psutil.cpu_times()
        snapshot["machine"] = machine.user + machine.system + machine.nice + getattr(machine, "irq", 0) + getattr(
            machine, "softirq", 0
        )
        return snapshot

    def cpu_usage(self, before: dict[str, Any], seconds: float) -> dict[str, Any]:
        """Return CPU % (100 = one core) per group of our processes, and what the rest of the machine used."""
        after = self.cpu_snapshot()
        machine = round(100 * (after.pop("machine") - before["machine"]) / seconds, 1)
        percent: dict[str, Any] = {}
        per_process: dict[str, float] = {}
        used_seconds: dict[str, float] = {}
        names = {p.pid: s.name for s, p in zip(self.system.stack.servers, self.system.servers_ps)}
        names[self.system.stack.redis.process.pid] = "redis"
        names[os.getpid()] = "generator-main"
        for index, process in enumerate(self.workers.processes):
            names[process.pid] = f"generator-{index}"
        for group, values in after.items():
            total = 0.0
            for pid, value in values.items():
                used = value - before[group].get(pid, 0.0)
                total += used
                per_process[names.get(pid, str(pid))] = round(100 * used / seconds, 1)
            percent[group] = round(100 * total / seconds, 1)
            used_seconds[group] = round(total, 3)
        # Other processes on the machine (other users' jobs) compete for the same cores.
        percent["other_processes"] = round(max(0.0, machine - sum(percent.values())), 1)
        return {"cpu_percent": percent, "cpu_percent_per_process": per_process, "cpu_seconds": used_seconds,
                "generator_saturated": generator_saturated(per_process)}

    async def drain(self, expected_total: int) -> None:
        """After posting: wait until every expected frame is in, or frames stop coming, or the cap is hit.

        Only the phase's own frames count (seqs above the floor set when the phase began).
        """
        started = last_change = time.monotonic()
        last = -1
        while True:
            received = (await self.workers.received())["fresh"]
            now = time.monotonic()
            if received >= expected_total:
                return
            if received != last:
                last, last_change = received, now
            if now - last_change > self.args.drain_stall or now - started > self.args.drain_max:
                self.log(f"drain stopped with {received:,}/{expected_total:,} frames")
                return
            await asyncio.sleep(0.2)

    async def quiet(self, what: str) -> dict[str, Any]:
        """Wait until the servers have gone quiet; return how long it took and whether they did.

        Quiet: for --quiet-seconds no frame reached a reader and the servers and Redis together
        used at most --quiet-cpu % of a core. At most --settle-max seconds: a system still busy
        then is logged and recorded (quiet: false), and the next phase starts anyway.
        """
        args = self.args
        processes = [*self.system.servers_ps, self.system.stack.redis.ps]

        async def sample() -> tuple[float, int, float]:
            frames = (await self.workers.received())["frames"]
            return time.monotonic(), frames, sum(cpu_seconds(processes).values())

        started = time.monotonic()
        mark = first = await sample()
        while True:
            await asyncio.sleep(0.25)
            now, frames, cpu = current = await sample()
            if frames != mark[1]:
                mark = current
            elif now - mark[0] >= args.quiet_seconds:
                cpu_percent = 100 * (cpu - mark[2]) / (now - mark[0])
                if cpu_percent <= args.quiet_cpu:
                    quiet = True
                    break
                mark = current
            if now - started > args.settle_max:
                quiet = False
                break
        result = {"quiet": quiet, "seconds": round(now - started, 1), "frames": frames - first[1],
                  "cpu_seconds": round(cpu - first[2], 1)}
        if not quiet or now - started > 5:
            self.log(f"after {what}: {'quiet' if quiet else 'NOT quiet'} after {result['seconds']} s "
                     f"({result['frames']:,} more frames, {result['cpu_seconds']} CPU s)")
        return result

    async def deliver(self, *, name: str, posts: int, rate: float | None, readers: int) -> dict[str, Any]:
        """Post comments, wait for the frames, check them; return the phase's figures.

        Frames that arrive before the phase posts anything belong to earlier phases: they are
        stale. After the drain, the servers are given time to go quiet (bounded); what arrives
        meanwhile is reported as the phase's late frames, and counted in no other phase.
        """
        leftover = await self.workers.take(floor=self.system.last_seq())
        stale_at_start = sum(len(seqs) // 8 for seqs, _ in leftover["connections"])
        poster = self.system.poster()
        cpu_before = self.cpu_snapshot()
        started = time.monotonic()
        profile = (self.start_profile(name.replace(" ", "-")) if self.args.py_spy and readers > 10
                   and (name == "keep-up" if self.args.py_spy_keep_up else rate is None) else None)
        posted = await poster.run(count=posts, rate=rate, max_seconds=self.args.post_max)
        await poster.close()
        await self.drain(len(poster.sent) * readers)
        seconds = time.monotonic() - started
        usage = self.cpu_usage(cpu_before, seconds)
        taken = await self.workers.take()
        if profile:
            profile_summary = self.stop_profile(profile)
        stats = report.delivery_stats(connections=taken["connections"], sent=poster.sent, first_send=started)
        stats["stale"] += stale_at_start
        stats["stale_at_start"] = stale_at_start
        stats["seqs_reused"] = self.system.record_seqs(poster.sent)
        if stats["seqs_reused"]:
            self.log(f"{name}: {stats['seqs_reused']} seqs were posted by an earlier phase already")
        settle = await self.quiet(name)
        late = await self.workers.take()
        stats["after_drain"] = {
            **report.late_stats(in_time=taken["connections"], late=late["connections"], sent=poster.sent,
                                first_send=started),
            "settle": settle,
        }
        if profile:
            stats["profile"] = profile_summary
        return {
            **stats, **usage, **frame_cost(usage, stats["received"]), "posts": posted, "readers_dropped": taken["dropped"], "close_codes": taken["close_codes"],
            "offered_rate": rate, "post_rate": round(posted["posted"] / posted["seconds"], 1) if posted["seconds"] else None,
        }

    def start_profile(self, name: str) -> tuple[subprocess.Popen, Path] | None:
        return profile_start(self.system.stack.servers[0].process.pid, self.system.workdir / f"{name}.collapsed",
                             self.log)

    def stop_profile(self, profile: tuple[subprocess.Popen, Path]) -> dict[str, Any]:
        return profile_stop(profile)

    async def settle_members(self, baseline: int, timeout: float) -> int:
        """Wait until the groups hold as many members as before; return how many are extra."""
        deadline = time.monotonic() + timeout
        while True:
            extra = sum(self.system.group_members().values()) - baseline
            if extra <= 0 or time.monotonic() > deadline:
                return extra
            await asyncio.sleep(0.25)

    async def run(self) -> dict[str, Any]:
        args = self.args
        phases: dict[str, Any] = {}
        scenarios = set(args.scenarios.split(","))

        self.log("warm-up")
        await self.workers.connect(self.system.reader_urls(10), hello=self.system.hello(), concurrency=10, timeout=30)
        phases["warm_up"] = await self.deliver(name="warm-up", posts=3, rate=None, readers=10)
        await self.workers.close()
        members_baseline = sum(self.system.group_members().values())
        await self.settle_members(0, timeout=5)
        members_baseline = sum(self.system.group_members().values())

        if scenarios & {"memory", "keep_up", "full_speed"}:
            rss_before = rss_bytes(self.system.servers_ps)
            self.log(f"connecting {args.readers:,} readers")
            connect = await self.workers.connect(
                self.system.reader_urls(args.readers), hello=self.system.hello(), concurrency=200, timeout=60
            )
            settle = await self.quiet("connecting")  # the handshakes' work done before measuring
            rss_after = rss_bytes(self.system.servers_ps)
            phases["memory"] = {
                "connect": connect,
                "rss_before_mb": round(rss_before / 2**20, 1),
                "rss_after_mb": round(rss_after / 2**20, 1),
                "kb_per_connection": round((rss_after - rss_before) / 1024 / max(1, connect["connected"]), 1),
                "settle": settle,
            }
            self.log(f"memory: {phases['memory']['kb_per_connection']} KB per connection, connect {connect}")
            readers = connect["connected"]
            if "keep_up" in scenarios:
                posts = round(args.keep_up_rate * args.keep_up_seconds)
                self.log(f"keep-up: {posts} comments at {args.keep_up_rate}/s to {readers:,} readers")
                phases["keep_up"] = await self.deliver(name="keep-up", posts=posts, rate=args.keep_up_rate,
                                                      readers=readers)
                self.log(f"keep-up: {brief(phases['keep_up'])}")
            if "full_speed" in scenarios:
                self.log(f"full speed: {args.full_speed_posts} comments to {readers:,} readers")
                phases["full_speed"] = await self.deliver(name="full speed", posts=args.full_speed_posts, rate=None,
                                                         readers=readers)
                self.log(f"full speed: {brief(phases['full_speed'])}")
            await self.workers.close()
            await self.settle_members(members_baseline, timeout=30)
            phases["memory"]["settle_after_close"] = await self.quiet("closing the readers")

        if "storm" in scenarios:
            phases["storm"] = await self.storm(members_baseline)
        if "notifications" in scenarios and self.system.name == "project":
            self.load_at_start = [round(x, 2) for x in os.getloadavg()]
            phases["notifications"] = await run_notifications(self)
            self.log(f"notifications: {brief(phases['notifications'])}")
        await self.run_more(phases, scenarios, members_baseline)
        alive = [s.name for s in self.system.stack.servers if s.process.poll() is None]
        return {"label": self.system.label, "phases": phases, "servers_alive_at_end": alive}

    async def run_more(self, phases: dict[str, Any], scenarios: set[str], members_baseline: int) -> None:
        """The scenarios of bench/scenarios.py: keep-up at 5,000 readers, many feeds."""
        await more.run(self, phases, scenarios, members_baseline)

    async def storm(self, members_baseline: int) -> dict[str, Any]:
        args = self.args
        rss_before = rss_bytes(self.system.servers_ps)
        cpu_before = self.cpu_snapshot()
        started = time.monotonic()
        self.log(f"storm: {args.storm_readers:,} handshakes at once")
        profile = self.start_profile("storm") if args.py_spy else None
        connect = await self.workers.connect(
            self.system.reader_urls(args.storm_readers), hello=self.system.hello(),
            concurrency=args.storm_readers, timeout=120,
        )
        members_connected = sum(self.system.group_members().values()) - members_baseline
        connect_profile = self.stop_profile(profile) if profile is not None else None
        rss_after = rss_bytes(self.system.servers_ps)
        # Presence frames are coalesced to one a second per reader: bounded by readers x seconds.
        presence_frames = await self.presence_settled()
        self.log(f"storm: {connect}; {presence_frames:,} presence frames; disconnecting all at once")
        await self.workers.close()
        members_left = await self.settle_members(members_baseline, timeout=60)
        disconnected_at = time.monotonic()
        usage = self.cpu_usage(cpu_before, time.monotonic() - started)
        after_readers = min(100, args.storm_readers)
        await self.workers.connect(self.system.reader_urls(after_readers), hello=self.system.hello(),
                                   concurrency=100, timeout=60)
        after = await self.deliver(name="after the storm", posts=5, rate=None, readers=after_readers)
        await self.workers.close()
        result = {
            "connect": connect,
            "members_while_connected": members_connected,
            "presence_frames": presence_frames,
            "members_left": max(0, members_left),
            "groups_after": self.system.group_members(),
            "settle_seconds": round(time.monotonic() - disconnected_at, 1),
            "kb_per_connection": round((rss_after - rss_before) / 1024 / max(1, connect["connected"]), 1),
            "after": {k: after[k] for k in ("expected", "received", "lost", "duplicated", "out_of_order", "stale",
                                            "latency_ms", "after_drain")},
            **usage,
        }
        if connect_profile is not None:
            result["profile"] = connect_profile
        self.log(f"storm: members left {result['members_left']}, afterwards {brief(after)}")
        return result


    async def presence_settled(self, quiet: float = 2.5, limit: float = 15.0) -> int:
        """Return the readers' feed.presence frames once none came for `quiet` s (at most `limit` s)."""
        deadline, count, changed = time.monotonic() + limit, -1, time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - changed < quiet:
            now = (await self.workers.received())["presence"]
            if now != count:
                count, changed = now, time.monotonic()
            await asyncio.sleep(0.25)
        return count


def brief(phase: dict[str, Any]) -> str:
    return (
        f"{phase['received']:,}/{phase['expected']:,} delivered, lost {phase['lost']:,}, dup {phase['duplicated']:,}, "
        f"ooo {phase['out_of_order']:,}, {phase.get('deliveries_per_s')} deliveries/s, latency {phase['latency_ms']}, "
        f"cpu {phase['cpu_percent']}"
    )


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """Return the issue's targets for the project, each with its figure and whether it is met."""
    systems = result["systems"]
    project = systems.get("project", {}).get("phases", {})
    peer = systems.get("peer", {}).get("phases", {})
    out: dict[str, Any] = {}
    if "keep_up" in project:
        k = project["keep_up"]
        out["keep_up"] = {
            "p99_ms": k["latency_ms"]["p99"], "lost": k["lost"], "duplicated": k["duplicated"],
            "out_of_order": k["out_of_order"],
            "met": k["lost"] == 0 and k["duplicated"] == 0 and k["out_of_order"] == 0 and k["received"] == k["expected"]
            and (k["latency_ms"]["p99"] or 1e9) <= 250,
        }
    if "full_speed" in project and "full_speed" in peer:
        ratio = (project["full_speed"]["deliveries_per_s"] or 0) / max(1e-9, peer["full_speed"]["deliveries_per_s"] or 0)
        out["full_speed"] = {"ratio_to_peer": round(ratio, 2), "met": ratio >= 4}
    if "memory" in project:
        out["memory"] = {"kb_per_connection": project["memory"]["kb_per_connection"],
                         "met": project["memory"]["kb_per_connection"] <= 35}
    if "storm" in project:
        s = project["storm"]
        out["storm"] = {"failed_handshakes": s["connect"]["failed"], "members_left": s["members_left"],
                        "presence_frames": s.get("presence_frames"),
                        "after_lost": s["after"]["lost"],
                        "met": s["connect"]["failed"] == 0 and s["members_left"] == 0 and s["after"]["lost"] == 0
                        and s["after"]["received"] == s["after"]["expected"]}
    if "notifications" in project:
        n = project["notifications"]
        out["notifications"] = {
            "p99_ms": n["latency_ms"]["p99"], "lost": n["lost"], "duplicated": n["duplicated"],
            "out_of_order": n["out_of_order"],
            "met": n["lost"] == 0 and n["duplicated"] == 0 and n["out_of_order"] == 0 and n["expected"] > 0
            and n["sockets_matching_database"] == n["connections"] and (n["latency_ms"]["p99"] or 1e9) <= 250,
        }
    return out


def merge_earlier(result: dict[str, Any], path: Path) -> None:
    """Keep the systems and phases of an earlier run (path) that this run did not measure."""
    if not path.exists():
        return
    earlier = json.loads(path.read_text())
    kept = []
    for name, system in earlier.get("systems", {}).items():
        current = result["systems"].setdefault(name, system)
        if current is system:
            kept.extend(f"{name}.{phase}" for phase in system.get("phases", {}))
            continue
        for phase, figures in system.get("phases", {}).items():
            if phase not in current["phases"]:
                current["phases"][phase] = figures
                kept.append(f"{name}.{phase}")
    if kept:
        result["merged_from"] = {"started_at": earlier.get("started_at"), "phases": kept,
                                 "config": earlier.get("config")}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    raise_fd_limit(max(args.storm_readers, args.big_readers, args.feeds * args.feed_readers) * 3 + 500)
    workdir = Path(tempfile.mkdtemp(prefix="livefeed-bench-"))
    result: dict[str, Any] = {
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {
            "servers": args.servers, "readers": args.readers, "keep_up_rate": args.keep_up_rate,
            "keep_up_seconds": args.keep_up_seconds, "full_speed_posts": args.full_speed_posts,
            "storm_readers": args.storm_readers, "post_connections": args.post_connections,
            "notif_users": args.notif_users, "notif_rate": args.notif_rate, "notif_seconds": args.notif_seconds,
            "notif_mentions": args.notif_mentions,
            "generator_workers": args.workers, "quick": args.quick, "daphne_args": args.daphne_arg, "backlog": args.backlog or 50,
            "database": "postgresql" if args.database_url else "sqlite",
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine(),
            "uvloop": loadgen.uvloop is not None, "big_readers": args.big_readers, "feeds": args.feeds,
            "feed_readers": args.feed_readers, "feeds_rate": args.feeds_rate, "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "systems": {},
    }
    workers = Workers(args.workers)
    try:
        for name in args.systems.split(","):
            system = System(name.strip(), args, workdir)
            try:
                system.start()
                result["systems"][system.name] = await Bench(args, system, workers).run()
            finally:
                system.stop()
            deliveries = system.hub_deliveries()
            if deliveries is not None and system.name in result["systems"]:
                result["systems"][system.name]["hub_deliveries"] = deliveries
                print(f"[{system.name}] hub deliveries (events x hubs): {deliveries}", flush=True)
        if "write_path" in args.scenarios.split(","):
            result["write_path"] = await writepath.run(
                args, workdir, lambda m: print(f"[{time.strftime('%H:%M:%S')}] {m}", flush=True))
    finally:
        workers.stop()
        if args.keep_logs:
            print(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    result["targets"] = targets(result)
    result["node_comparison"] = more.node_comparison(result)
    result["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    result["config"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


async def bounded(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; SIGTERM or the time cap cancel it, and every server is stopped."""
    task = asyncio.ensure_future(main_async(args))
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    timer = loop.call_later(args.max_seconds, task.cancel)
    try:
        return await task
    finally:
        timer.cancel()
        loop.remove_signal_handler(signal.SIGTERM)


def main_soak(args: argparse.Namespace) -> int:
    """`--soak`: the long steady run of the project (bench/soak.py); writes soak.json and soak.md."""
    raise_fd_limit(args.soak_readers * 3 + 500)
    args.max_seconds = max(args.max_seconds, args.soak_minutes * 60 + 600)
    try:
        result = asyncio.run(asyncio.wait_for(soak.run(args, System, Bench, Workers), args.max_seconds))
    except (asyncio.CancelledError, asyncio.TimeoutError, KeyboardInterrupt):
        print("soak stopped before the end; nothing written", file=sys.stderr)
        return 2
    soak.write(result, args.out)
    print(soak.summary(result))
    print(f"written: {args.out / 'soak.json'}, {args.out / 'soak.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.soak:
        return main_soak(args)
    try:
        result = asyncio.run(bounded(args))
    except (asyncio.CancelledError, KeyboardInterrupt):
        print("benchmark stopped before the end; nothing written", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        merge_earlier(result, args.out / "latest.json")
        result["targets"] = targets(result)
    (args.out / "latest.json").write_text(json.dumps(result, indent=2) + "\n")
    table = report.markdown_table(report.summary_rows(result))
    comparison = report.markdown_table(more.comparison_rows(result["node_comparison"])) + "\n\n" + more.extra_rows(result)
    (args.out / "latest.md").write_text(table + "\n\n" + comparison + "\n\n" + report.machine_line(result) + "\n")
    more.write_comparison_chart(result, args.out / "comparison.png")
    report.write_chart(result, args.out / "latest.png")
    print()
    print(table)
    print()
    print(comparison)
    print()
    print(report.machine_line(result))
    print("targets:", json.dumps(result["targets"]))
    print(f"written: {args.out / 'latest.json'}, {args.out / 'latest.png'}, {args.out / 'latest.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
