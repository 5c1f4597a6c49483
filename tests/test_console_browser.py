"""The web console in a real headless Chromium (Debian's `chromium`, driven by Playwright's Python API;
no browser download): pick a model, send a predict, see the answer; a broken request shows the
server's own error text; with --auth_token_file the page asks for the token once. A screenshot of
each state is written under the test's temp dir."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sigserve.server import auth
from tests.servers import ServerProcess

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip: .[dev])")
expect = sync_api.expect

pytestmark = pytest.mark.slow

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "console-token-5e0a"
BROKEN = '{"instances": [1.0, "a"]}'


def chromium_path() -> str | None:
    for candidate in (os.environ.get("SIGSERVE_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = chromium_path()
    if path is None:
        pytest.skip("no chromium binary (Debian: apt-get install -y chromium; .ci/run installs it)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def serve(fixtures_dir: pathlib.Path, *args: str) -> ServerProcess:
    proc = ServerProcess(
        [
            "--model_name=half_plus_two",
            f"--model_base_path={fixtures_dir / 'saved_model_half_plus_two_cpu'}",
            *args,
        ],
        grpc=False,
    )
    try:
        proc.wait_ready()
    except BaseException:
        proc.cleanup()
        raise
    return proc


@pytest.fixture(scope="module")
def open_server(fixtures_dir: pathlib.Path) -> Iterator[ServerProcess]:
    proc = serve(fixtures_dir)
    yield proc
    proc.stop()
    proc.cleanup()


@pytest.fixture(scope="module")
def token_server(
    fixtures_dir: pathlib.Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    tokens = tmp_path_factory.mktemp("console_auth") / "tokens"
    tokens.write_text(TOKEN + "\n")
    proc = serve(fixtures_dir, f"--auth_token_file={tokens}")
    yield proc
    proc.stop()
    proc.cleanup()


class Console:
    """One page of the console, with the few steps the tests take."""

    def __init__(self, browser: Any, url: str, shots: pathlib.Path) -> None:
        self.page = browser.new_page(viewport={"width": 1100, "height": 900})
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        # The page runs under its own Content-Security-Policy (no eval, nothing from elsewhere); the
        # waits below use Playwright's locators, which need no eval either, so a violation shows.
        self.page.on(
            "console",
            lambda m: self.errors.append(m.text) if "Content Security Policy" in m.text else None,
        )
        self.url = url
        self.shots = shots

    def shot(self, name: str) -> pathlib.Path:
        path = self.shots / f"console-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 1000
        return path

    def pick(self, model: str) -> None:
        self.page.click(f"#models li[data-model='{model}']")
        self.page.wait_for_selector("#signatures table")

    def send(self, body: str | None = None) -> tuple[str, str]:
        """Submit the form (with `body` typed in, if given): (status badge text, response text)."""
        if body is not None:
            self.page.fill("#body", body)
        self.page.click("#send")
        expect(self.page.locator("#status")).to_have_text(re.compile(r"^\d{3} "))
        return self.page.text_content("#status") or "", self.page.text_content("#response") or ""

    def close(self) -> None:
        self.page.close()
        assert not self.errors, self.errors


def test_pick_predict_and_see_the_answer(
    browser: Any, open_server: ServerProcess, tmp_path: pathlib.Path
) -> None:
    console = Console(browser, open_server.url, tmp_path)
    page = console.page
    page.goto(open_server.url + "/")
    page.wait_for_selector("#models li[data-model='half_plus_two'] .state-AVAILABLE")
    assert page.text_content("#models li[data-model='half_plus_two'] .versions").strip() == "v123 AVAILABLE"
    console.shot("1-loaded")

    console.pick("half_plus_two")
    tables = page.inner_text("#signatures")
    assert "serving_default — tensorflow/serving/predict" in tables
    assert re.search(r"input\s+x\s+DT_FLOAT\s+\(-1, 1\)", tables), tables
    # The form starts from the document's example for serving_default, which the server answers.
    assert page.input_value("#example") == "serving_default (row)"
    assert page.input_value("#body") == '{"instances": [[1.0]]}'
    status, response = console.send()
    assert (status, response) == ("200 OK", '{"predictions": [[2.5]]}')

    status, response = console.send('{"instances": [1.0, 2.0, 5.0]}')
    assert status == "200 OK"
    assert response == '{"predictions": [2.5, 3.0, 4.5]}'
    assert re.fullmatch(r"\d+\.\d ms", page.text_content("#latency") or "")
    curl = page.input_value("#curl")
    assert curl == (
        "curl -X POST -d '{\"instances\": [1.0, 2.0, 5.0]}' "
        f"{open_server.url}/v1/models/half_plus_two:predict"
    )
    console.shot("2-predicted")

    # A broken request shows the server's own message, exactly.
    expected = httpx.post(open_server.url + "/v1/models/half_plus_two:predict", content=BROKEN).json()[
        "error"
    ]
    status, response = console.send(BROKEN)
    assert status == "400 Bad Request"
    assert response == expected
    assert "is not of expected type: float" in response
    assert page.get_attribute("#response", "class") == "error"
    console.shot("3-error")

    # Traffic from the server's own Prometheus metrics (the page polls it every 2 s).
    traffic = page.locator("#traffic [data-model='half_plus_two']")
    expect(traffic).to_contain_text(re.compile(r" [1-9][0-9]* served"), timeout=15000)
    console.shot("4-traffic")
    console.close()


def test_classify_example_and_version_choice(
    browser: Any, open_server: ServerProcess, tmp_path: pathlib.Path
) -> None:
    console = Console(browser, open_server.url, tmp_path)
    page = console.page
    page.goto(open_server.url + "/ui")
    console.pick("half_plus_two")
    page.select_option("#verb", "regress")
    page.select_option("#version", "123")
    page.select_option("#example", "regress_x_to_y")
    # The example keeps `1.0` a float feature (JSON.stringify would write 1: an int64 feature).
    assert page.input_value("#body") == (
        '{"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}, {"x": 2.0}]}'
    )
    assert page.input_value("#curl").endswith("/v1/models/half_plus_two/versions/123:regress")
    assert console.send() == ("200 OK", '{"results": [2.5, 3.0]}')
    console.close()


def test_with_a_token(browser: Any, token_server: ServerProcess, tmp_path: pathlib.Path) -> None:
    console = Console(browser, token_server.url, tmp_path)
    page = console.page
    page.goto(token_server.url + "/")
    page.wait_for_selector("#auth:not([hidden])")
    console.shot("1-token-asked")
    page.fill("#token", "wrong-token")
    page.click("#auth-form button")
    expect(page.locator("#auth-error")).to_have_text(auth.INVALID)
    console.shot("2-token-refused")
    page.fill("#token", TOKEN)
    page.click("#auth-form button")
    page.wait_for_selector("#models li[data-model='half_plus_two'] .state-AVAILABLE")
    console.pick("half_plus_two")
    status, response = console.send('{"instances": [1.0, 2.0, 5.0]}')
    assert (status, response) == ("200 OK", '{"predictions": [2.5, 3.0, 4.5]}')
    # The curl line names the token's variable, never the token itself.
    curl = page.input_value("#curl")
    assert "-H 'Authorization: Bearer $TOKEN'" in curl and TOKEN not in curl
    console.shot("3-token-predicted")
    # Asked once: a reload of the page keeps it for the session.
    page.reload()
    page.wait_for_selector("#models li[data-model='half_plus_two'] .state-AVAILABLE")
    assert page.is_hidden("#auth")
    console.close()


def test_disable_web_console(fixtures_dir: pathlib.Path) -> None:
    proc = serve(fixtures_dir, "--disable_web_console")
    try:
        for path in ("/", "/ui", "/ui/console.js"):
            r = httpx.get(proc.url + path)
            assert r.status_code == 404 and r.headers["content-type"] == "text/html", path
        assert httpx.get(proc.url + "/openapi.json").status_code == 200
    finally:
        proc.stop()
        proc.cleanup()
