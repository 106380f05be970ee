"""The AWS side of Waypost as one CloudFormation stack.

Mail in:  SES receipt rule (TLS required, spam and virus scanning) → S3 object under
          ``ses-inbound/`` + SNS "Received" notification → ingress queue → workers / Lambda.
Mail out: workers → SES v2 SendEmail as the domain identity (Easy DKIM, custom MAIL FROM)
          with the configuration set, whose events go to SNS → feedback queue.
Around:   dead-letter queues with redrive, CloudWatch alarms to the operator's topic, and
          least-privilege roles for the worker, the web process and the Lambda function.
"""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_ses as ses
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from aws_cdk import custom_resources as cr
from constructs import Construct

from waypost_stack.alarms import add_alarms
from waypost_stack.parameters import MAX_RECEIVE_COUNT, RECEIPT_PREFIX, RELAY_FOLDER, StackParameters
from waypost_stack.roles import add_roles

# SES event types Waypost acts on (doctor.ses.REQUIRED_EVENTS, in CloudFormation's spelling)
EVENT_TYPES = ("bounce", "complaint", "delivery", "reject", "renderingFailure", "deliveryDelay", "subscription")
RECEIPT_RULE = "waypost-inbound"
# SQS redelivers a message this long after a receive that was not deleted: longer than a worker or
# the Lambda function (timeout 60 s; AWS advises six times it) takes for one batch
VISIBILITY_TIMEOUT = cdk.Duration.seconds(360)


class WaypostStack(cdk.Stack):
    def __init__(self, scope: Construct, params: StackParameters, **kwargs: Any) -> None:
        super().__init__(scope, params.stack_name, description=f"Waypost for {params.mail_domain}", **kwargs)
        self.params = params
        self.bucket = self._bucket()
        self.ingress_queue, self.ingress_dlq = self._queue("Ingress")
        self.feedback_queue, self.feedback_dlq = self._queue("Feedback")
        self.receipt_topic = self._topic("ReceiptTopic", "SES receipt notifications (mail received)",
                                         self.ingress_queue)
        self.feedback_topic = self._topic("FeedbackTopic", "SES sending events (bounces, complaints, ...)",
                                          self.feedback_queue)
        self.configuration_set = self._configuration_set()
        self.identity = self._identity()
        self._receiving()
        self.operator_topic = sns.Topic(self, "OperatorTopic", display_name="Waypost alarms")
        self.operator_topic.add_subscription(subscriptions.EmailSubscription(params.operator_email))
        add_alarms(self)
        add_roles(self)
        self._outputs()

    # --- storage and queues -------------------------------------------------------------------

    def _bucket(self) -> s3.Bucket:
        bucket = s3.Bucket(
            self, "Bucket", bucket_name=self.params.bucket_name,
            encryption=s3.BucketEncryption.S3_MANAGED, block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True, object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=cdk.RemovalPolicy.RETAIN,  # raw mail and photos outlive a deleted stack
            lifecycle_rules=[
                # a backstop: the worker deletes SES's object once the mail is in Waypost's own blobs
                s3.LifecycleRule(id="receipt-objects", prefix=RECEIPT_PREFIX,
                                 expiration=cdk.Duration.days(self.params.receipt_days)),
                # a backstop too: the worker purges each file after its device's retention
                s3.LifecycleRule(id="relay-files", prefix=f"{self.params.blob_prefix}{RELAY_FOLDER}",
                                 expiration=cdk.Duration.days(self.params.relay_days)),
                s3.LifecycleRule(id="abandoned-uploads", abort_incomplete_multipart_upload_after=cdk.Duration.days(1)),
            ])
        # only SES, acting for a receipt rule of this account, may write received mail
        bucket.add_to_resource_policy(iam.PolicyStatement(
            sid="SesWritesReceivedMail", principals=[iam.ServicePrincipal("ses.amazonaws.com")],
            actions=["s3:PutObject"], resources=[bucket.arn_for_objects(f"{RECEIPT_PREFIX}*")],
            conditions={"StringEquals": {"aws:SourceAccount": self.account},
                        "ArnLike": {"aws:SourceArn": self._ses_arn("receipt-rule-set/*")}}))
        return bucket

    def _queue(self, name: str) -> tuple[sqs.Queue, sqs.Queue]:
        dead = sqs.Queue(self, f"{name}DeadLetterQueue", retention_period=cdk.Duration.days(14),
                         encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True)
        queue = sqs.Queue(self, f"{name}Queue", visibility_timeout=VISIBILITY_TIMEOUT,
                          retention_period=cdk.Duration.days(4), encryption=sqs.QueueEncryption.SQS_MANAGED,
                          enforce_ssl=True,
                          dead_letter_queue=sqs.DeadLetterQueue(queue=dead, max_receive_count=MAX_RECEIVE_COUNT))
        return queue, dead

    def _topic(self, construct_id: str, title: str, queue: sqs.Queue) -> sns.Topic:
        topic = sns.Topic(self, construct_id, display_name=title, enforce_ssl=True)
        topic.add_to_resource_policy(iam.PolicyStatement(
            sid="SesPublishes", principals=[iam.ServicePrincipal("ses.amazonaws.com")], actions=["sns:Publish"],
            resources=[topic.topic_arn], conditions={"StringEquals": {"aws:SourceAccount": self.account}}))
        # the SNS envelope is kept (no raw delivery): Waypost checks the topic it came from
        topic.add_subscription(subscriptions.SqsSubscription(queue))
        return topic

    # --- SES ----------------------------------------------------------------------------------

    def _configuration_set(self) -> ses.ConfigurationSet:
        configuration_set = ses.ConfigurationSet(
            self, "ConfigurationSet", configuration_set_name=self.params.configuration_set,
            suppression_reasons=ses.SuppressionReasons.BOUNCES_AND_COMPLAINTS, reputation_metrics=True,
            sending_enabled=True)
        ses.CfnConfigurationSetEventDestination(
            self, "FeedbackEvents", configuration_set_name=configuration_set.configuration_set_name,
            event_destination=ses.CfnConfigurationSetEventDestination.EventDestinationProperty(
                name="waypost-feedback", enabled=True, matching_event_types=list(EVENT_TYPES),
                sns_destination=ses.CfnConfigurationSetEventDestination.SnsDestinationProperty(
                    topic_arn=self.feedback_topic.topic_arn)))
        return configuration_set

    def _identity(self) -> ses.EmailIdentity:
        return ses.EmailIdentity(
            self, "Identity", identity=ses.Identity.domain(self.params.mail_domain),
            configuration_set=self.configuration_set, dkim_signing=True,
            dkim_identity=ses.DkimIdentity.easy_dkim(ses.EasyDkimSigningKeyLength.RSA_2048_BIT),
            mail_from_domain=self.params.mail_from_domain,
            mail_from_behavior_on_mx_failure=ses.MailFromBehaviorOnMxFailure.REJECT_MESSAGE)

    def _receiving(self) -> None:
        rule_set = ses.CfnReceiptRuleSet(self, "ReceiptRuleSet", rule_set_name=f"{self.params.stack_name}-inbound")
        rule = ses.CfnReceiptRule(
            self, "ReceiptRule", rule_set_name=rule_set.ref,
            rule=ses.CfnReceiptRule.RuleProperty(
                name=RECEIPT_RULE, enabled=True, recipients=[self.params.mail_domain], tls_policy="Require",
                scan_enabled=True,
                actions=[ses.CfnReceiptRule.ActionProperty(s3_action=ses.CfnReceiptRule.S3ActionProperty(
                    bucket_name=self.bucket.bucket_name, object_key_prefix=RECEIPT_PREFIX,
                    topic_arn=self.receipt_topic.topic_arn))]))
        # SES checks at creation that it may write to the bucket and publish to the topic
        for policy in (self.bucket.policy, self.receipt_topic.node.find_child("Policy")):
            rule.node.add_dependency(policy)  # type: ignore[arg-type]
        # CloudFormation cannot make a rule set the active one; one SES API call at deploy does
        activate = cr.AwsSdkCall(service="SES", action="setActiveReceiptRuleSet",
                                 parameters={"RuleSetName": rule_set.ref},
                                 physical_resource_id=cr.PhysicalResourceId.of(f"{self.params.stack_name}-active"))
        active = cr.AwsCustomResource(
            self, "ActiveReceiptRuleSet", on_create=activate, on_update=activate,
            on_delete=cr.AwsSdkCall(service="SES", action="setActiveReceiptRuleSet", parameters={}),
            policy=cr.AwsCustomResourcePolicy.from_statements([iam.PolicyStatement(
                actions=["ses:SetActiveReceiptRuleSet"], resources=["*"])]),  # the action has no resource type
            install_latest_aws_sdk=False)
        active.node.add_dependency(rule)

    def _ses_arn(self, resource: str) -> str:
        return f"arn:{self.partition}:ses:{self.region}:{self.account}:{resource}"

    def identity_arn(self) -> str:
        return self._ses_arn(f"identity/{self.params.mail_domain}")

    def configuration_set_arn(self) -> str:
        return self._ses_arn(f"configuration-set/{self.params.configuration_set}")

    def kms_key_arn(self) -> str | None:
        """The ARN of blobs.s3_kms_key_id (given as an ARN, or as a key id of this account and region)."""
        key = self.params.kms_key
        if key is None or key.startswith("arn:"):
            return key
        return f"arn:{self.partition}:kms:{self.region}:{self.account}:key/{key}"

    # --- what waypost.toml needs ---------------------------------------------------------------

    def _outputs(self) -> None:
        values = {
            "IngressQueueUrl": ("ses_ingress.sqs_queue_url", self.ingress_queue.queue_url),
            "ReceiptTopicArn": ("ses_ingress.sns_topic_arns", self.receipt_topic.topic_arn),
            "FeedbackQueueUrl": ("feedback.sqs_queue_url", self.feedback_queue.queue_url),
            "FeedbackTopicArn": ("feedback.sns_topic_arns", self.feedback_topic.topic_arn),
            "BucketName": ("blobs.s3_bucket", self.bucket.bucket_name),
            "ConfigurationSetName": ("ses.configuration_set", self.params.configuration_set),
            "ReceivingMx": (f"MX of {self.params.mail_domain}", f"10 inbound-smtp.{self.region}.amazonaws.com"),
        }
        for name, (setting, value) in values.items():
            cdk.CfnOutput(self, name, value=value, description=setting)
