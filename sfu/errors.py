"""Errors that end a signalling request, each with the HTTP status a WHIP/WHEP client expects.

The core raises these; `sfu.io.http` turns them into responses (status, `text/plain` reason body,
`Retry-After` where set). Never 406 on WHEP: 406 announces a counter-offer there.
"""

from __future__ import annotations


class SfuError(Exception):
    """Base: `status` is the HTTP status, `reason` a sentence for the response body."""

    status = 500

    def __init__(self, reason: str, *, retry_after: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class BadRequest(SfuError):
    """Malformed input (an SDP that does not parse, a bad query parameter)."""

    status = 400


class Unprocessable(SfuError):
    """Well-formed but unusable: no codec in common, no ICE credentials, no fingerprint..."""

    status = 422


class Unauthorized(SfuError):
    """No token, or a token that does not verify or has expired."""

    status = 401


class Forbidden(SfuError):
    """A valid token that does not allow this stream or capability."""

    status = 403


class NotFound(SfuError):
    """Unknown session resource."""

    status = 404


class Conflict(SfuError):
    """The stream is not live (WHEP): carries Retry-After."""

    status = 409


class PreconditionFailed(SfuError):
    """If-Match did not match the session's current ETag."""

    status = 412


class RequestTimeout(SfuError):
    """The request's body did not arrive in time (`http_body_timeout_s`)."""

    status = 408


class PayloadTooLarge(SfuError):
    status = 413


class UnsupportedMediaType(SfuError):
    status = 415


class ClientGone(SfuError):
    """The client closed the connection before its request was read: not an error of the server,
    nobody is left to answer (499, as nginx names it, appears only in the response counters)."""

    status = 499


class Overloaded(SfuError):
    """A configured session limit is reached: carries Retry-After."""

    status = 503
