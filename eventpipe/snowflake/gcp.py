"""
The Google Cloud parts of the Snowflake set-up (L{eventpipe.snowflake.script}):
a storage integration with C{STORAGE_PROVIDER = 'GCS'}, a notification
integration on the Pub/Sub subscription the bucket's notifications fill,
and the steps in GCP between them (the storage service account's role on
the bucket, the topic, the bucket notification, the subscription and the
Pub/Sub service account's roles).  Every other part is the one the S3
set-up runs.  Pure text.
"""

from __future__ import annotations

from eventpipe.snowflake.parts import part_1_queued
from eventpipe.snowflake.setup import Setup
from eventpipe.snowflake.sql import (
    Provider,
    bare,
    comment,
    literal,
    outside,
    set_me,
)

# What Snowflake's own service accounts need, and no more.
BUCKET_ROLE = "roles/storage.objectViewer"
SUBSCRIBER_ROLE = "roles/pubsub.subscriber"
MONITORING_ROLE = "roles/monitoring.viewer"


def _subscription(setup: Setup) -> str:
    assert setup.gcs is not None
    return setup.gcs.subscription or set_me("--gcs-pubsub-subscription")


def part_1_gcp(setup: Setup) -> str:
    return part_1_queued(
        setup,
        ["STORAGE_PROVIDER = 'GCS'"],
        [
            "NOTIFICATION_PROVIDER = GCP_PUBSUB",
            f"GCP_PUBSUB_SUBSCRIPTION_NAME = {literal(_subscription(setup))}",
        ],
        (
            [
                "-- New batches reach the pipe through a Pub/Sub subscription that the",
                "-- bucket's notifications fill (the GCP step below makes it).",
            ],
            [
                "-- (The subscription is fixed when it is created: for another one, DROP",
                "-- INTEGRATION and run this part again.  A prefix lives in the bucket",
                "-- notification below.)",
            ],
        ),
        "STORAGE_GCP_SERVICE_ACCOUNT and GCP_PUBSUB_SERVICE_ACCOUNT",
    )


def gcp_access(setup: Setup) -> str:
    gcs = setup.gcs
    assert gcs is not None
    subscription = _subscription(setup)
    project, _, name = subscription.removeprefix("projects/").partition("/subscriptions/")
    if not name:
        project, name = "<project>", subscription
    topic = f"{bare(setup.names.pipe).replace('_', '-')}-batches"
    storage_account = "<STORAGE_GCP_SERVICE_ACCOUNT>"
    pubsub_account = "<GCP_PUBSUB_SERVICE_ACCOUNT>"
    return outside(
        "GCP",
        "before part 2: Snowflake's access, the topic and the subscription",
        f"-- 1. Let Snowflake's storage service account read the bucket ({BUCKET_ROLE}),",
        "--    nothing else:",
        comment(
            f"gcloud storage buckets add-iam-policy-binding gs://{gcs.bucket} \\\n"
            f"  --member=serviceAccount:{storage_account} --role={BUCKET_ROLE}"
        ),
        "-- 2. Tell a topic what is written under the prefix, and subscribe to it:",
        comment(
            f"gcloud pubsub topics create {topic} --project={project}\n"
            f"gcloud storage buckets notifications create gs://{gcs.bucket} \\\n"
            f"  --topic=projects/{project}/topics/{topic} \\\n"
            f"  --event-types=OBJECT_FINALIZE --object-prefix={setup.prefix} \\\n"
            "  --payload-format=json\n"
            f"gcloud pubsub subscriptions create {name} --project={project} \\\n"
            f"  --topic={topic}"
        ),
        "--    (the prefix only: the pipe's pattern takes the batches, so a change of",
        "--    --compress or --format needs nothing here).",
        f"-- 3. Let Snowflake's Pub/Sub service account read the subscription ({SUBSCRIBER_ROLE})",
        f"--    and see its backlog ({MONITORING_ROLE}):",
        comment(
            f"gcloud pubsub subscriptions add-iam-policy-binding {name} --project={project} \\\n"
            f"  --member=serviceAccount:{pubsub_account} --role={SUBSCRIBER_ROLE}\n"
            f"gcloud projects add-iam-policy-binding {project} \\\n"
            f"  --member=serviceAccount:{pubsub_account} --role={MONITORING_ROLE}"
        ),
    )


PROVIDER = Provider(part_1_gcp, gcp_access, lambda setup: "")
