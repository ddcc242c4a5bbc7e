"""The one exception tree of image_queue.

    ImageQueueError                     anything we raise on purpose; has .category and .exit_code
    ├── UsageError                      bad flags, bad tasks file, bad config (exit 2)
    │   ├── TasksFileError              a tasks file that cannot be parsed at all (path, line, column)
    │   └── ConfigError                 image_queue.toml or a provider preset is unusable
    │       └── MissingKeyError         the API key's environment variable is not set
    ├── StateError                      the state dir cannot be read or written (exit 2)
    │   └── RunLockedError              another live `run` holds the state dir (exit 3)
    ├── NotFoundError                   `get`/`cancel` of an unknown task (exit 2)
    └── ProviderError                   one generation failed; carries a diagnosis category
        ├── LocalInputError             a reference image/mask is missing, unreadable or too big
        ├── HTTPStatusError             the API answered an error status
        ├── TransportError              timeouts and connection failures (category timeout/network)
        └── BadResponseError            the API answered 2xx but the body is unusable

Diagnosis categories (result.json `diagnosis.category`): auth, invalid_request,
moderation_blocked, rate_limited, quota_exhausted, upstream_failure, timeout, network,
bad_response, local_input.
"""

from __future__ import annotations

CATEGORIES = (
    "auth",
    "invalid_request",
    "moderation_blocked",
    "rate_limited",
    "quota_exhausted",
    "upstream_failure",
    "timeout",
    "network",
    "bad_response",
    "local_input",
)

HUMAN_REASONS = {
    "auth": "The image service rejected the API key; check the key and the account it belongs to.",
    "invalid_request": "The image service refused the request as invalid; the prompt, size or options need changing.",
    "moderation_blocked": "The image service's safety system blocked this prompt or image; rewrite the prompt.",
    "rate_limited": "The image service was busy or rate-limited us and retries ran out; run it again later.",
    "quota_exhausted": "The account has run out of credit or quota; top it up before running again.",
    "upstream_failure": "The image service failed on its side; running it again later usually works.",
    "timeout": "The image service did not answer in time; running it again later usually works.",
    "network": "The image service could not be reached over the network.",
    "bad_response": "The image service answered, but not with a usable image.",
    "local_input": "A reference image or mask given in the task could not be used.",
}


class ImageQueueError(Exception):
    """Base of every error image_queue raises on purpose."""

    category = "error"
    exit_code = 2

    def __init__(self, message: str, **context: object) -> None:
        super().__init__(message)
        self.message = message
        self.context = context

    def __str__(self) -> str:
        return self.message


class UsageError(ImageQueueError):
    category = "usage"


class TasksFileError(UsageError):
    category = "tasks_file"


class ConfigError(UsageError):
    category = "config"


class MissingKeyError(ConfigError):
    category = "missing_key"


class StateError(ImageQueueError):
    category = "state"


class RunLockedError(StateError):
    category = "locked"
    exit_code = 3


class NotFoundError(ImageQueueError):
    category = "not_found"


class ProviderError(ImageQueueError):
    """A generation failed. `category` is one of CATEGORIES; `stage` says where it failed."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        category: str,
        stage: str = "generate",
        http_status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        **context: object,
    ) -> None:
        super().__init__(message, **context)
        assert category in CATEGORIES, category
        self.category = category
        self.stage = stage
        self.http_status = http_status
        self.retryable = retryable
        self.retry_after = retry_after

    def diagnosis(self) -> dict[str, object]:
        return {
            "category": self.category,
            "human_reason": HUMAN_REASONS[self.category],
            "retryable": self.retryable,
        }


class LocalInputError(ProviderError):
    def __init__(self, message: str, **context: object) -> None:
        super().__init__(message, category="local_input", stage="input", **context)


class HTTPStatusError(ProviderError):
    pass


class TransportError(ProviderError):
    pass


class BadResponseError(ProviderError):
    def __init__(self, message: str, **context: object) -> None:
        context.setdefault("stage", "decode")
        super().__init__(message, category="bad_response", **context)
