"""The exception tree of luminai-actors; adapters wrap library errors into it, the web layer maps it to HTTP.

LuminaiError
 ├── ConfigError                 a LUMINAI_* setting is malformed (raised at start-up)
 ├── PayloadError                a webhook body is not JSON or not the shape Evolution sends  (400 / 422)
 ├── ValidationError             an admin request names a bad field                          (422)
 ├── NotFound                    no such row, or it belongs to another organization           (404)
 ├── Forbidden                   an organization key asks for what only the operator may do    (403)
 ├── Conflict                    a unique value is taken (e.g. an instance name)              (409)
 ├── Unavailable                 we cannot take the work right now; the caller should retry    (503)
 │    ├── DatabaseUnavailable    the database refused or dropped the connection
 │    ├── BrokerUnavailable      Redis (the Dramatiq broker) refused the enqueue
 │    └── ConversationBusy       the actor system is at its bound or the actor did not answer
 ├── EvolutionError              a call to Evolution API failed
 │    ├── EvolutionTransientError    worth retrying: connection error, timeout, 5xx, 429
 │    └── EvolutionPermanentError    never retried: 400 (incl. exists:false), 401, 404
 └── BrainError                  the LLM call failed or answered nonsense (retried by the AI actor)
"""

from __future__ import annotations


class LuminaiError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(LuminaiError):
    """A setting from the environment cannot be used."""


class PayloadError(LuminaiError):
    """A webhook payload is malformed. `status` is 400 for unreadable bodies, 422 for wrong shapes."""

    def __init__(self, message: str, *, status: int = 422, path: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.path = path


class ValidationError(LuminaiError):
    """An admin API request has a bad field; `field` names it (dotted path)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NotFound(LuminaiError):
    """The thing asked for does not exist (or is not visible to the caller)."""


class Forbidden(LuminaiError):
    """The caller is known but may not do this (only the operator may)."""


class Conflict(LuminaiError):
    """A value that must be unique is already taken."""


class Unavailable(LuminaiError):
    """A downstream cannot take the work now; the HTTP layer answers 503 so that the sender retries."""


class DatabaseUnavailable(Unavailable):
    """The database refused or lost the connection."""


class BrokerUnavailable(Unavailable):
    """The message broker (Redis) could not take a task."""


class ConversationBusy(Unavailable):
    """The conversation actor system is at its bound, or an actor did not answer in time."""


class EvolutionError(LuminaiError):
    """A call to Evolution API failed. `status` is the HTTP status (None for transport errors)."""

    def __init__(self, message: str, *, status: int | None = None, body: object = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class EvolutionTransientError(EvolutionError):
    """Worth retrying later: connection refused/reset, timeout, 5xx, 429."""


class EvolutionNotActivated(EvolutionError):
    """Evolution API 2.4's licence gate (`503 {"code": "LICENSE_REQUIRED", ...}`): the server is not
    activated. Configuration, not a fault: no retry helps until it is activated, so none is spent."""


class EvolutionMaybeSent(EvolutionTransientError):
    """The request reached Evolution but no answer came back (a read timeout, the connection closed before
    the answer): the message may have been sent. Before a resend, look for it (`services.maybe_sent`)."""


class EvolutionPermanentError(EvolutionError):
    """Retrying cannot help: bad request (e.g. number not on WhatsApp), bad credentials, unknown instance."""


class BrainError(LuminaiError):
    """The language model failed or its answer could not be used."""
