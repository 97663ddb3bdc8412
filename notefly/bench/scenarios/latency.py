"""3. Latency: single-recipient messages at half of the maximum ingest rate measured in
scenario 1; publish-to-provider time per message, from the client's send time to the
delivery's ``sent_at`` (when the provider took it). Same clock: same machine.

The messages go round-robin to ``RECIPIENTS`` categories of one subscriber each.
Not all to one user: a user's deliveries are sent one at a time, in order, so a single
recipient at hundreds of messages a second measures that user's queue, not latency.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from notefly.bench import loadgen, seed
from notefly.bench.deliverylog import wait_done
from notefly.bench.harness import Bench, Result, notefly
from notefly.bench.report import Row, Target, number
from notefly.bench.stats import Latency, percentile

SCENARIO = "3 latency"
RECIPIENTS = 32
P99 = ("publish-to-provider p99", Target("<", 50, "ms"))
CHECKS = (P99,)
FALLBACK_RATE = 200.0  # when scenario 1 measured nothing
WARMUP_SECONDS = 1.0
DRAIN_SECONDS = 60


def _category(i: int) -> str:
    return f"bench-latency-{i % RECIPIENTS:02d}"


def _seed(db: Path) -> None:
    for k in range(RECIPIENTS):
        seed.seed_subscribers(db, _category(k), 1, seed.one_channel, prefix=f"lat{k:02d}-")


def _body(i: int) -> bytes:
    return json.dumps(
        {"category": _category(i), "title": "Ping", "body": f"Latency probe {i}"}
    ).encode()


async def run(bench: Bench) -> Result:
    measured = bench.shared.get("ingest_rate")
    rate = measured / 2 if measured else FALLBACK_RATE
    why = "half of the maximum ingest rate" if measured else "no ingest rate measured"
    count = max(1, round(rate * bench.sizes.latency_seconds))
    async with notefly(bench, "latency", _seed) as node:
        warmup = max(1, round(rate * WARMUP_SECONDS))
        await loadgen.paced(node.url, "/pub", rate=rate, count=warmup, body=_body)
        answers = await loadgen.paced(node.url, "/pub", rate=rate, count=count, body=_body)
        done, _ = await wait_done(node.log, DRAIN_SECONDS, 0.2, expect_messages=0)
        timeline = node.log.timeline()
    accepted = {json.loads(a.body)["id"]: a for a in answers if a.status == 202}
    refused = len(answers) - len(accepted)
    latencies = [
        timeline[mid][2].timestamp() - a.sent_wall for mid, a in accepted.items() if mid in timeline
    ]
    result = Result(
        raw={
            "rate": rate,
            "rate_basis": why,
            "messages": count,
            "refused": refused,
            "drained": done,
        }
    )
    if not latencies:
        result.rows.append(
            Row(SCENARIO, P99[0], None, target=P99[1], reason="no delivery was sent")
        )
        return result
    provider = Latency.of_seconds(latencies)
    publish = Latency.of_seconds([a.answered - a.sent for a in accepted.values()])
    late = percentile([max(0.0, a.sent - a.due) for a in answers], 99) * 1000
    achieved = len(answers) / (answers[-1].sent - answers[0].due) if len(answers) > 1 else rate
    stages = _stages(accepted, timeline)
    result.raw.update(
        provider_ms=asdict(provider),
        publish_ms=asdict(publish),
        client_late_p99_ms=late,
        achieved_rate=achieved,
        stages_ms={k: asdict(v) for k, v in stages.items()},
    )
    missing = len(accepted) - len(latencies)
    notes = [
        f"p50 {number(provider.p50)} ms",
        f"{number(rate)} msg/s ({why})",
        f"{number(len(latencies))} messages",
        f"202 p99 {number(publish.p99)} ms",
    ]
    if refused or missing:
        notes.append(f"{refused} refused, {missing} not sent")
    if late > 50:
        notes.append(f"client ran late: p99 {number(late)} ms")
    result.rows.append(Row(SCENARIO, P99[0], provider.p99, "ms", P99[1], detail="; ".join(notes)))
    result.rows.append(
        Row(
            SCENARIO,
            "where the time goes (p50 / p99)",
            None,
            detail=", ".join(
                f"{k} {number(v.p50)} / {number(v.p99)} ms" for k, v in stages.items()
            ),
        )
    )
    return result


def _stages(
    accepted: dict[str, loadgen.Sent], timeline: dict[str, tuple[datetime, datetime, datetime]]
) -> dict[str, Latency]:
    """Publish-to-provider in three parts: to the server's accept (HTTP, validation),
    from the accept to the delivery row (commit, category actor, fan-out page), and from
    there to the provider (shard, render, send)."""
    parts: dict[str, list[float]] = {
        "to accept": [],
        "accept to fan-out": [],
        "fan-out to provider": [],
    }
    for mid, answer in accepted.items():
        if mid in timeline:
            accepted_at, fanned_out, sent = timeline[mid]
            parts["to accept"].append(accepted_at.timestamp() - answer.sent_wall)
            parts["accept to fan-out"].append((fanned_out - accepted_at).total_seconds())
            parts["fan-out to provider"].append((sent - fanned_out).total_seconds())
    return {k: Latency.of_seconds(v) for k, v in parts.items() if v}
