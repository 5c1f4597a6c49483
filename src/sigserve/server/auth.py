"""Access tokens (`--auth_token_file`): one check for REST, gRPC and every protocol above them.

The file holds one or more tokens, one per line (blank lines and `#` comments ignored), so a rotation
is: add the new token, move the clients, remove the old one. The file is re-read when it changes
(looked at no more than once per `RELOAD_CHECK_SECONDS`); a re-read that finds the file missing,
unreadable or without tokens keeps the tokens it had and logs why, so a half-written file never locks
every client out. Tokens are compared with `hmac.compare_digest`, against every token, so the time a
check takes does not tell how much of a guess was right. No token ever appears in a message or a log.

REST sends `Authorization: Bearer <token>`, gRPC the metadata `authorization: Bearer <token>`.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from collections.abc import Callable

from sigserve.errors import Code, SigserveError

logger = logging.getLogger("sigserve.auth")

RELOAD_CHECK_SECONDS = 1.0
HEADER = "authorization"
_SCHEME = b"bearer"

MISSING = (
    "Missing access token: this server requires 'Authorization: Bearer <token>' "
    "(gRPC: metadata 'authorization: Bearer <token>'), e.g. curl -H 'Authorization: Bearer $TOKEN' ..."
)
MALFORMED = "Malformed Authorization header: expected 'Bearer <token>'"
INVALID = "Invalid access token: it is not one of the server's --auth_token_file tokens"


def unauthenticated(message: str) -> SigserveError:
    return SigserveError(Code.UNAUTHENTICATED, message)


def parse_tokens(text: str) -> tuple[bytes, ...]:
    """The tokens of a token file: one per line, surrounding whitespace dropped, `#` lines ignored."""
    tokens = []
    for line in text.splitlines():
        token = line.strip()
        if token and not token.startswith("#"):
            tokens.append(token.encode("utf-8"))
    return tuple(tokens)


class TokenFile:
    """The accepted tokens, kept in step with `path`.

    `clock` (monotonic seconds) is injectable so that tests control when the file is looked at.
    Raises SigserveError at construction if the file cannot be read or holds no token: a server
    told to require tokens must not start open.
    """

    def __init__(
        self,
        path: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        check_interval: float = RELOAD_CHECK_SECONDS,
    ) -> None:
        self.path = path
        self._clock = clock
        self._interval = check_interval
        self._lock = threading.Lock()
        self._next_check = clock() + check_interval
        stamp, tokens, error = self._read()
        if error:
            raise SigserveError(Code.INVALID_ARGUMENT, f"--auth_token_file {path}: {error}")
        self._stamp = stamp
        self._tokens = tokens

    def _read(self) -> tuple[tuple[int, int, int], tuple[bytes, ...], str]:
        """(file identity, tokens, error text or "")."""
        try:
            st = os.stat(self.path)
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            return (0, 0, 0), (), f"cannot be read ({reason})"
        tokens = parse_tokens(text)
        if not tokens:
            return (0, 0, 0), (), "holds no token (one token per line, e.g. made with `openssl rand -hex 32`)"
        return (st.st_ino, st.st_mtime_ns, st.st_size), tokens, ""

    def tokens(self) -> tuple[bytes, ...]:
        """The current tokens, re-reading the file if it changed since the last look."""
        now = self._clock()
        if now < self._next_check:
            return self._tokens
        with self._lock:
            if now < self._next_check:
                return self._tokens
            self._next_check = now + self._interval
            try:
                st = os.stat(self.path)
                stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            except OSError:
                stamp = (0, 0, 0)
            if stamp != self._stamp:
                new_stamp, tokens, error = self._read()
                if error:
                    logger.warning(
                        "--auth_token_file %s changed but %s; keeping the %d token(s) read before",
                        self.path,
                        error,
                        len(self._tokens),
                    )
                    self._stamp = stamp  # do not re-log until it changes again
                else:
                    logger.info("--auth_token_file %s reloaded: %d token(s)", self.path, len(tokens))
                    self._stamp, self._tokens = new_stamp, tokens
        return self._tokens

    def accepts(self, token: bytes) -> bool:
        """Whether `token` is one of the tokens, in time that does not depend on how it differs."""
        match = False
        for known in self.tokens():
            match |= hmac.compare_digest(known, token)
        return match

    def check(self, header: bytes | str | None) -> None:
        """Raise UNAUTHENTICATED unless `header` (the Authorization value) carries a valid token."""
        if header is None:
            raise unauthenticated(MISSING)
        raw = header.encode("latin-1", "replace") if isinstance(header, str) else header
        scheme, _, token = raw.strip().partition(b" ")
        token = token.strip()
        if scheme.lower() != _SCHEME or not token:
            raise unauthenticated(MALFORMED if raw.strip() else MISSING)
        if not self.accepts(token):
            raise unauthenticated(INVALID)
