"""Delivery statistics, the summary table and the chart of a benchmark run."""
from __future__ import annotations

import math
from array import array
from pathlib import Path
from typing import Any


def percentile(ordered: list[float], fraction: float) -> float | None:
    """Return the nearest-rank percentile of an ascending list (None when empty)."""
    if not ordered:
        return None
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def delivery_stats(
    *, connections: list[tuple[bytes, bytes]], sent: dict[int, float], first_send: float
) -> dict[str, Any]:
    """Check every connection's frames against the posted seqs; return counts and latencies.

    Frames of seqs not posted in this phase (late ones from an earlier phase: seqs are unique
    for the whole run) are counted as stale and otherwise ignored.
    """
    expected_seqs = set(sent)
    received = duplicated = out_of_order = lost = stale = 0
    latencies: list[float] = []
    last_receive = first_send
    complete_connections = 0
    for seq_bytes, time_bytes in connections:
        seqs, times = array("q"), array("d")
        seqs.frombytes(seq_bytes)
        times.frombytes(time_bytes)
        seen: set[int] = set()
        highest = -1
        for seq, at in zip(seqs, times):
            if seq not in expected_seqs:
                stale += 1
                continue
            if seq in seen:
                duplicated += 1
                continue
            seen.add(seq)
            received += 1
            if seq < highest:
                out_of_order += 1
            highest = max(highest, seq)
            latencies.append(at - sent[seq])
            last_receive = max(last_receive, at)
        missing = len(expected_seqs) - len(seen)
        lost += missing
        complete_connections += missing == 0
    latencies.sort()
    window = last_receive - first_send
    return {
        "connections": len(connections),
        "expected": len(expected_seqs) * len(connections),
        "received": received,
        "lost": lost,
        "duplicated": duplicated,
        "out_of_order": out_of_order,
        "stale": stale,
        "complete_connections": complete_connections,
        "window_s": round(window, 3),
        "deliveries_per_s": round(received / window, 1) if window > 0 else None,
        "latency_ms": {
            name: None if value is None else round(value * 1000, 1)
            for name, value in (
                ("p50", percentile(latencies, 0.50)),
                ("p90", percentile(latencies, 0.90)),
                ("p99", percentile(latencies, 0.99)),
                ("max", latencies[-1] if latencies else None),
            )
        },
    }


def late_stats(
    *, in_time: list[tuple[bytes, bytes]], late: list[tuple[bytes, bytes]], sent: dict[int, float], first_send: float
) -> dict[str, Any]:
    """Return what became of a phase's lost frames once the servers went quiet after the drain.

    `in_time` are the frames counted in the phase, `late` those that arrived afterwards, per
    connection in the same order. `late` counts frames of the phase that arrived after the
    drain stopped, `never` the phase's frames still missing when the servers went quiet, and
    `stale` the frames of earlier phases that arrived meanwhile.
    """
    if len(in_time) != len(late):
        raise ValueError(f"{len(in_time)} connections in the phase, {len(late)} after it")
    combined = [(seqs + late_seqs, times + late_times) for (seqs, times), (late_seqs, late_times) in zip(in_time, late)]
    before = delivery_stats(connections=in_time, sent=sent, first_send=first_send)
    after = delivery_stats(connections=combined, sent=sent, first_send=first_send)
    late_latencies = sorted(
        at - sent[seq]
        for seq_bytes, time_bytes in late
        for seq, at in zip(array("q", seq_bytes), array("d", time_bytes))
        if seq in sent
    )
    return {
        "late": after["received"] - before["received"],
        "never": after["lost"],
        "stale": after["stale"] - before["stale"],
        "duplicated": after["duplicated"] - before["duplicated"],
        "late_latency_max_ms": round(late_latencies[-1] * 1000, 1) if late_latencies else None,
    }


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        value = f"{value:,.1f}" if value < 100 else f"{value:,.0f}"
    elif isinstance(value, int):
        value = f"{value:,}"
    return f"{value}{unit}"


def summary_rows(result: dict[str, Any]) -> list[tuple[str, ...]]:
    """Return the table of the run: one row per figure, one column per system."""
    systems = list(result["systems"])
    rows: list[tuple[str, ...]] = [("", *(result["systems"][name]["label"] for name in systems))]

    def row(label: str, getter: Any, unit: str = "") -> None:
        values = []
        for name in systems:
            try:
                values.append(_fmt(getter(result["systems"][name]["phases"]), unit))
            except (KeyError, TypeError):
                values.append("–")
        rows.append((label, *values))

    row("keep-up: delivered / expected", lambda p: f"{p['keep_up']['received']:,} / {p['keep_up']['expected']:,}")
    row("keep-up: lost / duplicated / out of order",
        lambda p: f"{p['keep_up']['lost']:,} / {p['keep_up']['duplicated']:,} / {p['keep_up']['out_of_order']:,}")
    row("keep-up: lost frames that came later / never", lambda p: _late(p["keep_up"]))
    row("keep-up: latency p50", lambda p: p["keep_up"]["latency_ms"]["p50"], " ms")
    row("keep-up: latency p99", lambda p: p["keep_up"]["latency_ms"]["p99"], " ms")
    row("keep-up: latency max", lambda p: p["keep_up"]["latency_ms"]["max"], " ms")
    row("full speed: deliveries/s", lambda p: p["full_speed"]["deliveries_per_s"])
    row("full speed: lost / duplicated / out of order",
        lambda p: f"{p['full_speed']['lost']:,} / {p['full_speed']['duplicated']:,} / {p['full_speed']['out_of_order']:,}")
    row("full speed: lost frames that came later / never", lambda p: _late(p["full_speed"]))
    row("full speed: stale frames (of earlier phases)", lambda p: p["full_speed"]["stale"])
    row("full speed: latency p99", lambda p: p["full_speed"]["latency_ms"]["p99"], " ms")
    row("full speed: server CPU", lambda p: p["full_speed"]["cpu_percent"]["servers"], " %")
    row("full speed: generator CPU", lambda p: p["full_speed"]["cpu_percent"]["generator"], " %")
    row("full speed: other processes' CPU", lambda p: p["full_speed"]["cpu_percent"]["other_processes"], " %")
    row("full speed: posts/s (response p50)",
        lambda p: f"{p['full_speed']['post_rate']} ({p['full_speed']['posts']['response_ms']['p50']} ms)")
    row("memory: RSS per idle connection", lambda p: p["memory"]["kb_per_connection"], " KB")
    row("storm: failed handshakes", lambda p: p["storm"]["connect"]["failed"])
    row("storm: handshakes/s", lambda p: p["storm"]["connect"]["per_s"])
    row("storm: group members left", lambda p: p["storm"]["members_left"])
    row("storm: presence frames at the readers", lambda p: p["storm"].get("presence_frames"))
    row("storm: readers afterwards receive", lambda p: "yes" if p["storm"]["after"]["lost"] == 0 else
        f"no ({p['storm']['after']['lost']:,} lost)")
    row("notifications: sockets / comments/s × mentions",
        lambda p: f"{p['notifications']['connections']:,} / {p['notifications']['offered_rate']:g} × "
                  f"{p['notifications']['mentions_per_comment']}")
    row("notifications: delivered / in the database",
        lambda p: f"{p['notifications']['received']:,} / {p['notifications']['expected']:,}")
    row("notifications: lost / duplicated / out of order",
        lambda p: f"{p['notifications']['lost']:,} / {p['notifications']['duplicated']:,} / "
                  f"{p['notifications']['out_of_order']:,}")
    row("notifications: sockets matching the database (last seq, count)",
        lambda p: f"{p['notifications']['sockets_matching_database']:,} / {p['notifications']['connections']:,}")
    row("notifications: latency p50", lambda p: p["notifications"]["latency_ms"]["p50"], " ms")
    row("notifications: latency p99", lambda p: p["notifications"]["latency_ms"]["p99"], " ms")
    row("notifications: latency max", lambda p: p["notifications"]["latency_ms"]["max"], " ms")
    row("notifications: from created_at p50 / p99",
        lambda p: f"{_fmt(p['notifications']['latency_from_created_ms']['p50'])} / "
                  f"{_fmt(p['notifications']['latency_from_created_ms']['p99'])} ms")
    row("notifications: server CPU (per comment)",
        lambda p: f"{_fmt(p['notifications']['cpu_percent']['servers'])} % "
                  f"({_fmt(p['notifications']['server_cpu_ms_per_comment'])} ms)")
    row("notifications: generator CPU (busiest process)",
        lambda p: f"{p['notifications']['cpu_percent']['generator']} % "
                  f"({max(v for k, v in p['notifications']['cpu_percent_per_process'].items() if k.startswith('generator'))} %)")
    row("notifications: other processes' CPU", lambda p: p["notifications"]["cpu_percent"]["other_processes"], " %")
    row("notifications: posts/s (response p50)",
        lambda p: f"{p['notifications']['post_rate']} ({p['notifications']['posts']['response_ms']['p50']} ms)")
    return rows


def _late(phase: dict[str, Any]) -> str:
    after = phase["after_drain"]
    return f"{after['late']:,} / {after['never']:,}"


def machine_line(result: dict[str, Any]) -> str:
    """Return one line on the machine of the run: cores and load averages (1, 5, 15 min) at start and end."""
    config = result["config"]

    def load(key: str) -> str:
        values = config.get(key)
        return " / ".join(f"{v:.2f}" for v in values) if values else "–"

    line = (f"{config['cpu_count']} cores, started {result['started_at']}; load average (1 / 5 / 15 min) "
            f"at start {load('load_average_at_start')}, at end {load('load_average_at_end')}")
    merged = result.get("merged_from")
    if merged:
        earlier = merged.get("config") or {}
        at_start = " / ".join(f"{v:.2f}" for v in earlier.get("load_average_at_start") or [])
        line += (f". Kept from the run started {merged['started_at']} (load average at start {at_start or '–'}): "
                 + ", ".join(merged["phases"]))
    return line


def markdown_table(rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def write_chart(result: dict[str, Any], path: Path) -> None:
    """Draw deliveries/s, keep-up latency, memory per connection and storm handshakes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = list(result["systems"])
    labels = [result["systems"][name]["label"] for name in systems]
    colours = ["#2b6cb0", "#c05621", "#2f855a", "#6b46c1"][: len(systems)]
    phases = [result["systems"][name]["phases"] for name in systems]

    def values(getter: Any) -> list[float]:
        out = []
        for p in phases:
            try:
                out.append(float(getter(p) or 0))
            except (KeyError, TypeError):
                out.append(0.0)
        return out

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    config = result["config"]
    load = config.get("load_average_at_start") or [None]
    fig.suptitle(
        f"Live feed load benchmark — {config['servers']} daphne, {config['cpu_count']} cores "
        f"({result['started_at'][:16]} UTC, load average {load[0]} at start)"
    )

    ax = axes[0][0]
    bars = ax.bar(labels, values(lambda p: p["full_speed"]["deliveries_per_s"]), color=colours)
    ax.bar_label(bars, fmt="{:,.0f}")
    ax.set_ylim(top=max(values(lambda p: p["full_speed"]["deliveries_per_s"]) + [1]) * 1.15)
    ax.set_title(f"Full speed: deliveries/s, {config['readers']:,} readers (higher is better)")

    ax = axes[0][1]
    width = 0.8 / max(1, len(systems))
    for index, (label, p) in enumerate(zip(labels, phases)):
        latency = p.get("keep_up", {}).get("latency_ms", {})
        xs = [i + index * width for i in range(4)]
        ys = [latency.get(k) or 0 for k in ("p50", "p90", "p99", "max")]
        ax.bar(xs, ys, width=width, label=label, color=colours[index])
    ax.set_xticks([i + width * (len(systems) - 1) / 2 for i in range(4)], ["p50", "p90", "p99", "max"])
    if any(p.get("keep_up", {}).get("latency_ms", {}).get("p50") for p in phases):
        ax.set_yscale("log")
        ax.set_ylim(bottom=1)
    ax.axhline(250, color="grey", linestyle="--", linewidth=1)
    ax.set_title(f"Keep-up ({config['keep_up_rate']}/s): latency ms, log scale (target p99 ≤ 250)")
    ax.legend(loc="upper left")

    ax = axes[1][0]
    bars = ax.bar(labels, values(lambda p: p["memory"]["kb_per_connection"]), color=colours)
    ax.bar_label(bars, fmt="{:,.1f}")
    ax.set_ylim(top=max(values(lambda p: p["memory"]["kb_per_connection"]) + [35]) * 1.2)
    ax.axhline(35, color="grey", linestyle="--", linewidth=1)
    ax.set_title("Server RSS per idle connection, KB (target ≤ 35)")

    ax = axes[1][1]
    connected = values(lambda p: p["storm"]["connect"]["connected"])
    failed = values(lambda p: p["storm"]["connect"]["failed"])
    ax.bar(labels, connected, color="#2f855a", label="connected")
    bars = ax.bar(labels, failed, bottom=connected, color="#c53030", label="failed")
    left = values(lambda p: p["storm"]["members_left"])
    ax.bar_label(bars, labels=[f"{int(f):,} failed\n{int(m):,} left in groups" for f, m in zip(failed, left)])
    ax.set_ylim(top=max(config["storm_readers"], 1) * 1.25)
    ax.set_title(f"Storm: {config['storm_readers']:,} handshakes at once, then disconnects")
    ax.legend(loc="lower right")

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
