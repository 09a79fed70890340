from twisted.application.service import ServiceMaker

eventpipe = ServiceMaker(
    "eventpipe",
    "eventpipe.tap",
    "Receive ACM Generic XML events over TCP and ship them as batches to S3.",
    "eventpipe",
)
