"""The shipping's logger: one namespace, C{eventpipe.shipping}, for every part of it."""

from eventpipe.logs import Logger

log = Logger(namespace="eventpipe.shipping")
