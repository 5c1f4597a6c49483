"""`--auth_token_file`: parsing, the Bearer check and its messages, reloads on change (with an injected
clock), and the constant-time comparison."""

from __future__ import annotations

import hmac
import logging
import os
import pathlib

import pytest

from sigserve.errors import Code, SigserveError
from sigserve.server import auth


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def write(path: pathlib.Path, text: str) -> None:
    """Write and move the mtime on, so a rewrite within one timestamp tick is still a change."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 10**9, before + 10**9))


def error_of(tokens: auth.TokenFile, header: bytes | str | None) -> SigserveError:
    with pytest.raises(SigserveError) as info:
        tokens.check(header)
    assert info.value.code == Code.UNAUTHENTICATED
    return info.value


def test_parse_tokens() -> None:
    text = "# ops team\n  alpha  \n\nbeta\r\n#gamma\n"
    assert auth.parse_tokens(text) == (b"alpha", b"beta")


def test_check(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "tokens"
    write(path, "s3cret-one\ns3cret-two\n")
    tokens = auth.TokenFile(str(path))
    tokens.check("Bearer s3cret-one")
    tokens.check(b"bearer s3cret-two")  # the scheme is case-insensitive (RFC 9110)
    tokens.check("  Bearer   s3cret-two  ")
    assert error_of(tokens, None).message == auth.MISSING
    assert error_of(tokens, "").message == auth.MISSING
    assert error_of(tokens, "s3cret-one").message == auth.MALFORMED
    assert error_of(tokens, "Basic czNjcmV0LW9uZQ==").message == auth.MALFORMED
    assert error_of(tokens, "Bearer ").message == auth.MALFORMED
    wrong = error_of(tokens, "Bearer s3cret-on")
    assert wrong.message == auth.INVALID
    for err in (wrong, error_of(tokens, "Bearer s3cret-one-and-more")):
        assert "s3cret" not in err.message


def test_start_needs_a_token(tmp_path: pathlib.Path) -> None:
    empty = tmp_path / "empty"
    write(empty, "# nothing yet\n\n")
    with pytest.raises(SigserveError, match="holds no token") as info:
        auth.TokenFile(str(empty))
    assert info.value.code == Code.INVALID_ARGUMENT
    with pytest.raises(SigserveError, match="cannot be read"):
        auth.TokenFile(str(tmp_path / "missing"))


def test_rotation_follows_the_file(tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "tokens"
    write(path, "old-token\n")
    clock = Clock()
    tokens = auth.TokenFile(str(path), clock=clock, check_interval=1.0)
    tokens.check("Bearer old-token")

    write(path, "old-token\nnew-token\n")
    # Not looked at again before the interval is over.
    assert error_of(tokens, "Bearer new-token").message == auth.INVALID
    clock.now = 1.0
    tokens.check("Bearer new-token")
    tokens.check("Bearer old-token")

    write(path, "new-token\n")
    clock.now = 2.0
    tokens.check("Bearer new-token")
    assert error_of(tokens, "Bearer old-token").message == auth.INVALID

    # A half-written (empty) or vanished file keeps the tokens read before, and says so.
    with caplog.at_level(logging.WARNING, logger="sigserve.auth"):
        write(path, "")
        clock.now = 3.0
        tokens.check("Bearer new-token")
        path.unlink()
        clock.now = 4.0
        tokens.check("Bearer new-token")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert "holds no token" in warnings[0] and "keeping the 1 token(s)" in warnings[0]
    assert "cannot be read" in warnings[1]
    assert not any("new-token" in w for w in warnings)

    # A file put back (new inode) is read again.
    write(path, "third-token\n")
    clock.now = 5.0
    tokens.check("Bearer third-token")
    assert error_of(tokens, "Bearer new-token").message == auth.INVALID


def test_every_token_is_compared_in_constant_time(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check goes through hmac.compare_digest for every token, even after a match."""
    path = tmp_path / "tokens"
    write(path, "aaa\nbbb\nccc\n")
    tokens = auth.TokenFile(str(path))
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    tokens.check("Bearer aaa")
    assert calls == [(b"aaa", b"aaa"), (b"bbb", b"aaa"), (b"ccc", b"aaa")]
