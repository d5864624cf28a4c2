"""Email addresses as auth stores them: normalised, then validated.

Normalising: surrounding whitespace stripped, Unicode NFKC (so look-alike compatibility
forms of the same address become one), and the whole address lower-cased. Domains are
case-insensitive by RFC; local parts may be case-sensitive by the letter of RFC 5321, but no
mail system people use treats `Ada@` and `ada@` as two mailboxes, and two accounts for one
person (one of them perhaps not theirs) is the worse failure. Validating
accepts the addresses people use (`dot-atom` local parts, internationalised domains) and
refuses what no mail system delivers to: quoted local parts, IP-literal domains, whitespace
and control characters, and anything over RFC 5321's lengths.
"""

from __future__ import annotations

import re
import unicodedata

from services.common.errors import FieldViolation, InvalidArgument

MAX_EMAIL_LENGTH = 254  # RFC 5321 path limit, less the angle brackets
MAX_LOCAL_LENGTH = 64
MAX_LABEL_LENGTH = 63

# dot-atom: printable characters other than the specials and space; no leading, trailing
# or doubled dot. Unicode letters allowed (RFC 6531).
_ATOM = r"[^\s\"(),:;<>@\[\\\]\.\x00-\x1f\x7f]+"
_LOCAL = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")
_LABEL = re.compile(r"[^\W_](?:(?:[^\W_]|-)*[^\W_])?")  # letters, digits, inner hyphens


def _invalid(why: str) -> InvalidArgument:
    return InvalidArgument(
        f"not a usable email address: {why}",
        reason="EMAIL_INVALID",
        field_violations=[FieldViolation("email", why)],
    )


def normalise_email(raw: str) -> str:
    """The stored form of `raw`; InvalidArgument EMAIL_INVALID (field `email`) with the
    reason when it is not a deliverable address."""
    if len(raw) > 4 * MAX_EMAIL_LENGTH:  # bound the work before normalising
        raise _invalid(f"at most {MAX_EMAIL_LENGTH} characters")
    email = unicodedata.normalize("NFKC", raw.strip())
    if not email:
        raise _invalid("empty")
    if len(email) > MAX_EMAIL_LENGTH:
        raise _invalid(f"at most {MAX_EMAIL_LENGTH} characters")
    local, at, domain = email.lower().rpartition("@")
    if not at or not local or not domain:
        raise _invalid("expected local-part@domain")
    if len(local) > MAX_LOCAL_LENGTH:
        raise _invalid(f"the part before @ has at most {MAX_LOCAL_LENGTH} characters")
    if not _LOCAL.fullmatch(local):
        raise _invalid("the part before @ has a character or dot where none may be")
    labels = domain.split(".")
    if len(labels) < 2:
        raise _invalid("the domain needs a dot (example.com)")
    for label in labels:
        if not label or len(label) > MAX_LABEL_LENGTH or not _LABEL.fullmatch(label):
            raise _invalid("the domain is not a host name")
    if labels[-1].isdigit():
        raise _invalid("the domain is not a host name")
    return f"{local}@{domain}"
