"""The destination the options name: S3, Azure Blob Storage, Google Cloud Storage, or the outbox."""

from __future__ import annotations

from typing import Any


def destination_for(options: Any, reactor: Any, concurrency: int | None = None) -> Any:
    """
    An L{IUploader} (and L{IObjectReader}) for the options' destination.

    @param options: parsed service options (L{eventpipe.config.options.Options}).
    """
    threads = concurrency or options["upload-concurrency"]
    uploader: Any
    if options["s3-bucket"]:
        from eventpipe.destinations.s3 import S3Uploader

        uploader = S3Uploader(
            reactor,
            options["s3-bucket"],
            endpoint_url=options["s3-endpoint-url"],
            region=options["s3-region"],
            concurrency=threads,
            environment=options.aws_from_env_file(),
        )
        prefix = options["s3-prefix"]
    elif options["azure-container"]:
        from eventpipe.destinations.azure import AzureBlobUploader

        uploader = AzureBlobUploader(
            reactor,
            options["azure-container"],
            account_url=options["azure-account-url"],
            concurrency=threads,
            environment=options.azure_from_env_file(),
        )
        prefix = options["azure-prefix"]
    elif options["gcs-bucket"]:
        from eventpipe.destinations.gcs import GCSUploader

        uploader = GCSUploader(
            reactor,
            options["gcs-bucket"],
            endpoint_url=options["gcs-endpoint-url"],
            concurrency=threads,
            environment=options.gcs_from_env_file(),
        )
        prefix = options["gcs-prefix"]
    else:
        uploader = None
    if uploader is not None:
        from eventpipe.naming import normalize_prefix

        # The start-up probe proves the store's conditional writes here
        # (one small object per instance, removed where the policy allows).
        uploader.probe_key = f"{normalize_prefix(prefix)}.eventpipe-check/{options['instance-id']}"
        uploader.allow_unconditional = bool(options.get("allow-unconditional-writes"))
        return uploader
    from eventpipe.destinations.outbox import LocalDirectoryUploader

    return LocalDirectoryUploader(reactor, options["outbox"], threads=threads)
