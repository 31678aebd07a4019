"""Untrusted text made safe to show: secrets masked where they stand as values, control
characters replaced before text reaches a terminal (pure).

Used by every layer that prints or logs: the storage engine's error messages, the
notifiers' delivery errors, the CLI's human output and the console log renderer.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from urllib.parse import unquote

MASK = "***"
#: A secret shorter than this is refused (``*_env`` variables): masking a short one as a
#: substring would mangle unrelated words, and as a value it is guessable anyway.
MIN_SECRET_LENGTH = 8

# ``scheme://user:password@`` — also when the rest of the URL does not parse (a bad port).
_URL_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@'\"]*:)"
                           r"(?P<password>[^\s@'\"]*)@")
# ``password=...`` / ``password: ...`` as driver messages (libpq DSNs) spell it.
_PASSWORD_FIELD = re.compile(r"(?P<head>\bpassword\s*[=:]\s*)(?P<value>'[^']*'|\"[^\"]*\"|\S+)",
                             re.IGNORECASE)
_BIDI_CONTROLS = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_WHITESPACE_CONTROLS = frozenset("\t\n\r\v\f\x1c\x1d\x1e\x1f\x85\u2028\u2029")
REPLACEMENT = "\ufffd"


def mask_url_passwords(text: str) -> str:
    """Every ``scheme://user:password@`` in ``text`` with the password as ``***``."""
    return _URL_USERINFO.sub(lambda m: f"{m['head']}{MASK}@", text)


def url_password(url: str) -> str | None:
    """The password in ``url``'s userinfo (percent-decoded), or None."""
    match = _URL_USERINFO.search(url)
    return unquote(match["password"]) if match and match["password"] else None


def mask_values(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with each secret masked where it stands as a whole value: not as part of a
    longer word (``e`` in ``example`` stays), but as a token, in URL userinfo or after
    ``password=``."""
    text = mask_url_passwords(text)
    text = _PASSWORD_FIELD.sub(lambda m: f"{m['head']}{MASK}", text)
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = re.sub(rf"(?<![\w-])(?<!\w\.){re.escape(secret)}(?![\w-]|\.\w)", MASK, text)
    return text


def mask_database_message(text: str, url: str) -> str:
    """A message about database ``url`` (ours or a driver's) with its password masked."""
    password = url_password(url)
    return mask_values(text, [password, _quoted(password)])


def _quoted(password: str | None) -> str | None:
    from urllib.parse import quote

    return quote(password, safe="") if password else None


def terminal_line(value: object) -> str:
    """``value`` as one line for a person: line breaks become spaces, every other control
    character (ESC, BEL, NUL, bidi overrides) becomes U+FFFD, so text cannot move the
    cursor, set the clipboard, hide a link or forge a row."""
    text = str(value)
    if text.isprintable():  # the common case, in C: no control, bidi or line-break character
        return text
    return "".join(_replacement(c, keep="") for c in text)


def terminal_text(value: object) -> str:
    """Like ``terminal_line`` but keeps newlines and tabs (multi-line text we wrote)."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(_replacement(c, keep="\n\t") for c in text)


def _replacement(char: str, keep: str) -> str:
    if char in keep or (char.isprintable() and char not in _BIDI_CONTROLS):
        return char
    if char in _WHITESPACE_CONTROLS:
        return " "
    if char == " " or unicodedata.category(char) == "Zs":
        return char
    if unicodedata.category(char) in ("Cc", "Zl", "Zp") or char in _BIDI_CONTROLS:
        return REPLACEMENT
    return char  # format characters (soft hyphen, ZWJ in emoji) and unassigned ones stay
