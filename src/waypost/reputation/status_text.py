"""`waypost status`: the snapshot as one screen of text."""

from __future__ import annotations

from collections.abc import Iterator

from waypost.config import GuardSettings
from waypost.outbound import control
from waypost.reputation.alarms import Alarm
from waypost.reputation.status import Snapshot
from waypost.store.models import InboundStatus, OutboundState

# in the order a message usually moves through them (paused beside the two it sits between)
STATES = (OutboundState.QUEUED, OutboundState.SENDING, OutboundState.PAUSED, OutboundState.SENT,
          OutboundState.FAILED, OutboundState.SUPPRESSED)


def render_status(snap: Snapshot, alarms: list[Alarm], guard: GuardSettings, *, transport: str) -> Iterator[str]:
    q = snap.queue
    kinds = sorted({kind for kind, _ in q.counts})
    yield f"Waypost status at {snap.at:%Y-%m-%d %H:%M:%S}Z"
    yield ""
    yield "queues"
    for kind in kinds:
        states = ", ".join(f"{state} {n}" for (k, state), n in sorted(q.counts.items()) if k == kind)
        yield f"  {kind:10} {states}"
    oldest = f", oldest waiting {q.oldest_due_seconds:.0f}s" if q.oldest_due_seconds is not None else ""
    yield f"  due now    {q.due}{oldest}; dead letters {q.dead}"
    received = sum(n for n in snap.inbound_last_day.values())
    refused = ", ".join(f"{code} {n}" for (status, code), n in sorted(snap.inbound_last_day.items())
                        if status == InboundStatus.REFUSED)
    yield f"  inbound    {received} in 24 hours" + (f"; refused: {refused}" if refused else "")
    yield ""
    yield f"sending      via {transport}"
    for pause in snap.pauses:
        scope = "all sending" if pause.scope == control.ALL else f"stream {pause.scope}"
        yield f"  PAUSED     {scope} since {pause.paused_at:%Y-%m-%d %H:%M}Z by {pause.paused_by}: {pause.reason}"
    if not snap.pauses:
        yield "  active"
    day = f" of {snap.limits.per_day}" if snap.limits.per_day else ""
    yield f"  limits     {snap.limits.describe()}"
    yield f"  used       {snap.used_last_second} in the last second, {snap.used_last_day}{day} in 24 hours"
    yield "  messages   " + ", ".join(f"{s} {snap.outbound.get(s, 0)}" for s in STATES) + (
        f" ({snap.unconfirmed} unconfirmed)" if snap.unconfirmed else "")
    yield ""
    yield (f"reputation   warn at {guard.bounce_warn:.1%} bounces / {guard.complaint_warn:.1%} complaints, "
           f"pause at {guard.bounce_pause:.1%} / {guard.complaint_pause:.1%}; judged from {guard.min_sends} sends")
    for w in snap.assessment.windows:
        where = "all" if w.stream is None else w.stream
        note = "" if w.judged else "  (too few sends to judge)"
        yield (f"  {where:9} {w.name:17} sends {w.sends:>6}  bounces {w.bounces:>4} ({w.bounce_rate:6.2%})  "
               f"complaints {w.complaints:>4} ({w.complaint_rate:6.2%}){note}")
    suppressed = ", ".join(f"{r.lower()} {n}" for r, n in sorted(snap.suppressions.items())) or "none"
    yield f"  suppressed {suppressed}"
    feedback = ", ".join(f"{k} {n}" for k, n in sorted(snap.feedback_last_day.items())) or "none"
    yield f"  feedback   last 24 hours: {feedback}; waiting for review {snap.review}; unreadable {snap.unreadable}"
    yield ""
    firing = [a for a in alarms if a.firing]
    yield f"alarms       {len(firing)} firing" if firing else "alarms       none firing"
    for alarm in firing:
        yield f"  {alarm.name}: {alarm.detail}"
        yield f"    {alarm.advice}"
