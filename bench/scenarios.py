"""The benchmark's later scenarios (issue 14): keep-up at 5,000 readers, many feeds, and the
figures that compare the project with the Node peer (CPU per delivered frame, ratios).

Kept apart from run.py so that run.py only dispatches here (`Bench.run_more`).
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import time
from array import array
from typing import TYPE_CHECKING, Any

from bench import loadgen, report
from bench.servers import HOST, PYTHON, ROOT, rss_bytes

if TYPE_CHECKING:
    from bench.run import Bench

# A generator process at or above this CPU % (100 = one core) is saturated: its figures then
# measure the generator as much as the servers.
SATURATED_PERCENT = 90.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--big-readers", type=int, default=5000, help="keep_up_big: readers (at --keep-up-rate)")
    parser.add_argument("--big-systems", default="project,node", help="systems that run keep_up_big and many_feeds")
    parser.add_argument("--feeds", type=int, default=2000, help="many_feeds: feeds")
    parser.add_argument("--feed-readers", type=int, default=3, help="many_feeds: readers per feed")
    parser.add_argument("--feeds-rate", type=float, default=100.0, help="many_feeds: comments/s over random feeds")
    parser.add_argument("--feeds-seconds", type=float, default=10.0)


def quick(args: argparse.Namespace) -> None:
    args.big_readers = min(args.big_readers, 100)
    args.feeds = min(args.feeds, 20)


def generator_saturated(per_process: dict[str, float]) -> bool:
    """Whether one of the load generator's processes used (nearly) a whole core."""
    return any(v >= SATURATED_PERCENT for k, v in per_process.items() if k.startswith("generator"))


def frame_cost(usage: dict[str, Any], received: int) -> dict[str, Any]:
    """Return CPU microseconds per delivered frame: the servers', with Redis, and the generator's."""
    used = usage.get("cpu_seconds", {})
    if not received:
        return {"cpu_us_per_frame": None}
    return {"cpu_us_per_frame": {
        "servers": round(1e6 * used.get("servers", 0.0) / received, 2),
        "servers_and_redis": round(1e6 * (used.get("servers", 0.0) + used.get("redis", 0.0)) / received, 2),
        "generator": round(1e6 * used.get("generator", 0.0) / received, 2),
    }}


async def run(bench: Bench, phases: dict[str, Any], scenarios: set[str], members_baseline: int) -> None:
    """Run the later scenarios this system takes part in."""
    if bench.system.name not in bench.args.big_systems.split(","):
        return
    if "keep_up_big" in scenarios:
        phases["keep_up_big"] = await keep_up_big(bench, members_baseline)
    if "many_feeds" in scenarios:
        phases["many_feeds"] = await many_feeds(bench, members_baseline)


async def keep_up_big(bench: Bench, members_baseline: int) -> dict[str, Any]:
    args = bench.args
    servers = bench.system.servers_ps
    rss_before = rss_bytes(servers)
    bench.log(f"keep-up big: connecting {args.big_readers:,} readers")
    connect = await bench.workers.connect(bench.system.reader_urls(args.big_readers), hello=bench.system.hello(),
                                          concurrency=200, timeout=120)
    await bench.quiet("connecting")
    rss_after = rss_bytes(servers)
    readers = connect["connected"]
    posts = round(args.keep_up_rate * args.keep_up_seconds)
    bench.log(f"keep-up big: {posts} comments at {args.keep_up_rate}/s to {readers:,} readers")
    phase = await bench.deliver(name="keep-up big", posts=posts, rate=args.keep_up_rate, readers=readers)
    phase["connect"] = connect
    phase["kb_per_connection"] = round((rss_after - rss_before) / 1024 / max(1, readers), 1)
    bench.log(f"keep-up big: {phase['received']:,}/{phase['expected']:,}, p99 {phase['latency_ms']['p99']} ms, "
              f"{phase['cpu_us_per_frame']} us/frame, generator saturated: {phase['generator_saturated']}")
    await bench.workers.close()
    await bench.settle_members(members_baseline, timeout=60)
    await bench.quiet("closing the readers")
    return phase


def create_feeds(bench: Bench, slugs: list[str]) -> None:
    """Create the project's feeds (anonymous posting allowed, like the demo feed) in its database."""
    env = {"DATABASE_URL": bench.args.database_url or f"sqlite:///{bench.system.workdir / 'bench.sqlite3'}",
           "REDIS_URL": bench.system.stack.redis_url, "DEBUG": "1"}
    code = (
        "import json,sys; from feed.models import Feed; slugs=json.load(sys.stdin); "
        "Feed.objects.bulk_create([Feed(slug=s, title=s, allow_anonymous=True) for s in slugs], ignore_conflicts=True)"
    )
    import os

    done = subprocess.run([PYTHON, "manage.py", "shell", "-c", code], input=json.dumps(slugs), text=True, cwd=ROOT,
                          env={**os.environ, **env}, timeout=300, capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"creating the feeds failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


class FeedsPoster(loadgen.Poster):
    """Posts to random feeds; records send times by (feed, seq): the project numbers each feed apart."""

    def __init__(self, *, slugs: list[str], **kwargs: Any) -> None:
        super().__init__(path="", **kwargs)
        self.slugs = slugs
        self.by_feed: dict[tuple[str, int], float] = {}
        self.random = random.Random(14)

    def path_for(self, index: int) -> str:
        return f"/api/feeds/{self.slugs[self.random.randrange(len(self.slugs))]}/comments/"

    def record(self, seq: int, sent_at: float, path: str) -> None:
        self.sent[seq] = sent_at  # the count of posts (seqs of different feeds may coincide)
        self.by_feed[(path.split("/")[3], seq)] = sent_at


def feed_stats(*, connections: list[tuple[bytes, bytes]], paths: list[str],
               sent: dict[tuple[str, int], float]) -> dict[str, Any]:
    """Check every connection's frames against the seqs posted to its own feed."""
    per_feed: dict[str, dict[int, float]] = {}
    for (slug, seq), at in sent.items():
        per_feed.setdefault(slug, {})[seq] = at
    received = lost = duplicated = out_of_order = stale = expected = 0
    latencies: list[float] = []
    for (seq_bytes, time_bytes), path in zip(connections, paths):
        slug = path.split("/")[3]
        mine = per_feed.get(slug, {})
        seqs, times = array("q"), array("d")
        seqs.frombytes(seq_bytes)
        times.frombytes(time_bytes)
        seen: set[int] = set()
        highest = -1
        for seq, at in zip(seqs, times):
            if seq not in mine:
                stale += 1
                continue
            if seq in seen:
                duplicated += 1
                continue
            seen.add(seq)
            received += 1
            out_of_order += seq < highest
            highest = max(highest, seq)
            latencies.append(at - mine[seq])
        expected += len(mine)
        lost += len(mine) - len(seen)
    latencies.sort()
    return {
        "connections": len(connections), "expected": expected, "received": received, "lost": lost,
        "duplicated": duplicated, "out_of_order": out_of_order, "stale": stale,
        "latency_ms": {name: None if v is None else round(v * 1000, 1) for name, v in (
            ("p50", report.percentile(latencies, 0.5)), ("p90", report.percentile(latencies, 0.9)),
            ("p99", report.percentile(latencies, 0.99)), ("max", latencies[-1] if latencies else None))},
    }


async def many_feeds(bench: Bench, members_baseline: int) -> dict[str, Any]:
    """Many feeds: --feeds feeds x --feed-readers readers, --feeds-rate comments/s over random feeds."""
    args, system = bench.args, bench.system
    slugs = [f"bench-{i:05d}" for i in range(args.feeds)]
    if system.name == "project":
        create_feeds(bench, slugs)
    ports = [s.port for s in system.stack.servers]
    urls = [f"ws://{HOST}:{ports[i % len(ports)]}/ws/feeds/{slug}/?format=json"
            for i, slug in enumerate(s for s in slugs for _ in range(args.feed_readers))]
    hello = None if system.numbering is not None else json.dumps({"type": "resume", "after": 0}).encode()
    bench.log(f"many feeds: connecting {len(urls):,} readers to {len(slugs):,} feeds")
    connect = await bench.workers.connect(urls, hello=hello, concurrency=200, timeout=120)
    await bench.quiet("connecting")
    await bench.workers.take(floor=0)  # every frame of these feeds is this phase's
    poster = FeedsPoster(slugs=slugs, bases=[(HOST, p) for p in ports], connections=args.post_connections,
                         numbering=system.numbering)
    posts = round(args.feeds_rate * args.feeds_seconds)
    cpu_before = bench.cpu_snapshot()
    started = time.monotonic()
    posted = await poster.run(count=posts, rate=args.feeds_rate, max_seconds=args.post_max)
    posted["posted"] = len(poster.by_feed)
    await poster.close()
    await bench.drain(len(poster.by_feed) * args.feed_readers)
    usage = bench.cpu_usage(cpu_before, time.monotonic() - started)
    taken = await bench.workers.take()
    stats = feed_stats(connections=taken["connections"], paths=taken["paths"], sent=poster.by_feed)
    phase = {**stats, **usage, **frame_cost(usage, stats["received"]), "connect": connect, "posts": posted,
             "post_rate": round(posted["posted"] / posted["seconds"], 1) if posted["seconds"] else None,
             "readers_dropped": taken["dropped"]}
    phase["met"] = stats["lost"] == 0 and stats["received"] == stats["expected"] and stats["expected"] > 0 and (
        stats["latency_ms"]["p99"] or 1e9) <= 100
    bench.log(f"many feeds: {stats['received']:,}/{stats['expected']:,}, lost {stats['lost']}, "
              f"p99 {stats['latency_ms']['p99']} ms")
    await bench.workers.close()
    await bench.settle_members(members_baseline, timeout=60)
    await bench.quiet("closing the readers")
    return phase


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def node_comparison(result: dict[str, Any]) -> dict[str, Any]:
    """Return the project's figures over the Node peer's, with the issue's targets."""
    systems = result["systems"]
    if "project" not in systems or "node" not in systems:
        return {}
    project, node = systems["project"]["phases"], systems["node"]["phases"]
    out: dict[str, Any] = {}

    def cost(phases: dict[str, Any], name: str) -> float | None:
        figure = phases.get(name, {}).get("cpu_us_per_frame")
        return figure["servers"] if figure else None

    for name, label in (("keep_up", "cpu_per_frame_1k"), ("keep_up_big", "cpu_per_frame_5k")):
        ratio = _ratio(cost(project, name), cost(node, name))
        out[label] = {"project_us": cost(project, name), "node_us": cost(node, name), "ratio": ratio,
                      "target": "<= 2", "met": ratio is not None and ratio <= 2}
    p99 = [p.get("keep_up_big", {}).get("latency_ms", {}).get("p99") for p in (project, node)]
    ratio = _ratio(*p99)
    out["p99_5k"] = {"project_ms": p99[0], "node_ms": p99[1], "ratio": ratio, "target": "<= 1.5",
                     "met": ratio is not None and ratio <= 1.5}
    speed = [p.get("full_speed", {}).get("deliveries_per_s") for p in (project, node)]
    ratio = _ratio(*speed)
    out["full_speed"] = {"project": speed[0], "node": speed[1], "ratio": ratio, "target": ">= 0.6",
                         "met": ratio is not None and ratio >= 0.6}
    memory = [p.get("memory", {}).get("kb_per_connection") for p in (project, node)]
    out["memory"] = {"project_kb": memory[0], "node_kb": memory[1], "ratio": _ratio(*memory), "target": "<= 12 KB",
                     "met": memory[0] is not None and memory[0] <= 12}
    return out


def comparison_rows(comparison: dict[str, Any]) -> list[tuple[str, ...]]:
    """Rows of the side-by-side table: figure, project, Node peer, ratio, target, met."""
    rows = [("project vs Node ws peer", "project", "Node peer", "ratio", "target", "met")]
    labels = {"cpu_per_frame_1k": ("server CPU per delivered frame, 1,000 readers x 20/s", " µs"),
              "cpu_per_frame_5k": ("server CPU per delivered frame, 5,000 readers x 20/s", " µs"),
              "p99_5k": ("p99 post-to-frame, 5,000 readers x 20/s", " ms"),
              "full_speed": ("full speed deliveries/s, 1,000 readers", ""),
              "memory": ("RSS per idle connection after warm-up", " KB")}
    for key, (label, unit) in labels.items():
        row = comparison.get(key)
        if not row:
            continue
        values = [v for k, v in row.items() if k not in ("ratio", "target", "met")]
        rows.append((label, *(f"{v:,}{unit}" if v is not None else "–" for v in values[:2]),
                     f"{row['ratio']}×" if row["ratio"] is not None else "–", row["target"],
                     "yes" if row["met"] else "no"))
    return rows



def extra_rows(result: dict[str, Any]) -> str:
    """Markdown for many feeds and the write path (the project's figures, the peers' beside them)."""
    parts = []
    systems = {name: s["phases"]["many_feeds"] for name, s in result["systems"].items() if "many_feeds" in s["phases"]}
    if systems:
        config = result["config"]
        lines = [f"| many feeds ({config.get('feeds', '?'):,} feeds × {config.get('feed_readers', '?')} readers, "
                 f"{config.get('feeds_rate', '?')}/s) | " + " | ".join(result["systems"][n]["label"] for n in systems)
                 + " |", "|---|" + "---|" * len(systems)]
        for label, get in (
            ("delivered / expected", lambda p: f"{p['received']:,} / {p['expected']:,}"),
            ("lost / duplicated / out of order", lambda p: f"{p['lost']:,} / {p['duplicated']:,} / {p['out_of_order']:,}"),
            ("latency p50 / p99 / max", lambda p: f"{p['latency_ms']['p50']} / {p['latency_ms']['p99']} / "
                                                  f"{p['latency_ms']['max']} ms"),
            ("server CPU per delivered frame", lambda p: f"{(p.get('cpu_us_per_frame') or {}).get('servers')} µs"),
            ("generator CPU (saturated?)", lambda p: f"{p['cpu_percent']['generator']} % "
                                                     f"({'yes' if p['generator_saturated'] else 'no'})"),
            ("target: 0 lost, p99 ≤ 100 ms", lambda p: "met" if p["met"] else "not met"),
        ):
            lines.append(f"| {label} | " + " | ".join(get(p) for p in systems.values()) + " |")
        parts.append("\n".join(lines))
    write = result.get("write_path")
    if write:
        rounds = write.get("rounds", 1)
        lines = [f"| write path ({write['posts']:,} posts × {rounds} rounds, {write['servers']} instances, PostgreSQL, "
                 "no readers) | project | plain Django insert view |", "|---|---|---|"]
        for label, get in (
            ("posts/s (median round)", lambda p: f"{p['posts_per_s']}"),
            ("posts/s of each round", lambda p: ", ".join(str(r.get("posts_per_s")) for r in p.get("rounds", [p]))),
            ("response p50 / p99", lambda p: f"{p['posts']['response_ms']['p50']} / {p['posts']['response_ms']['p99']} ms"),
            ("server CPU per post", lambda p: f"{p['server_cpu_ms_per_post']} ms"),
            ("errors", lambda p: str(sum(p["posts"]["errors"].values()))),
        ):
            lines.append(f"| {label} | {get(write['project'])} | {get(write['write_peer'])} |")
        each = ", ".join(f"{ratio}×" for ratio in write.get("round_ratios", []))
        lines.append(f"| ratio, median of the rounds' (target ≥ 0.8×) | {write['ratio']}× ({'met' if write['met'] else 'not met'};"
                     f" rounds: {each}) | |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def write_comparison_chart(result: dict[str, Any], path: Any) -> None:
    """Draw the project's figures over the Node peer's, with the targets as dashed lines."""
    comparison = result.get("node_comparison") or {}
    if not comparison:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Every bar: how many times the peer's figure the project needs (lower is better), so the
    # full-speed ratio is inverted (peer deliveries/s over the project's).
    items = []
    for key, label, target in (("cpu_per_frame_1k", "CPU/frame\n1,000 readers", 2.0),
                               ("cpu_per_frame_5k", "CPU/frame\n5,000 readers", 2.0),
                               ("p99_5k", "p99 latency\n5,000 readers", 1.5),
                               ("full_speed", "time per delivery\nfull speed", 1 / 0.6),
                               ("memory", "RSS per idle\nconnection", None)):
        row = comparison.get(key)
        if not row or not row.get("ratio"):
            continue
        ratio = 1 / row["ratio"] if key == "full_speed" else row["ratio"]
        if key == "memory" and row.get("node_kb"):
            target = 12 / row["node_kb"]
        items.append((label, ratio, target))
    fig, ax = plt.subplots(figsize=(9, 4.5))
    bars = ax.bar([i[0] for i in items], [i[1] for i in items],
                  color=["#2f855a" if t and r <= t else "#c53030" for _, r, t in items])
    ax.bar_label(bars, fmt="{:.2f}×")
    for index, (_, _, target) in enumerate(items):
        if target:
            ax.hlines(target, index - 0.4, index + 0.4, colors="black", linestyles="--", linewidth=1.2)
    ax.axhline(1, color="grey", linewidth=0.8)
    config = result["config"]
    load = config.get("load_average_at_start") or [None]
    ax.set_title(f"Project ÷ Node ws peer (1.0 = as good as the peer; dashed: target; green: met)\n"
                 f"{config['cpu_count']} cores, {result['started_at'][:16]} UTC, load average {load[0]} at start")
    ax.set_ylim(0, max([i[1] for i in items] + [2.5]) * 1.2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
