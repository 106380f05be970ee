"""Prometheus metrics, read from one status snapshot at scrape time (several worker processes
share one database, so the database, not a process, holds the truth)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from waypost.config import AlarmSettings
from waypost.reputation.alarms import evaluate
from waypost.reputation.status import Snapshot


class SnapshotCollector(Collector):
    def __init__(self, read: Callable[[], Snapshot], alarms: AlarmSettings) -> None:
        self.read = read
        self.alarms = alarms

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snap = self.read()
        jobs = GaugeMetricFamily("waypost_jobs", "Jobs by kind and state (done jobs left out)",
                                 labels=["kind", "state"])
        for (kind, state), count in sorted(snap.queue.counts.items()):
            jobs.add_metric([kind, state], count)
        yield jobs
        yield GaugeMetricFamily("waypost_jobs_due", "Queued jobs due now", value=snap.queue.due)
        yield GaugeMetricFamily("waypost_oldest_due_job_seconds", "How long the longest-waiting due job has waited",
                                value=snap.queue.oldest_due_seconds or 0.0)
        outbound = GaugeMetricFamily("waypost_outbound_messages", "Outbound messages by state", labels=["state"])
        for state, count in sorted(snap.outbound.items()):
            outbound.add_metric([state], count)
        yield outbound
        paused = GaugeMetricFamily("waypost_sending_paused", "1 while a pause holds this scope", labels=["scope"])
        for pause in snap.pauses:
            paused.add_metric([pause.scope], 1)
        yield paused
        yield GaugeMetricFamily("waypost_sends_last_24h", "Messages handed over in the last 24 hours",
                                value=snap.used_last_day)
        if snap.limits.per_day:
            yield GaugeMetricFamily("waypost_send_quota_24h", "The 24-hour sending quota", value=snap.limits.per_day)
        yield GaugeMetricFamily("waypost_send_rate_limit", "Messages per second allowed", value=snap.limits.per_second)
        rates = GaugeMetricFamily("waypost_reputation_rate", "Bounce and complaint rates per window",
                                  labels=["metric", "window", "stream", "judged"])
        for w in snap.assessment.windows:
            labels = [w.name, w.stream or "all", "true" if w.judged else "false"]
            rates.add_metric(["bounce", *labels], w.bounce_rate)
            rates.add_metric(["complaint", *labels], w.complaint_rate)
        yield rates
        suppressed = GaugeMetricFamily("waypost_suppressed_addresses", "Suppressions in force", labels=["reason"])
        for reason, count in sorted(snap.suppressions.items()):
            suppressed.add_metric([reason], count)
        yield suppressed
        feedback = GaugeMetricFamily("waypost_feedback_events_24h", "Feedback applied in 24 hours", labels=["kind"])
        for kind, count in sorted(snap.feedback_last_day.items()):
            feedback.add_metric([kind], count)
        yield feedback
        inbound = GaugeMetricFamily("waypost_inbound_messages_24h", "Inbound mail in 24 hours by status, "
                                    "refusals by reason", labels=["status", "reason"])
        for (status, reason), count in sorted(snap.inbound_last_day.items()):
            inbound.add_metric([status, reason], count)
        yield inbound
        yield GaugeMetricFamily("waypost_feedback_review", "Feedback waiting for review (7 days)", value=snap.review)
        firing = GaugeMetricFamily("waypost_alarm_firing", "1 while the alarm fires", labels=["alarm"])
        value = GaugeMetricFamily("waypost_alarm_value", "The value each alarm compares", labels=["alarm"])
        for alarm in evaluate(snap, self.alarms):
            firing.add_metric([alarm.name], 1 if alarm.firing else 0)
            value.add_metric([alarm.name], alarm.value)
        yield firing
        yield value


def registry_for(read: Callable[[], Snapshot], alarms: AlarmSettings) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(read, alarms))
    return registry
