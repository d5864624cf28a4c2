"""A provider's HTTP failure in the error taxonomy's terms: the status → kind matrix (SPEC
3.4 and the seeds' error-handling matrix), Retry-After, context-length and content-policy
wordings, and provider messages made safe to show.

Content-policy refusals, as the providers phrase them (an HTTP 400, or the same error object
inside a stream):

- OpenAI: `code: content_policy_violation` ("Your request was rejected as a result of our
  safety system"); its reasoning models answer `code: invalid_prompt`, "your prompt was
  flagged as potentially violating our usage policy".
- Azure OpenAI: `code: content_filter` ("The response was filtered due to the prompt
  triggering Azure OpenAI's content management policy"), with `innererror.code:
  ResponsibleAIPolicyViolation` and the `content_filter_result` per category.
- Anthropic: `invalid_request_error`, "Output blocked by content filtering policy".

A filtered *answer* is not an error: OpenAI's `finish_reason: content_filter` and Anthropic's
`stop_reason: refusal` end the stream with FinishReason.CONTENT_FILTER.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Mapping

from services.router import context_limits
from services.router.engines.base import (
    ProviderContentFiltered,
    ProviderContextTooLong,
    ProviderError,
    ProviderMisconfigured,
    ProviderRateLimited,
    ProviderRejectedInput,
    ProviderTimeout,
    ProviderUnauthenticated,
    ProviderUnavailable,
)

MAX_RETRY_AFTER_SECONDS = 3600.0
MAX_SHOWN_MESSAGE = 300
"""A provider's error message is cut to this many characters before it is shown."""

_CONTEXT_LENGTH = re.compile(
    r"context[_ ]length|context window|maximum context|prompt is too long|too many tokens",
    re.IGNORECASE,
)
_CONTENT_POLICY = re.compile(
    r"content (?:filtering|management) policy|our safety system|"
    r"flagged as potentially violating",
    re.IGNORECASE,
)
CONTENT_POLICY_CODES = frozenset(
    {"content_policy_violation", "content_filter", "ResponsibleAIPolicyViolation"}
)
"""Provider error codes that always mean a content-policy refusal (see the module docstring)."""
_SECRET_LIKE = re.compile(r"(sk-|sk-ant-|Bearer\s+)[A-Za-z0-9._\-]{6,}")


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms` (Azure OpenAI) or `Retry-After` (delta seconds
    or an HTTP date, RFC 9110); None when absent or unreadable; clamped to 0..1 h."""
    lowered = {k.lower(): v for k, v in headers.items()}
    seconds: float | None = None
    if "retry-after-ms" in lowered:
        try:
            seconds = float(lowered["retry-after-ms"]) / 1000
        except ValueError:
            seconds = None
    value = lowered.get("retry-after", "").strip()
    if seconds is None and value:
        try:
            seconds = float(value)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError):
                return None
            seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds is None or not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def shown(message: str, secret: str = "") -> str:
    """A provider's message made safe to show: the secret (and anything like a key) removed,
    one line, cut short."""
    if secret:
        message = message.replace(secret, "[redacted]")
    message = _SECRET_LIKE.sub("[redacted]", message)
    message = " ".join(message.split())
    if len(message) > MAX_SHOWN_MESSAGE:
        message = message[:MAX_SHOWN_MESSAGE] + "…"
    return message


def is_context_length(code: str, message: str) -> bool:
    """Whether an input error says the prompt does not fit the context window."""
    return (
        code == "context_length_exceeded"
        or bool(_CONTEXT_LENGTH.search(message))
        # The wordings without those words: Anthropic's "exceed context limit", Azure's
        # "exceed the configured limit".
        or context_limits.parse(message) is not None
    )


def is_content_filtered(codes: tuple[str, ...], message: str) -> bool:
    """Whether an input error is a content-policy refusal: one of the provider's `codes`
    (code, inner code) says so, or its message is worded as one."""
    return any(c in CONTENT_POLICY_CODES for c in codes) or bool(_CONTENT_POLICY.search(message))


def error_for_status(
    provider: str,
    status: int,
    message: str,
    *,
    retry_after: float | None = None,
    context_length: bool = False,
    content_filtered: bool = False,
    provider_code: str = "",
    in_stream: bool = False,
) -> ProviderError:
    """The taxonomy's error for an HTTP error status (SPEC 3.4, the seeds' matrix). An error
    event inside a stream passes the status its type stands for and `in_stream`. A
    content-policy refusal carries `provider_code` as `providerCode`."""
    where = "error in the stream" if in_stream else f"HTTP {status}"
    text = f"{provider}: {where}" + (f": {message}" if message else "")
    http_status = 0 if in_stream else status
    if status in (404, 405):
        # No such endpoint (a wrong base_url) or model: the configuration, not an outage.
        return ProviderMisconfigured(text, http_status=http_status)
    if status in (401, 403):
        return ProviderUnauthenticated(text, http_status=http_status)
    if status == 429:
        return ProviderRateLimited(text, retry_after=retry_after, http_status=http_status)
    if status in (408, 504):
        return ProviderTimeout(text, http_status=http_status)
    if status in (400, 413, 422) and context_length:
        return ProviderContextTooLong(text, http_status=http_status)
    if status in (400, 413, 422) and content_filtered:
        metadata = {"providerCode": provider_code} if provider_code else {}
        return ProviderContentFiltered(text, http_status=http_status, metadata=metadata)
    if status in (400, 413, 422):
        return ProviderRejectedInput(text, http_status=http_status)
    # 409, 5xx, 529 overloaded, anything odd: our side or theirs, not the caller's input —
    # another provider may well succeed.
    return ProviderUnavailable(text, retry_after=retry_after, http_status=http_status)
