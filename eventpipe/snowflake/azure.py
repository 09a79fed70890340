"""
The Azure parts of the Snowflake set-up (L{eventpipe.snowflake.script}): a storage
integration with C{STORAGE_PROVIDER = 'AZURE'}, a notification integration
on the storage queue Event Grid fills, and the steps in Azure between them
(consent, role assignments, the queue and the Event Grid subscription).
Every other part is the one the S3 set-up runs.  Pure text.
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

# What Snowflake's own application needs, and no more.
BLOB_ROLE = "Storage Blob Data Reader"
QUEUE_ROLE = "Storage Queue Data Contributor"


def part_1_azure(setup: Setup) -> str:
    azure = setup.azure
    assert azure is not None
    tenant = literal(azure.tenant_id or set_me("--azure-tenant-id"))
    return part_1_queued(
        setup,
        ["STORAGE_PROVIDER = 'AZURE'", f"AZURE_TENANT_ID = {tenant}"],
        [
            "NOTIFICATION_PROVIDER = AZURE_STORAGE_QUEUE",
            f"AZURE_STORAGE_QUEUE_PRIMARY_URI = {literal(azure.queue)}",
            f"AZURE_TENANT_ID = {tenant}",
        ],
        (
            ["-- New batches reach the pipe through a storage queue that Event Grid fills."],
            [
                "-- (The queue is fixed when it is created: for another one, DROP INTEGRATION",
                "-- and run this part again.  A prefix lives in the Event Grid filter below.)",
            ],
        ),
        "AZURE_CONSENT_URL and AZURE_MULTI_TENANT_APP_NAME",
    )


def azure_access(setup: Setup) -> str:
    azure = setup.azure
    assert azure is not None
    account = (
        "/subscriptions/<subscription>/resourceGroups/<group>/providers/"
        f"Microsoft.Storage/storageAccounts/{azure.account}"
    )
    queue = azure.queue.rsplit("/", 1)[1]
    subject = f"/blobServices/default/containers/{azure.container}/blobs/{setup.prefix}"
    app = "<the application id of AZURE_MULTI_TENANT_APP_NAME>"
    return outside(
        "Azure",
        "before part 2: Snowflake's access, the queue and Event Grid",
        "-- 1. Open each AZURE_CONSENT_URL that DESC printed and accept, as a",
        "--    tenant administrator: it adds Snowflake's application to the tenant.",
        f"-- 2. Let that application read the container ({BLOB_ROLE}) and take",
        f"--    messages off the queue ({QUEUE_ROLE}), nothing else:",
        comment(
            f"az storage queue create --name {queue} --account-name {azure.account} "
            "--auth-mode login\n"
            f'az role assignment create --assignee "{app}" --role "{BLOB_ROLE}" \\\n'
            f"  --scope {account}/blobServices/default/containers/{azure.container}\n"
            f'az role assignment create --assignee "{app}" --role "{QUEUE_ROLE}" \\\n'
            f"  --scope {account}/queueServices/default/queues/{queue}"
        ),
        "-- 3. Send what is written under the prefix to the queue:",
        comment(
            f"az eventgrid event-subscription create --name {bare(setup.names.pipe).replace('_', '-')} \\\n"
            f"  --source-resource-id {account} \\\n"
            "  --endpoint-type storagequeue \\\n"
            f"  --endpoint {account}/queueservices/default/queues/{queue} \\\n"
            "  --included-event-types Microsoft.Storage.BlobCreated \\\n"
            f"  --subject-begins-with {subject}"
        ),
        "--    (the prefix only: the pipe's pattern takes the batches, so a change of",
        "--    --compress or --format needs nothing here).",
    )


PROVIDER = Provider(part_1_azure, azure_access, lambda setup: "")
