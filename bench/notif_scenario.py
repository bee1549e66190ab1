"""The notification scenario: signed-in people, each with a notification socket, mentioned by a
stream of comments.

Users and their API tokens are created in bulk in the benchmark's database (bench/notif_db.py);
each user opens `/ws/notifications/?format=json` with `Authorization: Bearer <token>` (spread
over the daphne instances, and resuming after 0 like the page does); comments posted through
the JSON API each mention `--notif-mentions` random users. Every frame is checked per user:
received once, in strictly increasing seq, none missing; and at the end each user's frames are
compared with the database (their newest seq and how many notifications they have). Latency is
from the moment the comment was posted to the moment its notification frame arrived, and
also from the notification's `created_at` (set in the post's transaction, just before commit).
"""
from __future__ import annotations

import json
import random
import secrets
import subprocess
import time
from array import array
from typing import TYPE_CHECKING, Any

from bench import loadgen, report
from bench.servers import HOST, PYTHON, ROOT

if TYPE_CHECKING:
    from bench.run import Bench


def notif_db(command: str, *, env: dict[str, str], prefix: str, users: int = 0) -> dict[str, Any]:
    """Run bench/notif_db.py against the system's database; return what it printed."""
    completed = subprocess.run(
        [PYTHON, "bench/notif_db.py", command, "--prefix", prefix, "--users", str(users)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"notif_db {command} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout)


def mention_body(names: list[str], index: int) -> str:
    return " ".join(f"@{name}" for name in names) + f" notification load {index}"


async def run_notifications(bench: Bench) -> dict[str, Any]:
    args = bench.args
    system = bench.system
    prefix = f"nb{secrets.token_hex(2)}u"
    started_setup = time.monotonic()
    people = notif_db("setup", env=system.env, prefix=prefix, users=args.notif_users)["users"]
    setup_seconds = round(time.monotonic() - started_setup, 1)
    bench.log(f"notifications: {len(people):,} users and tokens created in {setup_seconds} s")

    ports = [s.port for s in system.stack.servers]
    urls = [f"ws://{HOST}:{ports[i % len(ports)]}/ws/notifications/?format=json" for i in range(len(people))]
    tokens = [(pk, secret) for pk, _, secret in people]
    hello = json.dumps({"type": "resume", "after": 0}).encode()  # new users: nothing to replay yet
    connect = await bench.workers.connect(
        urls, hello=hello, concurrency=args.notif_connect_concurrency, timeout=60, tokens=tokens
    )
    bench.log(f"notifications: sockets {connect}")
    connect_settle = await bench.quiet("connecting the notification sockets")
    await bench.workers.take()  # nothing expected yet; start from empty records

    rng = random.Random(args.notif_seed)
    names = [username for _, username, _ in people]
    ids_by_name = {username: pk for pk, username, _ in people}
    mentions: dict[int, list[str]] = {}

    def body(index: int) -> str:
        mentions[index] = rng.sample(names, min(args.notif_mentions, len(names)))
        return mention_body(mentions[index], index)

    posts = round(args.notif_rate * args.notif_seconds)
    poster = loadgen.Poster(
        bases=[(HOST, port) for port in ports], path="/api/feeds/demo/comments/",
        connections=args.post_connections, numbering=None, body=body,
    )
    bench.log(f"notifications: {posts} comments at {args.notif_rate}/s, {args.notif_mentions} mentions each, "
              f"to {connect['connected']:,} sockets")
    cpu_before = bench.cpu_snapshot()
    started = time.monotonic()
    profile = bench.start_profile("notifications") if args.py_spy else None
    posted = await poster.run(count=posts, rate=args.notif_rate, max_seconds=args.post_max)
    await poster.close()
    expected_by_user: dict[int, int] = {}
    for index in poster.posted.values():
        for name in mentions[index]:
            expected_by_user[ids_by_name[name]] = expected_by_user.get(ids_by_name[name], 0) + 1
    await bench.drain(sum(expected_by_user.values()))
    seconds = time.monotonic() - started
    usage = bench.cpu_usage(cpu_before, seconds)
    taken = await bench.workers.take()
    profile_summary = bench.stop_profile(profile) if profile else None
    settle = await bench.quiet("notifications")
    late = await bench.workers.take()
    database = {int(pk): tuple(v) for pk, v in notif_db("check", env=system.env, prefix=prefix)["users"].items()}
    await bench.workers.close()

    stats = notification_stats(
        in_time=taken["connections"], late=late["connections"], sent=poster.sent, database=database,
        expected_by_user=expected_by_user, wall_minus_monotonic=time.time() - time.monotonic(),
    )
    generator = {k: v for k, v in usage["cpu_percent_per_process"].items() if k.startswith("generator")}
    result: dict[str, Any] = {
        **stats, **usage,
        "users": len(people), "setup_seconds": setup_seconds, "connect": connect, "connect_settle": connect_settle,
        "mentions_per_comment": args.notif_mentions, "offered_rate": args.notif_rate, "posts": posted,
        "post_rate": round(posted["posted"] / posted["seconds"], 1) if posted["seconds"] else None,
        "seconds": round(seconds, 3),
        # Load-independent-ish: the servers' CPU time per posted comment (its 10 notifications included).
        "server_cpu_ms_per_comment": round(10 * usage["cpu_percent"]["servers"] * seconds / posted["posted"], 1)
        if posted["posted"] else None,
        "readers_dropped": taken["dropped"], "close_codes": taken["close_codes"], "settle": settle,
        # One generator process at 90 % of a core or more: the generator, not the servers, may be the limit.
        "generator_saturated": any(v >= 90 for v in generator.values()),
        "load_average_at_start": bench.load_at_start,
    }
    if profile_summary is not None:
        result["profile"] = profile_summary
    return result


def notification_stats(
    *, in_time: list[tuple], late: list[tuple], sent: dict[int, float], database: dict[int, tuple[int, int]],
    expected_by_user: dict[int, int], wall_minus_monotonic: float,
) -> dict[str, Any]:
    """Check every socket's notification frames against the database; return counts and latencies.

    Per user (socket): `duplicated` frames of a seq already received, `out_of_order` frames of a
    lower seq than one received before, `lost` notifications in the database with no frame
    (those that came after the drain are counted in `late`, and only those never received in
    `never`). A socket matches the database when its highest seq is the user's newest seq and it
    received exactly as many distinct seqs as the user has notifications (so 1..N, none missing).
    """
    late_by_user = {item[3]: item for item in late}
    received = duplicated = out_of_order = lost = never = late_count = 0
    matching = 0
    latencies: list[float] = []
    from_created: list[float] = []
    users_seen: set[int] = set()
    for seq_bytes, time_bytes, comment_bytes, user_id, created_bytes in in_time:
        users_seen.add(user_id)
        seqs, times, comment_seqs = array("q", seq_bytes), array("d", time_bytes), array("q", comment_bytes)
        seen: set[int] = set()
        highest = 0
        for seq, at, comment_seq, created in zip(seqs, times, comment_seqs, array("d", created_bytes)):
            if seq in seen:
                duplicated += 1
                continue
            if seq < highest:
                out_of_order += 1
            seen.add(seq)
            received += 1
            highest = max(highest, seq)
            if comment_seq in sent:
                latencies.append(at - sent[comment_seq])
            from_created.append(at + wall_minus_monotonic - created)
        last_seq, count = database.get(user_id, (0, 0))
        lost += count - len(seen)
        later = late_by_user.get(user_id)
        if later is not None:
            extra = set(array("q", later[0])) - seen
            late_count += len(extra)
            seen |= extra
            duplicated += len(array("q", later[0])) - len(extra)
        never += count - len(seen)
        matching += highest == last_seq and len(seen) == count
    # Users whose socket never opened: all their notifications are lost.
    unconnected = [pk for pk in database if pk not in users_seen]
    for pk in unconnected:
        lost += database[pk][1]
        never += database[pk][1]
    latencies.sort()
    from_created.sort()
    db_total = sum(count for _, count in database.values())
    return {
        "connections": len(in_time),
        "expected": db_total,
        "expected_by_generator": sum(expected_by_user.values()),
        "database_matches_generator": all(database.get(pk, (0, 0))[1] == n for pk, n in expected_by_user.items())
        and db_total == sum(expected_by_user.values()),
        "database_gap_free": all(last == count for last, count in database.values()),
        "received": received,
        "lost": lost,
        "duplicated": duplicated,
        "out_of_order": out_of_order,
        "after_drain": {"late": late_count, "never": never},
        "sockets_matching_database": matching,
        "sockets_unconnected": len(unconnected),
        "latency_ms": _percentiles(latencies),
        "latency_from_created_ms": _percentiles(from_created),
    }


def _percentiles(ordered: list[float]) -> dict[str, float | None]:
    return {
        name: None if value is None else round(value * 1000, 1)
        for name, value in (
            ("p50", report.percentile(ordered, 0.50)),
            ("p90", report.percentile(ordered, 0.90)),
            ("p99", report.percentile(ordered, 0.99)),
            ("max", ordered[-1] if ordered else None),
        )
    }
