"""The management API's error: an HTTP status, a reason and the request field at fault.

Every refusal of the HTTP interface is one :class:`ApiError`, answered as the JSON body
``{"error": "...", "field": "..."}`` (``field`` is null when no single field is to blame).

Public names: ApiError.
"""

from __future__ import annotations

from sluice.errors import Fault, SluiceError

__all__ = ["ApiError"]


class ApiError(SluiceError):
    """A request the management API refuses; ``status`` is the HTTP code to answer with."""

    fault = Fault.PEER
    reply_hint = None

    def __init__(
        self,
        status: int,
        error: str,
        *,
        field: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.field = field
        #: Extra response headers (WWW-Authenticate, Retry-After, Allow).
        self.headers = headers

    def body(self) -> dict[str, str | None]:
        return {"error": self.error, "field": self.field}
