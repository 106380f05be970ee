"""Least-privilege roles: the worker (sends, consumes both queues, reads and writes the bucket),
the web process (reads the bucket) and, when deployed, the Lambda function (the worker's rights
on one SQS batch at a time).

Sending is allowed only as our identity and through our configuration set; with
``sending_source_ips`` only from those addresses too (``aws:SourceIp``). With
``blobs.s3_kms_key_id`` the roles may use that key alone: the worker (and the Lambda) to write
and read (kms:GenerateDataKey, kms:Decrypt), the web process to read (kms:Decrypt).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_s3 as s3

if TYPE_CHECKING:
    from waypost_stack.stack import WaypostStack

# SES actions that have no resource type: reading the quota, the account-level suppression list
ACCOUNT_ACTIONS = ("ses:GetAccount", "ses:GetSendQuota", "ses:ListSuppressedDestinations",
                   "ses:GetSuppressedDestination", "ses:PutSuppressedDestination",
                   "ses:DeleteSuppressedDestination")
CONSUME_ACTIONS = ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
                   "sqs:GetQueueAttributes", "sqs:GetQueueUrl")


def add_roles(stack: WaypostStack) -> None:
    hosts = iam.CompositePrincipal(iam.ServicePrincipal("ec2.amazonaws.com"),
                                   iam.ServicePrincipal("ecs-tasks.amazonaws.com"))
    worker = iam.Role(stack, "WorkerRole", assumed_by=hosts,
                      description="waypost worker: send as the identity, consume the queues, use the bucket")
    _grant_worker(stack, worker)
    web = iam.Role(stack, "WebRole", assumed_by=hosts, description="waypost web: read photos from the bucket")
    web.add_to_policy(iam.PolicyStatement(actions=["s3:GetObject"], resources=[stack.bucket.arn_for_objects("*")]))
    web.add_to_policy(iam.PolicyStatement(actions=["s3:ListBucket"], resources=[stack.bucket.bucket_arn]))
    _grant_key(stack, web, ["kms:Decrypt"])
    cdk.CfnOutput(stack, "WorkerRoleArn", value=worker.role_arn, description="role of `waypost worker`")
    cdk.CfnOutput(stack, "WebRoleArn", value=web.role_arn, description="role of `waypost serve`")
    if stack.params.lambda_code is not None:
        _lambda(stack)


def _grant_worker(stack: WaypostStack, role: iam.IRole) -> None:
    source_ips = stack.params.sending_source_ips
    role.add_to_principal_policy(iam.PolicyStatement(
        sid="SendAsOurIdentity", actions=["ses:SendEmail", "ses:SendRawEmail"],
        resources=[stack.identity_arn(), stack.configuration_set_arn()],
        conditions={"IpAddress": {"aws:SourceIp": list(source_ips)}} if source_ips else None))
    role.add_to_principal_policy(iam.PolicyStatement(sid="SesAccount", actions=list(ACCOUNT_ACTIONS),
                                                     resources=["*"]))
    role.add_to_principal_policy(iam.PolicyStatement(
        sid="ConsumeQueues", actions=list(CONSUME_ACTIONS),
        resources=[stack.ingress_queue.queue_arn, stack.feedback_queue.queue_arn]))
    role.add_to_principal_policy(iam.PolicyStatement(
        sid="Blobs", actions=["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
        resources=[stack.bucket.arn_for_objects("*")]))
    role.add_to_principal_policy(iam.PolicyStatement(sid="ListBlobs", actions=["s3:ListBucket"],
                                                     resources=[stack.bucket.bucket_arn]))
    _grant_key(stack, role, ["kms:Decrypt", "kms:GenerateDataKey"])


def _grant_key(stack: WaypostStack, role: iam.IRole, actions: list[str]) -> None:
    """SSE-KMS blobs: S3 asks KMS for a data key on a write and decrypts it on a read, as the caller."""
    key = stack.kms_key_arn()
    if key is not None:
        role.add_to_principal_policy(iam.PolicyStatement(sid="BlobKey", actions=actions, resources=[key]))


def _lambda(stack: WaypostStack) -> None:
    code = stack.params.lambda_code
    assert code is not None
    function = lambda_.Function(
        stack, "Function", runtime=lambda_.Runtime.PYTHON_3_11, handler=code.handler,
        code=lambda_.Code.from_bucket(s3.Bucket.from_bucket_name(stack, "CodeBucket", code.bucket), code.key),
        timeout=cdk.Duration.seconds(60), memory_size=1024,
        # what the stack knows; the secrets (database URL, secret keys, blobs.s3_name_key) are
        # added to the function's configuration by the operator (docs/deploy-aws.md, "Lambda")
        environment={"WAYPOST_DATA_DIR": "/tmp/waypost", "WAYPOST_MAIL_DOMAIN": stack.params.mail_domain,
                     "WAYPOST_SES__REGION": stack.region,
                     "WAYPOST_SES__CONFIGURATION_SET": stack.params.configuration_set,
                     "WAYPOST_SES_INGRESS__SQS_QUEUE_URL": stack.ingress_queue.queue_url,
                     "WAYPOST_FEEDBACK__SQS_QUEUE_URL": stack.feedback_queue.queue_url,
                     "WAYPOST_BLOBS__BACKEND": "s3", "WAYPOST_BLOBS__S3_BUCKET": stack.bucket.bucket_name})
    assert function.role is not None
    _grant_worker(stack, function.role)
    for queue in (stack.ingress_queue, stack.feedback_queue):
        function.add_event_source(sources.SqsEventSource(queue, batch_size=10, report_batch_item_failures=True))
