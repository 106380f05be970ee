"""The resources of the synthesized AWS stack (deploy/aws), created in moto from the template.

moto's CloudFormation leaves out most of what the stack holds (SES identities, configuration
sets, receipt rules, SNS subscriptions, bucket and queue policies), so ``provision`` reads the
template and makes the same calls CloudFormation would, with the template's own properties:
queues (dead-letter queues first, then redrive), topics and their SQS subscriptions, the bucket
(encryption, public access block, lifecycle, policy), the SES identity, configuration set and
receipt rule set, made active as the stack's custom resource does. References (Ref, GetAtt,
Fn::Join) resolve to what moto returned. What moto cannot hold (alarms, roles, the Lambda
function) is left out: the template tests read those.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3

ACCOUNT = "123456789012"  # moto's default account
Template = dict[str, Any]


@dataclass
class Provisioned:
    """What was created, by the template's logical ids, and the values waypost.toml takes."""

    physical: dict[str, dict[str, str]] = field(default_factory=dict)  # id → {"Ref": …, "Arn": …, "QueueUrl": …}
    outputs: dict[str, str] = field(default_factory=dict)  # the stack's Outputs, resolved
    rule_set: str = ""


class _Resolver:
    def __init__(self, region: str, provisioned: Provisioned) -> None:
        self.region = region
        self.provisioned = provisioned

    def __call__(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self(v) for v in value]
        if not isinstance(value, dict):
            return value
        if "Ref" in value:
            return self._ref(value["Ref"])
        if "Fn::GetAtt" in value:
            name, attribute = value["Fn::GetAtt"]
            return self.provisioned.physical[name][attribute]
        if "Fn::Join" in value:
            separator, parts = value["Fn::Join"]
            return separator.join(str(self(part)) for part in parts)
        return {key: self(v) for key, v in value.items()}

    def _ref(self, name: str) -> str:
        pseudo = {"AWS::AccountId": ACCOUNT, "AWS::Region": self.region, "AWS::Partition": "aws",
                  "AWS::URLSuffix": "amazonaws.com"}
        return pseudo.get(name) or self.provisioned.physical[name]["Ref"]


def provision(template: Template, region: str) -> Provisioned:
    """Create the stack's queues, topics, bucket and SES resources in the moto that boto3's
    default endpoint reaches (``use_fake_aws``)."""
    provisioned = Provisioned()
    resolve = _Resolver(region, provisioned)
    clients: dict[str, Any] = {}

    def client(service: str) -> Any:
        if service not in clients:
            clients[service] = boto3.client(service, region_name=region)
        return clients[service]

    for kind in _ORDER:
        found = [(name, r) for name, r in template["Resources"].items() if r["Type"] == kind]
        # a queue's dead-letter queue first: its redrive policy names it
        for name, resource in sorted(found, key=lambda item: "RedrivePolicy" in item[1].get("Properties", {})):
            properties = resolve(resource.get("Properties", {}))
            provisioned.physical[name] = _MAKERS[kind](client, name, properties) or {}
    provisioned.outputs = {name: str(resolve(output["Value"])) for name, output in template["Outputs"].items()
                           if not name.endswith("RoleArn")}  # roles are not created here
    active = client("ses").describe_active_receipt_rule_set()
    provisioned.rule_set = active.get("Metadata", {}).get("Name", "")
    return provisioned


Maker = Callable[[Callable[[str], Any], str, dict[str, Any]], dict[str, str] | None]


def _queue(client: Callable[[str], Any], name: str, p: dict[str, Any]) -> dict[str, str]:
    attributes = {key: str(p[key]) for key in ("VisibilityTimeout", "MessageRetentionPeriod") if key in p}
    if p.get("SqsManagedSseEnabled"):
        attributes["SqsManagedSseEnabled"] = "true"
    if "RedrivePolicy" in p:
        attributes["RedrivePolicy"] = json.dumps(p["RedrivePolicy"])
    url = client("sqs").create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return {"Ref": url, "QueueUrl": url, "Arn": arn, "QueueName": name}


def _queue_policy(client: Callable[[str], Any], name: str, p: dict[str, Any]) -> None:
    for url in p["Queues"]:
        client("sqs").set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(p["PolicyDocument"])})


def _topic(client: Callable[[str], Any], name: str, p: dict[str, Any]) -> dict[str, str]:
    arn = client("sns").create_topic(Name=name)["TopicArn"]
    return {"Ref": arn, "TopicArn": arn}


def _topic_policy(client: Callable[[str], Any], name: str, p: dict[str, Any]) -> None:
    for arn in p["Topics"]:
        client("sns").set_topic_attributes(TopicArn=arn, AttributeName="Policy",
                                           AttributeValue=json.dumps(p["PolicyDocument"]))


def _subscription(client: Callable[[str], Any], name: str, p: dict[str, Any]) -> dict[str, str]:
    arn = client("sns").subscribe(TopicArn=p["TopicArn"], Protocol=p["Protocol"], Endpoint=p["Endpoint"],
                                  ReturnSubscriptionArn=True)["SubscriptionArn"]
    return {"Ref": arn}


def _bucket(client: Callable[[str], Any], name: str, p: dict[str, Any]) -> dict[str, str]:
    bucket = p.get("BucketName") or name.lower()
    s3 = client("s3")
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": s3.meta.region_name})
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": rule["ServerSideEncryptionByDefault"][
            "SSEAlgorithm"]}} for rule in p["BucketEncryption"]["ServerSideEncryptionConfiguration"]]})
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=p["PublicAccessBlockConfiguration"])
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [
        _lifecycle_rule(rule) for rule in p["LifecycleConfiguration"]["Rules"]]})
    return {"Ref": bucket, "Arn": f"arn:aws:s3:::{bucket}"}


def _lifecycle_rule(rule: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {"ID": rule["Id"], "Status": rule["Status"], "Filter": {"Prefix": rule.get("Prefix", "")}}
    if "ExpirationInDays" in rule:
        found["Expiration"] = {"Days": rule["ExpirationInDays"]}
    if "AbortIncompleteMultipartUpload" in rule:
        found["AbortIncompleteMultipartUpload"] = rule["AbortIncompleteMultipartUpload"]
    return found


def _bucket_policy(client: Callable[[str], Any], name: str, p: dict[str, Any]) -> None:
    client("s3").put_bucket_policy(Bucket=p["Bucket"], Policy=json.dumps(p["PolicyDocument"]))


def _configuration_set(client: Callable[[str], Any], name: str, p: dict[str, Any]) -> dict[str, str]:
    client("sesv2").create_configuration_set(ConfigurationSetName=p["Name"])
    return {"Ref": p["Name"]}


def _identity(client: Callable[[str], Any], name: str, p: dict[str, Any]) -> dict[str, str]:
    client("sesv2").create_email_identity(EmailIdentity=p["EmailIdentity"],
                                          ConfigurationSetName=p["ConfigurationSetAttributes"]["ConfigurationSetName"])
    # moto's SES v2 has no PutEmailIdentityMailFromAttributes; its v1 twin holds the same
    behaviour = {"REJECT_MESSAGE": "RejectMessage", "USE_DEFAULT_VALUE": "UseDefaultValue"}
    client("ses").set_identity_mail_from_domain(
        Identity=p["EmailIdentity"], MailFromDomain=p["MailFromAttributes"]["MailFromDomain"],
        BehaviorOnMXFailure=behaviour[p["MailFromAttributes"]["BehaviorOnMxFailure"]])
    return {"Ref": p["EmailIdentity"]}


def _rule_set(client: Callable[[str], Any], name: str, p: dict[str, Any]) -> dict[str, str]:
    client("ses").create_receipt_rule_set(RuleSetName=p["RuleSetName"])
    return {"Ref": p["RuleSetName"]}


def _rule(client: Callable[[str], Any], name: str, p: dict[str, Any]) -> dict[str, str]:
    rule = p["Rule"]
    client("ses").create_receipt_rule(RuleSetName=p["RuleSetName"], Rule={
        "Name": rule["Name"], "Enabled": rule["Enabled"], "TlsPolicy": rule["TlsPolicy"],
        "Recipients": rule["Recipients"], "ScanEnabled": rule["ScanEnabled"],
        "Actions": [{"S3Action": action["S3Action"]} for action in rule["Actions"]]})
    client("ses").set_active_receipt_rule_set(RuleSetName=p["RuleSetName"])  # the stack's Custom::AWS
    return {"Ref": rule["Name"]}


# CloudFormation's order, by the references between them
_MAKERS: dict[str, Maker] = {
    "AWS::SQS::Queue": _queue, "AWS::SNS::Topic": _topic, "AWS::SQS::QueuePolicy": _queue_policy,
    "AWS::SNS::TopicPolicy": _topic_policy, "AWS::SNS::Subscription": _subscription, "AWS::S3::Bucket": _bucket,
    "AWS::S3::BucketPolicy": _bucket_policy, "AWS::SES::ConfigurationSet": _configuration_set,
    "AWS::SES::EmailIdentity": _identity, "AWS::SES::ReceiptRuleSet": _rule_set, "AWS::SES::ReceiptRule": _rule,
}
_ORDER = tuple(_MAKERS)
