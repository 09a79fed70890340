"""
The AWS provider: a storage integration with C{STORAGE_PROVIDER = 'S3'},
the IAM role and policy, and the bucket notification Snowpipe listens to.
"""

from __future__ import annotations

import json
from typing import Any

from eventpipe.snowflake.setup import (
    Setup,
)
from eventpipe.snowflake.sql import (
    PARTITIONS,
    Provider,
    comment,
    create_then_set,
    literal,
    outside,
    part,
)


def part_1_integration(setup: Setup) -> str:
    names = setup.names
    provider = PARTITIONS[names.partition][0]
    return part(
        1,
        names.admin_role,
        "the storage integration and the reader role",
        f"USE ROLE {names.admin_role};",
        "",
        *create_then_set(
            "STORAGE INTEGRATION",
            names.storage_integration,
            ["TYPE = EXTERNAL_STAGE", f"STORAGE_PROVIDER = '{provider}'"],
            [
                "ENABLED = TRUE",
                f"STORAGE_AWS_ROLE_ARN = {literal(names.shown_role_arn)}",
                f"STORAGE_ALLOWED_LOCATIONS = ({literal(setup.location)})",
            ],
        ),
        "-- (ALTER keeps the external id, so the trust policy in AWS stays valid.)",
        f"GRANT USAGE ON INTEGRATION {names.storage_integration} TO ROLE {names.role};",
        "",
        "-- Analysts: reads the typed view and the quarantine table, sees the pipe's status.",
        f"CREATE ROLE IF NOT EXISTS {names.reader_role};",
        f"GRANT ROLE {names.reader_role} TO ROLE {names.role};",
        "",
        "-- STORAGE_AWS_IAM_USER_ARN and STORAGE_AWS_EXTERNAL_ID, for the AWS step below:",
        f"DESC INTEGRATION {names.storage_integration};",
    )


def aws_role(setup: Setup) -> str:
    names = setup.names
    arn = f"arn:{names.partition}:s3:::{setup.bucket}"
    listing: dict[str, object] = {
        "Effect": "Allow",
        "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
        "Resource": arn,
    }
    if setup.prefix:
        listing["Condition"] = {"StringLike": {"s3:prefix": [f"{setup.prefix}*"]}}
    access = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:GetObjectVersion"],
                "Resource": f"{arn}/{setup.prefix}*",
            },
            listing,
        ],
    }
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": "<STORAGE_AWS_IAM_USER_ARN>"},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"sts:ExternalId": "<STORAGE_AWS_EXTERNAL_ID>"}},
            }
        ],
    }
    return outside(
        "AWS",
        "before part 2: the IAM role Snowflake assumes",
        f"-- Create the role {names.shown_role_arn} with this permissions",
        "-- policy (read access to the batches under the prefix, nothing else):",
        comment(json.dumps(access, indent=2)),
        "-- and this trust policy, with the two values DESC INTEGRATION printed:",
        comment(json.dumps(trust, indent=2)),
    )


def aws_notification(setup: Setup) -> str:
    # The prefix only: the pipe's pattern takes the batches (plain or
    # gzipped) and leaves the quarantine, so a change of --compress needs
    # nothing here.
    queue: dict[str, Any] = {"QueueArn": "<notification_channel>", "Events": ["s3:ObjectCreated:*"]}
    if setup.prefix:
        queue["Filter"] = {"Key": {"FilterRules": [{"Name": "prefix", "Value": setup.prefix}]}}
    notification = {"QueueConfigurations": [queue]}
    return outside(
        "AWS",
        "before part 5: tell the pipe about new batches",
        "-- Point the bucket's event notifications at the pipe's queue, for what is",
        "-- written under the prefix (the pipe's pattern takes the batches only, so",
        "-- a change of --compress or --format needs nothing here).",
        "-- This replaces the bucket's notification configuration: if",
        f"-- `aws s3api get-bucket-notification-configuration --bucket {setup.bucket}`",
        "-- shows one, merge by hand.",
        comment(
            f"aws s3api put-bucket-notification-configuration --bucket {setup.bucket} \\\n"
            f"  --notification-configuration '{json.dumps(notification)}'"
        ),
    )


PROVIDER = Provider(part_1_integration, aws_role, aws_notification)
