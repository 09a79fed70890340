"""eventpipe: ACM Generic XML events over TCP, delivered to S3 as loadable batches."""

__version__ = "0.1.0"
