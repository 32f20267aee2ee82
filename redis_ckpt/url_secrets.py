"""The secrets in a URL: find them and hide them. A URL is shown only as :func:`redact_url`
makes it (every password as ``***``), and any text that might quote one is scrubbed of
:func:`url_secrets`. Part of :mod:`redis_ckpt.urls` (which re-exports these names): the raw
text is read here because a password holding an unencoded ``#``, ``?``, ``/`` or ``@`` is cut
apart by ``urlsplit`` and redis-py, and must still be hidden whole."""

from __future__ import annotations

import re
from urllib.parse import unquote, unquote_plus, urlsplit, urlunsplit

__all__ = [
    "SECRET_PARAMS",
    "PERCENT_ENCODE_QUERY_PASSWORD",
    "redact_url",
    "url_secrets",
    "raw_password",
    "password_needs_encoding",
    "refuse_split_secret",
]

#: query parameters whose values are secrets (redis-py takes ?password=; Sentinel URLs ?sentinel_password=)
SECRET_PARAMS = frozenset({"password", "pass", "pwd", "auth", "secret", "token", "sentinel_password"})


def _secret_param(name: str) -> bool:
    """Whether a query parameter's value is a secret: one of SECRET_PARAMS, or any other
    ``*password`` (redis-py hands every query option to the connection: ``?ssl_password=``
    unlocks the TLS private key)."""
    name = name.lower()
    return name in SECRET_PARAMS or name.endswith("password")


#: the error for a URL whose ``?password=`` (or other secret) value holds an unencoded '&'
PERCENT_ENCODE_QUERY_PASSWORD = "cannot parse the URL: percent-encode a '&' in a password in the query (%26)"


#: what ends the host part of a URL: a password holding one of these unencoded makes
#: ``urlsplit`` (and redis-py) cut the password there and take the rest for a port, path,
#: query or fragment, so the secret is looked for in the raw text instead
_URL_DELIMITERS = "#?/"


#: what may follow the userinfo's '@': host list (no '@'), path, query (an '@' only in a
#: value: ``?client_name=a@b``), fragment; a unix socket URL has no host, only the path
_PIECE = r"[^=@&#]*(?:=[^&#]*)?"
_QUERY = rf"(?:\?{_PIECE}(?:&{_PIECE})*)?(?:#.*)?"
_TAIL = re.compile(rf"[^/?#@]*(?:/[^?#@]*)?{_QUERY}", re.DOTALL)
_UNIX_TAIL = re.compile(rf"/[^?#]*{_QUERY}", re.DOTALL)


def _raw_userinfo(url: str) -> tuple[str, str, str] | None:
    """``(scheme, userinfo, rest)``: the raw text between ``://`` and the ``@`` that ends the
    userinfo, or None when there is none. Not what ``urlsplit`` calls the userinfo (that stops
    at the first ``#``, ``?`` or ``/``): a password holding those (or ``@``) unencoded is still
    all here. The userinfo ends at the first ``@`` after which the rest reads as a URL's
    host, path and query (no ``@`` in a host, a path or a query key), else at the last one:
    so an ``@`` in the query (``?client_name=a@b``) is not taken for the end of a password."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return None
    tail_form = _UNIX_TAIL if scheme.lower() == "unix" else _TAIL
    ats = [i for i, c in enumerate(rest) if c == "@"]
    end = next((i for i in ats if tail_form.fullmatch(rest, i + 1)), ats[-1])
    return scheme, rest[:end], rest[end + 1:]


def raw_password(url: str) -> str | None:
    """Everything after the first ``:`` of the raw userinfo (see :func:`_raw_userinfo`), or None."""
    raw = _raw_userinfo(url)
    if raw is None or ":" not in raw[1]:
        return None
    return raw[1].split(":", 1)[1]


def password_needs_encoding(url: str) -> bool:
    """Whether the URL's password holds a ``#``, ``?`` or ``/`` that is not percent-encoded:
    a parser then takes part of it for the port, path or query, and its message quotes it."""
    pw = raw_password(url)
    return pw is not None and any(c in pw for c in _URL_DELIMITERS)


def _is_secret(key: str) -> bool:
    return _secret_param(unquote_plus(key))


def _query_pieces(query: str) -> list[str]:
    """The ``key=value`` pieces of a raw query; a piece without ``=`` right after a secret's
    is the rest of that secret (``?password=a&b``: an unencoded ``&`` in the password), so it
    stays with it: redis-py would drop it, redaction must not show it."""
    pieces: list[str] = []
    for piece in query.split("&"):
        if pieces and "=" not in piece and _is_secret(pieces[-1].partition("=")[0]):
            pieces[-1] += "&" + piece
        else:
            pieces.append(piece)
    return pieces


def _raw_query(url: str) -> str:
    """The raw query of ``url`` (after the userinfo, see :func:`_raw_userinfo`)."""
    raw = _raw_userinfo(url)
    tail = raw[2] if raw is not None else url.partition("://")[2]
    return tail.partition("#")[0].partition("?")[2]


def _secret_values(url: str) -> list[tuple[str, str]]:
    """``(key, raw value)`` of every secret query parameter (``?password=``...)."""
    pairs = (piece.partition("=") for piece in _query_pieces(_raw_query(url)))
    return [(k, v) for k, _, v in pairs if _is_secret(k)]


def refuse_split_secret(url: str) -> None:
    """A ``?password=`` value holding an unencoded ``&`` means a wrong password (redis-py
    keeps only what comes before it): refuse the URL, without quoting the value."""
    if any("&" in value for _, value in _secret_values(url)):
        raise ValueError(PERCENT_ENCODE_QUERY_PASSWORD)


def _redact_query(url: str) -> str:
    """``url`` (no userinfo) with secret query values (``?password=``...) and any fragment as
    ``***``; the rest of the query is shown as it is."""
    parts = urlsplit(url)
    query = "&".join(f"{piece.partition('=')[0]}=***" if _is_secret(piece.partition("=")[0]) else piece
                     for piece in _query_pieces(parts.query)) if parts.query else ""
    fragment = "***" if parts.fragment else ""  # no URL form has one: the tail of a password with '#'
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, fragment))


def redact_url(url: str) -> str:
    """``url`` (any form above) with any password (userinfo, ``?password=``,
    ``?sentinel_password=``...) replaced by ``***``: the only form in which a URL is shown.

    The userinfo is the raw text up to the last ``@``, so a password holding an unencoded
    ``#``, ``?`` or ``/`` is hidden whole (``redis://u:a/b@h`` shows as ``redis://u:***@h``)."""
    try:
        raw = _raw_userinfo(url)
        if raw is None:
            return _redact_query(url)
        scheme, userinfo, tail = raw
        if ":" in userinfo:  # user:password (a lone user name is not a secret)
            userinfo = userinfo.split(":", 1)[0] + ":***"
        rest = _redact_query(f"{scheme}://{tail}")[len(scheme) + 1:]  # urlunsplit may drop the '//'
        return f"{scheme}://{userinfo}@{rest.removeprefix('//')}"
    except ValueError:
        return "<unparseable url>"


def url_secrets(url: str | None) -> tuple[str, ...]:
    """The secrets a URL carries (userinfo password, ``?password=``...), raw and unquoted,
    longest first: what must be scrubbed from any text that might quote the URL.

    The password is everything after the first ``:`` of the raw userinfo (up to the last
    ``@``); when it holds an unencoded ``#``, ``?`` or ``/`` its pieces between those are
    secrets too (a parser quotes such a piece as a port, a path or a query)."""
    if not url:
        return ()
    found: set[str] = set()
    pw = raw_password(url)
    if pw is not None:
        found.update({pw, unquote(pw)})
        for piece in re.split(f"[{re.escape(_URL_DELIMITERS)}]", pw):
            found.update({piece, unquote(piece)})
    try:
        urlsplit(url)
        for _, v in _secret_values(url):
            for piece in (v, *v.split("&")):
                found.update({piece, unquote(piece), unquote_plus(piece)})
    except ValueError:
        # unparseable (redact_url shows it as "<unparseable url>"): treat all userinfo as secret
        raw = _raw_userinfo(url)
        if raw is not None:
            found.update({raw[1], raw[1].split(":", 1)[-1]})
    return tuple(sorted((s for s in found if s), key=len, reverse=True))
