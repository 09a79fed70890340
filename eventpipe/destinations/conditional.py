"""
The delivery rule of every store that is written over the network, once:
a write only creates (it is refused when the key is taken); a batch too
large for one request first looks whether its key is taken, so that no
part is sent for a key that is someone else's; an object under the key that
carries this segment's source digest is this segment's delivery
(L{eventpipe.destinations.delivered_before}); anything else is another
writer's, and the delivery fails with L{KeyConflict}.

A store writes only its primitives: L{ConditionalStore.look},
L{ConditionalStore.create}, L{ConditionalStore.create_in_parts},
L{ConditionalStore.writes_over} (the start-up probe), which of its errors
says the key is taken, and how its errors read.
"""

from __future__ import annotations

import abc
import os

from eventpipe.destinations import (
    KeyConflict,
    PooledUploader,
    UploadError,
    UploadRequest,
    delivered_before,
)


class ConditionalStore(PooledUploader):
    """A store whose writes are conditional by request (If-None-Match: *)."""

    @property
    @abc.abstractmethod
    def in_parts_above(self) -> int:
        """Above this many bytes a batch goes in parts (its key is looked at first)."""

    def deliver(self, request: UploadRequest) -> None:
        try:
            self._deliver(request)
        except Exception as error:
            raise self.classify(error) from error

    def _deliver(self, request: UploadRequest) -> None:
        try:
            if os.path.getsize(request.path) <= self.in_parts_above:
                self.create(request)
            elif not self.delivered(request):
                self.create_in_parts(request)
        except Exception as error:
            if not self.taken(error):
                raise
            if not self.delivered(request):
                # Gone again between the refusal and the look: try once more.
                raise UploadError(f"{request.key} was taken, then gone", transient=True) from None

    def delivered(self, request: UploadRequest) -> bool:
        """
        Whether this segment's delivery is under the key already (False
        when the key is free).

        @raise KeyConflict: the key holds someone else's object.
        """
        found = self.look(request.key)
        if found is None:
            return False
        if delivered_before(request, found):
            return True
        raise KeyConflict(request.key)

    def overwrites(self, key: str) -> bool:
        """L{PooledUploader.overwrites}, with the store's errors read as its others are."""
        try:
            return self.writes_over(key)
        except UploadError:
            raise
        except Exception as error:
            raise self.classify(error) from error

    @abc.abstractmethod
    def writes_over(self, key: str) -> bool:
        """Write C{key} twice, each only if absent: whether the second was taken (blocking)."""

    @abc.abstractmethod
    def look(self, key: str) -> dict[str, str] | None:
        """The metadata of the object under C{key}, or None when there is none."""

    @abc.abstractmethod
    def create(self, request: UploadRequest) -> None:
        """Write the object in one request, only if its key is free."""

    @abc.abstractmethod
    def create_in_parts(self, request: UploadRequest) -> None:
        """Write the object in parts, committed only if its key is free."""

    @abc.abstractmethod
    def taken(self, error: BaseException) -> bool:
        """Whether C{error} is the store's refusal of a write to a taken key."""

    @abc.abstractmethod
    def classify(self, error: BaseException) -> UploadError:
        """What the store's error means: wait, or fix something."""
