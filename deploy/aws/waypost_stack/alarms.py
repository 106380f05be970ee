"""CloudWatch alarms at the reference thresholds, each telling the operator's SNS topic when it
fires and when it clears.

Queues: a dead-letter queue holding more than 50 messages; an oldest message older than
3 minutes; more than 180 messages waiting for 5 minutes on end. SES reputation (REFERENCE-SES
§4): a bounce rate of 5 % or a complaint rate of 0.1 %, where SES puts an account under review.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_sqs as sqs

if TYPE_CHECKING:
    from waypost_stack.stack import WaypostStack

DEAD_LETTERS_ABOVE = 50
OLDEST_SECONDS_ABOVE = 180
BACKLOG_ABOVE = 180
BACKLOG_MINUTES = 5
BOUNCE_RATE_AT = 0.05
COMPLAINT_RATE_AT = 0.001
MINUTE = cdk.Duration.minutes(1)
GREATER = cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD
AT_LEAST = cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD


def add_alarms(stack: WaypostStack) -> list[cloudwatch.Alarm]:
    alarms = []
    for name, queue, dead in (("Ingress", stack.ingress_queue, stack.ingress_dlq),
                              ("Feedback", stack.feedback_queue, stack.feedback_dlq)):
        alarms += _queue_alarms(stack, name, queue, dead)
    alarms += _reputation_alarms(stack)
    notify = actions.SnsAction(stack.operator_topic)
    for alarm in alarms:
        alarm.add_alarm_action(notify)
        alarm.add_ok_action(notify)
    return alarms


def _queue_alarms(stack: WaypostStack, name: str, queue: sqs.Queue, dead: sqs.Queue) -> list[cloudwatch.Alarm]:
    return [
        dead.metric_approximate_number_of_messages_visible(period=MINUTE, statistic="Maximum").create_alarm(
            stack, f"{name}DeadLettersAlarm", threshold=DEAD_LETTERS_ABOVE, comparison_operator=GREATER,
            evaluation_periods=1, treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=f"more than {DEAD_LETTERS_ABOVE} messages in the {name.lower()} dead-letter queue: "
                              "see docs/deploy-aws.md, \"Alarms\""),
        queue.metric_approximate_age_of_oldest_message(period=MINUTE, statistic="Maximum").create_alarm(
            stack, f"{name}OldestMessageAlarm", threshold=OLDEST_SECONDS_ABOVE, comparison_operator=GREATER,
            evaluation_periods=1, treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=f"a message has waited over {OLDEST_SECONDS_ABOVE} s in the {name.lower()} queue: "
                              "are the workers running?"),
        queue.metric_approximate_number_of_messages_visible(period=MINUTE, statistic="Minimum").create_alarm(
            stack, f"{name}BacklogAlarm", threshold=BACKLOG_ABOVE, comparison_operator=GREATER,
            evaluation_periods=BACKLOG_MINUTES, datapoints_to_alarm=BACKLOG_MINUTES,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=f"more than {BACKLOG_ABOVE} messages in the {name.lower()} queue for "
                              f"{BACKLOG_MINUTES} minutes: add workers"),
    ]


def _reputation_alarms(stack: WaypostStack) -> list[cloudwatch.Alarm]:
    found = []
    for metric, threshold, what in (("Reputation.BounceRate", BOUNCE_RATE_AT, "bounce rate"),
                                    ("Reputation.ComplaintRate", COMPLAINT_RATE_AT, "complaint rate")):
        rate = cloudwatch.Metric(namespace="AWS/SES", metric_name=metric, statistic="Maximum",
                                 period=cdk.Duration.minutes(15))
        found.append(rate.create_alarm(
            stack, metric.replace(".", "") + "Alarm", threshold=threshold, comparison_operator=AT_LEAST,
            evaluation_periods=1, treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=f"SES {what} at {threshold:.1%} or more: SES reviews the account at this rate "
                              "(waypost status, docs/feedback.md)"))
    return found
