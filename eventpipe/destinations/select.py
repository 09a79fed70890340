"""The destination the options name: S3, Azure Blob Storage, or the outbox."""

from __future__ import annotations

from typing import Any


def destination_for(options: Any, reactor: Any, concurrency: int | None = None) -> Any:
    """
    An L{IUploader} (and L{IObjectReader}) for the options' destination.

    @param options: parsed service options (L{eventpipe.options.Options}).
    """
    threads = concurrency or options["upload-concurrency"]
    if options["s3-bucket"]:
        from eventpipe.destinations.s3 import S3Uploader

        return S3Uploader(
            reactor,
            options["s3-bucket"],
            endpoint_url=options["s3-endpoint-url"],
            region=options["s3-region"],
            concurrency=threads,
            environment=options.aws_from_env_file(),
        )
    if options["azure-container"]:
        from eventpipe.destinations.azure import AzureBlobUploader

        return AzureBlobUploader(
            reactor,
            options["azure-container"],
            account_url=options["azure-account-url"],
            concurrency=threads,
            environment=options.azure_from_env_file(),
        )
    from eventpipe.destinations.outbox import LocalDirectoryUploader

    return LocalDirectoryUploader(reactor, options["outbox"], threads=threads)
