"""The AWS stack (deploy/aws) as `waypost aws synth` writes it: offline, from a settings file.

The template is linted with cfn-lint (no errors allowed) and read back as JSON: every resource
and property the deployment relies on is asserted, with references followed to the resource
they name. Synthesizing starts Node.js (jsii) and takes tens of seconds, so each variant is
synthesized once per module: one with everything optional (sending source IPs, the Lambda
function), one with nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from cfnlint.api import ManualArgs, lint_file
from click.testing import CliRunner

from tests.support.aws_stack import provision
from waypost.cli import cli

DOMAIN = "example.org"
BOUNCES = "bounces.example.org"
OPERATOR = "ops@example.net"
REGION = "eu-west-1"
SETTINGS = (f'mail_domain = "{DOMAIN}"\noperator_email = "{OPERATOR}"\n[outbound]\nbounce_domain = "{BOUNCES}"\n'
            f'[ses]\nregion = "{REGION}"\nconfiguration_set = "waypost-events"\n'
            '[retention]\ndead_raw_days = 12.5\n')
KEY_ARN = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
# the variant with everything optional also encrypts blobs with a KMS key under a prefix
FULL_SETTINGS = (SETTINGS + f'[blobs]\ns3_kms_key_id = "{KEY_ARN}"\ns3_prefix = "waypost/"\n'
                 '[relay]\nmax_retention_days = 90\n')
Template = dict[str, Any]


def synth(tmp: Path, *options: str, settings: str = SETTINGS) -> tuple[int, str, Path]:
    data = tmp / "data"
    data.mkdir(exist_ok=True)
    (data / "waypost.toml").write_text(settings, encoding="utf-8")
    out = tmp / "cdk.out"
    result = CliRunner().invoke(cli, ["aws", "synth", "--data-dir", str(data), "--out", str(out), *options])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output, out / "Waypost.template.json"


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    code, output, path = synth(tmp_path_factory.mktemp("full"), "--sending-source-ip", "203.0.113.7",
                               "--sending-source-ip", "2001:db8::/48", "--lambda-code", "s3://artifacts/waypost.zip",
                               settings=FULL_SETTINGS)
    assert code == 0, output
    return path, output


@pytest.fixture(scope="module")
def template(synthesized: tuple[Path, str]) -> Template:
    return dict(json.loads(synthesized[0].read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Template:
    code, output, path = synth(tmp_path_factory.mktemp("plain"))
    assert code == 0, output
    return dict(json.loads(path.read_text(encoding="utf-8")))


# --- reading the template ---------------------------------------------------------------------


def resources(template: Template, kind: str) -> dict[str, dict[str, Any]]:
    return {name: r["Properties"] for name, r in template["Resources"].items() if r["Type"] == kind}


def one(template: Template, kind: str, where: Callable[[dict[str, Any]], bool] = lambda _: True) -> dict[str, Any]:
    [found] = [p for p in resources(template, kind).values() if where(p)]
    return found


def named(template: Template, reference: Any) -> str:
    """The logical id a Ref or Fn::GetAtt points at."""
    if "Ref" in reference:
        return str(reference["Ref"])
    return str(reference["Fn::GetAtt"][0])


def text(value: Any) -> str:
    """A string or an Fn::Join, flattened: references become <LogicalId>."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        return "".join(text(part) for part in value["Fn::Join"][1])
    return f"<{named({}, value)}>"


def queue_by_role(template: Template) -> dict[str, str]:
    """Ingress, Feedback and their dead-letter queues → logical ids (which start with the construct ids)."""
    names = resources(template, "AWS::SQS::Queue")

    def find(prefix: str) -> str:
        [name] = [name for name in names if name.startswith(prefix)]
        return name

    return {role: find(f"{role}Queue") for role in ("Ingress", "Feedback")} | {
        f"{role}DeadLetter": find(f"{role}DeadLetterQueue") for role in ("Ingress", "Feedback")}


def statements(template: Template, role_prefix: str) -> list[dict[str, Any]]:
    role = next(name for name in resources(template, "AWS::IAM::Role") if name.startswith(role_prefix))
    return [s for p in resources(template, "AWS::IAM::Policy").values() if {"Ref": role} in p["Roles"]
            for s in p["PolicyDocument"]["Statement"]]


def actions(statement: dict[str, Any]) -> set[str]:
    found = statement["Action"]
    return {found} if isinstance(found, str) else set(found)


def listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# --- lint ---------------------------------------------------------------------------------------


def test_cfn_lint_finds_no_errors(synthesized: tuple[Path, str]) -> None:
    matches = lint_file(synthesized[0], config=ManualArgs(regions=[REGION]))
    errors = [f"{m.rule.id} {m.message}" for m in matches if m.rule.id.startswith("E")]
    assert errors == []


def test_the_command_names_the_template_and_the_outputs(synthesized: tuple[Path, str], template: Template) -> None:
    path, output = synthesized
    assert f"template: {path}" in output and "AWS::SES::ReceiptRule" in output
    assert {"IngressQueueUrl", "FeedbackQueueUrl", "ReceiptTopicArn", "FeedbackTopicArn", "BucketName",
            "ConfigurationSetName", "WorkerRoleArn", "WebRoleArn"} <= set(template["Outputs"])
    assert template["Outputs"]["IngressQueueUrl"]["Description"] == "ses_ingress.sqs_queue_url"


# --- SES ----------------------------------------------------------------------------------------


def test_identity_has_easy_dkim_and_the_custom_mail_from(template: Template) -> None:
    identity = one(template, "AWS::SES::EmailIdentity")
    assert identity["EmailIdentity"] == DOMAIN
    assert identity["DkimAttributes"] == {"SigningEnabled": True}
    assert identity["DkimSigningAttributes"] == {"NextSigningKeyLength": "RSA_2048_BIT"}
    assert identity["MailFromAttributes"] == {"MailFromDomain": BOUNCES, "BehaviorOnMxFailure": "REJECT_MESSAGE"}
    assert named(template, identity["ConfigurationSetAttributes"]["ConfigurationSetName"]) in \
        resources(template, "AWS::SES::ConfigurationSet")


def test_configuration_set_sends_every_event_waypost_reads_to_the_feedback_queue(template: Template) -> None:
    configuration_set = one(template, "AWS::SES::ConfigurationSet")
    assert configuration_set["Name"] == "waypost-events"
    assert configuration_set["ReputationOptions"] == {"ReputationMetricsEnabled": True}
    destination = one(template, "AWS::SES::ConfigurationSetEventDestination")["EventDestination"]
    assert destination["Enabled"] is True
    assert set(destination["MatchingEventTypes"]) == {"bounce", "complaint", "delivery", "reject",
                                                      "renderingFailure", "deliveryDelay", "subscription"}
    topic = named(template, destination["SnsDestination"]["TopicARN"])
    subscription = one(template, "AWS::SNS::Subscription", lambda s: named(template, s["TopicArn"]) == topic)
    assert subscription["Protocol"] == "sqs"
    assert named(template, subscription["Endpoint"]) == queue_by_role(template)["Feedback"]


def test_receipt_rule_requires_tls_scans_and_stores_to_the_bucket_with_a_notification(template: Template) -> None:
    rule = one(template, "AWS::SES::ReceiptRule")["Rule"]
    assert (rule["TlsPolicy"], rule["ScanEnabled"], rule["Enabled"], rule["Recipients"]) == \
        ("Require", True, True, [DOMAIN])
    [action] = rule["Actions"]
    s3_action = action["S3Action"]
    assert named(template, s3_action["BucketName"]) in resources(template, "AWS::S3::Bucket")
    assert s3_action["ObjectKeyPrefix"] == "ses-inbound/"
    subscription = one(template, "AWS::SNS::Subscription",
                       lambda s: named(template, s["TopicArn"]) == named(template, s3_action["TopicArn"]))
    assert named(template, subscription["Endpoint"]) == queue_by_role(template)["Ingress"]
    # the rule set is made the active one at deploy (CloudFormation has no property for it)
    [activation] = resources(template, "Custom::AWS").values()
    assert "setActiveReceiptRuleSet" in text(activation["Create"])
    assert "<ReceiptRuleSet>" in text(activation["Create"])


def test_ses_may_publish_to_both_topics_only_for_this_account(template: Template) -> None:
    for policy in resources(template, "AWS::SNS::TopicPolicy").values():
        [allow] = [s for s in policy["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
        assert allow["Principal"] == {"Service": "ses.amazonaws.com"} and actions(allow) == {"sns:Publish"}
        assert allow["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}


# --- bucket and queues --------------------------------------------------------------------------


def test_bucket_is_encrypted_private_and_expires_receipts_per_retention(template: Template) -> None:
    bucket = one(template, "AWS::S3::Bucket")
    [encryption] = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert bucket["PublicAccessBlockConfiguration"] == {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                                                        "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    rules = {rule["Id"]: rule for rule in bucket["LifecycleConfiguration"]["Rules"]}
    assert rules["receipt-objects"]["Prefix"] == "ses-inbound/"
    assert rules["receipt-objects"]["ExpirationInDays"] == 13  # retention.dead_raw_days = 12.5, in whole days
    assert rules["abandoned-uploads"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}


def test_bucket_policy_lets_only_ses_of_this_account_write(template: Template) -> None:
    policy = one(template, "AWS::S3::BucketPolicy")["PolicyDocument"]["Statement"]
    allows = [s for s in policy if s["Effect"] == "Allow"]
    assert len(allows) == 1
    [allow] = allows
    assert allow["Principal"] == {"Service": "ses.amazonaws.com"}
    assert actions(allow) == {"s3:PutObject"}
    assert text(allow["Resource"]).endswith("/ses-inbound/*")
    assert allow["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    assert ":receipt-rule-set/" in text(allow["Condition"]["ArnLike"]["aws:SourceArn"])
    # and nothing reaches it without TLS
    assert any(s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in policy)


def test_both_queues_redrive_to_their_dead_letter_queue(template: Template) -> None:
    queues = resources(template, "AWS::SQS::Queue")
    roles = queue_by_role(template)
    assert len(queues) == 4
    for role in ("Ingress", "Feedback"):
        queue = queues[roles[role]]
        assert queue["RedrivePolicy"]["maxReceiveCount"] == 5
        assert named(template, queue["RedrivePolicy"]["deadLetterTargetArn"]) == roles[f"{role}DeadLetter"]
        assert queue["VisibilityTimeout"] >= 6 * 60  # six times the Lambda timeout, as AWS advises
        assert queue["SqsManagedSseEnabled"] is True
        assert queues[roles[f"{role}DeadLetter"]]["MessageRetentionPeriod"] == 14 * 24 * 3600


# --- alarms -------------------------------------------------------------------------------------


def alarms_on(template: Template, metric: str, queue: str | None = None) -> list[dict[str, Any]]:
    return [a for a in resources(template, "AWS::CloudWatch::Alarm").values() if a["MetricName"] == metric
            and (queue is None or named(template, a["Dimensions"][0]["Value"]) == queue)]


def test_queue_alarms_at_the_reference_thresholds(template: Template) -> None:
    roles = queue_by_role(template)
    for role in ("Ingress", "Feedback"):
        [dead] = alarms_on(template, "ApproximateNumberOfMessagesVisible", roles[f"{role}DeadLetter"])
        assert (dead["Threshold"], dead["ComparisonOperator"]) == (50, "GreaterThanThreshold")
        [oldest] = alarms_on(template, "ApproximateAgeOfOldestMessage", roles[role])
        assert (oldest["Threshold"], oldest["ComparisonOperator"], oldest["Period"]) == \
            (180, "GreaterThanThreshold", 60)
        [backlog] = alarms_on(template, "ApproximateNumberOfMessagesVisible", roles[role])
        assert (backlog["Threshold"], backlog["ComparisonOperator"]) == (180, "GreaterThanThreshold")
        assert backlog["Period"] * backlog["EvaluationPeriods"] == 5 * 60 and backlog["DatapointsToAlarm"] == 5


def test_reputation_alarms_at_the_review_thresholds(template: Template) -> None:
    [bounce] = alarms_on(template, "Reputation.BounceRate")
    [complaint] = alarms_on(template, "Reputation.ComplaintRate")
    for alarm, threshold in ((bounce, 0.05), (complaint, 0.001)):
        assert (alarm["Namespace"], alarm["Threshold"], alarm["ComparisonOperator"]) == \
            ("AWS/SES", threshold, "GreaterThanOrEqualToThreshold")


def test_every_alarm_tells_the_operator_topic_which_mails_the_operator(template: Template) -> None:
    email = one(template, "AWS::SNS::Subscription", lambda s: s["Protocol"] == "email")
    assert email["Endpoint"] == OPERATOR
    operator_topic = named(template, email["TopicArn"])
    alarms = resources(template, "AWS::CloudWatch::Alarm").values()
    assert len(alarms) == 8
    for alarm in alarms:
        assert [named(template, a) for a in alarm["AlarmActions"]] == [operator_topic]
        assert [named(template, a) for a in alarm["OKActions"]] == [operator_topic]


# --- roles --------------------------------------------------------------------------------------


def test_worker_sends_only_as_our_identity_and_configuration_set_from_the_given_ips(template: Template) -> None:
    sends = [s for s in statements(template, "WorkerRole") if actions(s) & {"ses:SendEmail", "ses:SendRawEmail"}]
    [send] = sends
    assert actions(send) == {"ses:SendEmail", "ses:SendRawEmail"}
    assert sorted(text(r).rsplit(":", 1)[1] for r in send["Resource"]) == \
        ["configuration-set/waypost-events", f"identity/{DOMAIN}"]
    assert all(f":ses:{REGION}:" in text(r) for r in send["Resource"])
    assert send["Condition"] == {"IpAddress": {"aws:SourceIp": ["203.0.113.7/32", "2001:db8::/48"]}}


def test_no_role_may_send_as_anything_else(template: Template) -> None:
    for role in ("WorkerRole", "WebRole", "FunctionServiceRole"):
        for statement in statements(template, role):
            if actions(statement) & {"ses:SendEmail", "ses:SendRawEmail", "ses:*", "*"}:
                assert "*" not in listed(statement["Resource"])


def test_worker_reaches_only_our_queues_and_bucket(template: Template) -> None:
    roles = queue_by_role(template)
    bucket = next(iter(resources(template, "AWS::S3::Bucket")))
    for statement in statements(template, "WorkerRole"):
        kinds = {action.split(":")[0] for action in actions(statement)}
        targets = {text(r) for r in listed(statement["Resource"])}
        if kinds == {"sqs"}:
            assert targets == {f"<{roles['Ingress']}>", f"<{roles['Feedback']}>"}
            assert not actions(statement) & {"sqs:SendMessage", "sqs:DeleteQueue", "sqs:PurgeQueue"}
        if kinds == {"s3"}:
            assert {target.split("/")[0] for target in targets} == {f"<{bucket}>"}
        if "*" in targets:  # only the SES account calls, which have no resource type
            assert all(action.startswith("ses:") and not action.startswith("ses:Send") for action in actions(statement))


def test_web_only_reads_the_bucket(template: Template) -> None:
    granted = {action for statement in statements(template, "WebRole") for action in actions(statement)}
    assert granted == {"s3:GetObject", "s3:ListBucket", "kms:Decrypt"}


def test_the_roles_may_use_the_blobs_kms_key_and_no_other(template: Template, plain: Template) -> None:
    function_role = named(template, one(template, "AWS::Lambda::Function",
                                        lambda f: f.get("Handler", "").startswith("waypost."))["Role"])
    expected = {"WorkerRole": {"kms:Decrypt", "kms:GenerateDataKey"}, "WebRole": {"kms:Decrypt"},
                function_role: {"kms:Decrypt", "kms:GenerateDataKey"}}
    for role, granted in expected.items():
        [key] = [s for s in statements(template, role) if any(a.startswith("kms:") for a in actions(s))]
        assert actions(key) == granted and listed(key["Resource"]) == [KEY_ARN]
    for role in ("WorkerRole", "WebRole"):  # without blobs.s3_kms_key_id: no KMS rights at all
        assert not [a for s in statements(plain, role) for a in actions(s) if a.startswith("kms:")]


def test_a_kms_key_given_by_id_is_granted_by_its_arn_in_the_stack_account() -> None:
    from waypost.cli.aws import stack_module
    from waypost.config import load_settings

    settings = load_settings(None, mail_domain=DOMAIN, outbound={"bounce_domain": BOUNCES},
                             ses={"region": REGION}, blobs={"s3_kms_key_id": "1234abcd-12ab-34cd-56ef-1234567890ab"})
    params = stack_module("parameters").StackParameters.from_settings(settings)
    _, stack = stack_module("synth").build_app(params)
    arn = stack.resolve(stack.kms_key_arn())
    assert text(arn).endswith(":kms:eu-west-1:<AWS::AccountId>:key/1234abcd-12ab-34cd-56ef-1234567890ab"), arn


def test_the_relay_files_expire_behind_the_longest_device_retention(template: Template, plain: Template) -> None:
    full = {rule["Id"]: rule for rule in one(template, "AWS::S3::Bucket")["LifecycleConfiguration"]["Rules"]}
    bare = {rule["Id"]: rule for rule in one(plain, "AWS::S3::Bucket")["LifecycleConfiguration"]["Rules"]}
    # the S3 blob store names the relay's files <s3_prefix>relay/<sealed key>
    assert (full["relay-files"]["Prefix"], full["relay-files"]["ExpirationInDays"]) == ("waypost/relay/", 91)
    assert (bare["relay-files"]["Prefix"], bare["relay-files"]["ExpirationInDays"]) == ("relay/", 366)


def test_lambda_consumes_both_queues_reporting_batch_item_failures(template: Template) -> None:
    function = one(template, "AWS::Lambda::Function", lambda f: f.get("Handler", "").startswith("waypost."))
    assert function["Handler"] == "waypost.aws.lambda_handler.lambda_handler"
    assert function["Code"] == {"S3Bucket": "artifacts", "S3Key": "waypost.zip"}
    mappings = resources(template, "AWS::Lambda::EventSourceMapping").values()
    roles = queue_by_role(template)
    assert {named(template, m["EventSourceArn"]) for m in mappings} == {roles["Ingress"], roles["Feedback"]}
    assert all(m["FunctionResponseTypes"] == ["ReportBatchItemFailures"] for m in mappings)


def test_without_options_no_lambda_and_no_source_ip_condition(plain: Template) -> None:
    assert resources(plain, "AWS::Lambda::EventSourceMapping") == {}
    [send] = [s for s in statements(plain, "WorkerRole") if "ses:SendEmail" in actions(s)]
    assert "Condition" not in send
    assert one(plain, "AWS::SES::ReceiptRule")["Rule"]["TlsPolicy"] == "Require"


# --- refusals, before anything is synthesized ---------------------------------------------------


@pytest.mark.parametrize(("options", "settings", "words"), [
    ((), SETTINGS.replace(f'bounce_domain = "{BOUNCES}"', 'bounce_domain = "example.net"'),
     "outbound.bounce_domain must be a subdomain of mail_domain"),
    (("--sending-source-ip", "203.0.113.300"), SETTINGS, "--sending-source-ip '203.0.113.300'"),
    (("--lambda-code", "artifacts/waypost.zip"), SETTINGS, "s3://BUCKET/KEY"),
    ((), SETTINGS + '[blobs]\ns3_kms_key_id = "alias/waypost"\n', "blobs.s3_kms_key_id 'alias/waypost'"),
])
def test_bad_input_is_refused_with_what_to_change(tmp_path: Path, options: tuple[str, ...], settings: str,
                                                  words: str) -> None:
    code, output, path = synth(tmp_path, *options, settings=settings)
    assert code != 0 and words in output
    assert not path.exists()


# --- the stack's resources in moto --------------------------------------------------------------


def test_the_stack_resources_created_in_moto_carry_mail_and_events_to_the_queues(plain: Template,
                                                                                  aws: str) -> None:
    created = provision(plain, REGION)
    outputs = created.outputs
    sqs, sns, s3 = (boto3.client(service, region_name=REGION) for service in ("sqs", "sns", "s3"))
    # the receipt rule set is active, with the rule as the template states it
    assert created.rule_set == "Waypost-inbound"
    [rule] = boto3.client("ses", region_name=REGION).describe_receipt_rule_set(RuleSetName=created.rule_set)["Rules"]
    assert (rule["TlsPolicy"], rule["ScanEnabled"], rule["Actions"][0]["S3Action"]["BucketName"]) == \
        ("Require", True, outputs["BucketName"])
    # a receipt notification and a sending event each reach their own queue, in the SNS envelope
    for topic, queue, body in (
            (outputs["ReceiptTopicArn"], outputs["IngressQueueUrl"], '{"notificationType": "Received"}'),
            (outputs["FeedbackTopicArn"], outputs["FeedbackQueueUrl"], '{"eventType": "Bounce"}')):
        sns.publish(TopicArn=topic, Message=body)
        [message] = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=5)["Messages"]
        envelope = json.loads(message["Body"])
        assert (envelope["TopicArn"], envelope["Message"]) == (topic, body)
    # redrive to the queue's own dead-letter queue
    redrive = json.loads(sqs.get_queue_attributes(QueueUrl=outputs["IngressQueueUrl"],
                                                  AttributeNames=["RedrivePolicy"])["Attributes"]["RedrivePolicy"])
    dead_letters = created.physical[queue_by_role(plain)["IngressDeadLetter"]]["Arn"]
    assert (int(redrive["maxReceiveCount"]), redrive["deadLetterTargetArn"]) == (5, dead_letters)
    # the bucket: encrypted by default, private, receipt objects expire
    bucket = outputs["BucketName"]
    [default] = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert default["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    with pytest.raises(ClientError) as refused:  # moto applies the policy: plain HTTP is not TLS
        s3.put_object(Bucket=bucket, Key="ses-inbound/abc123", Body=b"From: a@example.net\r\n\r\nhi\r\n")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert all(s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"].values())
    rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert {r["ID"]: r.get("Expiration", {}).get("Days") for r in rules}["receipt-objects"] == 13
    identity = boto3.client("sesv2", region_name=REGION).get_email_identity(EmailIdentity=DOMAIN)
    assert identity["ConfigurationSetName"] == "waypost-events"


def test_without_the_stack_directory_the_command_says_where_it_looked(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAYPOST_AWS_STACK_DIR", str(tmp_path / "nowhere"))
    code, output, path = synth(tmp_path)
    assert code != 0 and f"no AWS stack at {tmp_path / 'nowhere'}" in output
    assert "WAYPOST_AWS_STACK_DIR" in output and not path.exists()
