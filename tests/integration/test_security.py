"""Security: the key on every protected route and method, keys never logged and compared in constant
time, CORS off by default and exact when configured, security headers on the HTML pages, JSON never
cached, a foreign `Host` (DNS rebinding) refused everywhere, the chat UI no way around the key, and
the two other key modes (no key required; a generated key).

Besides the shared `live_server`, three small servers of their own are started without waiting
for the models (`wait_healthy=False`, and no chat model), since none of these checks generates;
the `ALLOWED_HOSTS` test starts two fake-engine servers.
"""

from __future__ import annotations

import ast
import base64
import inspect
import json
import re
import uuid

import httpx
import pytest

from api import auth
from errors import AuthenticationFailed
from tests.conftest import API_KEY, start_server

METHODS = ["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"]
# Paths under the protected prefixes that no route documents: the key is still asked first.
EXTRA_PROTECTED = ["/v1", "/v1/", "/v1/unknown", "/v1//models", "/v1/models/", "/metrics/", "/metrics?format=prometheus"]
HTML_PAGES = ["/status", "/docs", "/redoc", "/chat/"]
FOREIGN = "http://evil.example"


def protected_paths(base_url: str) -> list[str]:
    """Every operation the OpenAPI document marks as needing the key, with its path filled in."""
    spec = httpx.get(base_url + "/openapi.json", timeout=30).json()
    paths = {re.sub(r"\{\w+\}", "some-dataset", path) for path, ops in spec["paths"].items() if any(op.get("security") for op in ops.values())}
    assert {"/v1/models", "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/metrics"} <= paths, paths
    return sorted(paths) + EXTRA_PROTECTED


def assert_refused(response: httpx.Response, method: str) -> None:
    assert response.status_code == 401, (method, str(response.url), response.status_code, response.text[:300])
    if method != "HEAD":
        assert response.json() == {"error": {"message": response.json()["error"]["message"], "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}
    assert not any(name.startswith("access-control-") for name in response.headers), response.headers


def no_models(tmp_path) -> dict[str, str]:
    """Settings for a server that loads no chat model (these tests never generate)."""
    empty = tmp_path / "no-models"
    empty.mkdir(exist_ok=True)
    return {"MODELS_DIR": str(empty)}


# ---- the key on every protected route -------------------------------------------------------


def test_every_protected_route_and_method_needs_the_key(live_server):
    with httpx.Client(base_url=live_server.base_url, timeout=30) as client:
        for path in protected_paths(live_server.base_url):
            for method in METHODS:
                assert_refused(client.request(method, path, headers={"Origin": FOREIGN}), method)


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer wrong",
        f"Bearer {API_KEY}x",
        f"Bearer {API_KEY[:-1]}",
        f"Bearer {API_KEY.upper()}",
        "Bearer",
        "Bearer null",
        API_KEY,
        f"Basic {base64.b64encode(f'{API_KEY}:'.encode()).decode()}",
        f"Token {API_KEY}",
        f"Bearer {API_KEY}\u00e9",
    ],
)
def test_a_wrong_or_malformed_key_is_401(live_server, authorization):
    with httpx.Client(base_url=live_server.base_url, timeout=30) as client:
        for method, path in (("GET", "/v1/models"), ("HEAD", "/metrics"), ("OPTIONS", "/v1/chat/completions"), ("POST", "/v1/embeddings")):
            headers = {"Authorization": authorization.encode("utf-8")}
            assert_refused(client.request(method, path, headers=headers), method)


def test_the_key_is_read_from_the_authorization_header_only(live_server):
    with httpx.Client(base_url=live_server.base_url, timeout=30) as client:
        assert_refused(client.get("/v1/models", params={"api_key": API_KEY}), "GET")
        assert_refused(client.get("/v1/models", headers={"X-API-Key": API_KEY}), "GET")
        assert_refused(client.get("/v1/models", headers={"Cookie": f"api_key={API_KEY}"}), "GET")
        assert client.get("/v1/models", headers={"Authorization": f"bearer {API_KEY}"}).status_code == 200  # scheme is case-insensitive


def test_with_the_key_head_and_options_answer_without_data(live_server):
    with httpx.Client(base_url=live_server.base_url, headers=live_server.headers(), timeout=30) as client:
        head = client.head("/v1/models")
        assert head.status_code == 200 and head.content == b""
        for path in ("/v1/models", "/v1/chat/completions", "/metrics"):
            options = client.options(path, headers={"Origin": FOREIGN, "Access-Control-Request-Method": "POST"})
            assert options.status_code in (200, 204) and options.content == b"", (path, options.status_code, options.text)
            assert "access-control-allow-origin" not in options.headers  # CORS is off


def test_options_without_a_key_leaks_nothing(live_server):
    with httpx.Client(base_url=live_server.base_url, timeout=30) as client:
        for path in ("/v1/models", "/v1/training/datasets", "/metrics"):
            preflight = {"Origin": FOREIGN, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
            response = client.options(path, headers=preflight)
            assert_refused(response, "OPTIONS")
            assert "data" not in response.text and "SmolLM2" not in response.text


def test_public_routes_need_no_key(live_server):
    with httpx.Client(base_url=live_server.base_url, timeout=30) as client:
        for path in ("/", "/health", "/status", "/docs", "/redoc", "/openapi.json", "/chat/"):
            assert client.get(path).status_code == 200, path


# ---- the chat UI is no way around the key ---------------------------------------------------


def _ui_respond(base_url: str, key: str) -> list[dict]:
    """Call the chat page's `respond` event through Gradio's own HTTP queue, as a script could."""
    with httpx.Client(base_url=base_url, timeout=120) as client:
        config = client.get("/chat/config").json()
        fn_index = next(d["id"] for d in config["dependencies"] if d["api_name"] == "respond")
        session = uuid.uuid4().hex[:12]
        chat = [{"role": "user", "content": [{"type": "text", "text": "Say hi."}]}]
        joined = client.post(
            "/chat/gradio_api/queue/join",
            json={"data": [chat, key, None, "Be brief.", 0, 2], "event_data": None, "fn_index": fn_index, "trigger_id": None, "session_hash": session},
        )
        assert joined.status_code == 200, joined.text
        with client.stream("GET", "/chat/gradio_api/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    message = json.loads(line[5:])
                    if message.get("msg") == "process_completed":
                        assert message.get("success", True), message
                        return message["output"]["data"][0]
    raise AssertionError("no answer from the chat UI")


def _completion_tokens(server) -> float:
    return httpx.get(server.base_url + "/metrics", headers=server.headers(), timeout=30).json()["tokens"]["completion"]


@pytest.mark.parametrize("key", ["", "sk-wrong-ui-key"])
def test_the_chat_ui_does_not_generate_without_the_key(live_server, key):
    before = _completion_tokens(live_server)
    chat = _ui_respond(live_server.base_url, key)
    answer = chat[-1]["content"][0]["text"]
    assert chat[-1]["role"] == "assistant" and "API key" in answer, chat
    assert _completion_tokens(live_server) == before


def test_the_chat_ui_generates_with_the_key(live_server):
    chat = _ui_respond(live_server.base_url, API_KEY)
    assert chat[-1]["role"] == "assistant" and "API key" not in chat[-1]["content"][0]["text"], chat


def test_the_chat_ui_serves_no_files_and_takes_no_uploads(live_server):
    with httpx.Client(base_url=live_server.base_url, timeout=30) as client:
        for path in ("/etc/passwd", str(__import__("pathlib").Path(auth.__file__).resolve())):
            assert client.get(f"/chat/gradio_api/file={path}").status_code in (403, 404)
        for empty in (b"", b"hello"):  # a zero-byte file passed Gradio's max_file_size=0
            upload = client.post("/chat/gradio_api/upload", files={"files": ("a.txt", empty)})
            assert upload.status_code == 404, upload.text  # not forwarded to Gradio (PAGE_ROUTES)


# ---- keys never logged, compared in constant time -------------------------------------------


def test_keys_never_appear_in_the_log_or_in_answers(live_server):
    wrong = "sk-wrong-" + uuid.uuid4().hex
    with httpx.Client(base_url=live_server.base_url, timeout=120) as client:
        for key in (API_KEY, wrong):
            headers = {"Authorization": f"Bearer {key}"}
            for response in (
                client.get("/v1/models", headers=headers),
                client.get("/metrics", headers=headers),
                client.post("/v1/embeddings", headers=headers, json={"input": "x"}),
                client.post("/v1/chat/completions", headers=headers, json={"messages": []}),
                client.post("/v1/completions", headers=headers, content=b"{broken"),
                client.get("/v1/training/datasets/..", headers=headers),
            ):
                assert key not in response.text
    _ui_respond(live_server.base_url, wrong)
    log = live_server.log()
    assert API_KEY not in log and wrong not in log


def test_keys_are_compared_in_constant_time():
    source = inspect.getsource(auth)
    assert "hmac.compare_digest" in source
    # No `==`, `!=` or `in` between a presented key and the configured ones.
    tree = ast.parse(inspect.getsource(auth.check_key))
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            assert not names & {"presented", "candidate", "key", "api_keys"}, ast.unparse(node)


def test_every_configured_key_is_compared_with_no_early_exit(monkeypatch):
    calls = []
    real = auth.hmac.compare_digest
    monkeypatch.setattr(auth.hmac, "compare_digest", lambda a, b: calls.append(b) or real(a, b))
    keys = ["sk-one", "sk-two", "sk-three"]
    auth.check_key(keys, True, "sk-one")  # matches the first; the others are still compared
    assert calls == [k.encode() for k in keys]
    calls.clear()
    with pytest.raises(AuthenticationFailed):
        auth.check_key(keys, True, "sk-nope")
    assert len(calls) == 3


# ---- security headers on the HTML pages -----------------------------------------------------


@pytest.mark.parametrize("path", HTML_PAGES)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_html_pages_carry_security_headers(live_server, path, method):
    response = httpx.request(method, live_server.base_url + path, timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers.get("x-content-type-options") == "nosniff", response.headers
    csp = response.headers.get("content-security-policy", "")
    assert response.headers.get("x-frame-options", "").upper() == "DENY" or "frame-ancestors 'none'" in csp, response.headers


def test_chat_ui_assets_and_api_are_nosniff_too(live_server):
    response = httpx.get(live_server.base_url + "/chat/config", timeout=30)
    assert response.headers.get("x-content-type-options") == "nosniff"


@pytest.mark.parametrize("path", HTML_PAGES)
def test_html_pages_cannot_be_framed(live_server, path):
    response = httpx.get(live_server.base_url + path, timeout=30)
    assert response.headers.get("x-frame-options") == "DENY", response.headers
    assert "frame-ancestors 'none'" in response.headers.get("content-security-policy", ""), response.headers


def test_json_answers_are_never_cached_or_sniffed(live_server):
    """Data (and errors) must not stay in a browser's cache for the next user, nor be read as another type."""
    key = live_server.headers()
    with httpx.Client(base_url=live_server.base_url, timeout=30) as client:
        for response in (
            client.get("/"),
            client.get("/health"),
            client.get("/openapi.json"),
            client.get("/v1/models", headers=key),
            client.get("/v1/models"),  # 401
            client.get("/v1/training/datasets", headers=key),
            client.get("/metrics", headers=key),
            client.get("/metrics?format=prometheus", headers=key),  # not JSON, but data behind the key
            client.get("/no-such-page"),  # 404
            client.post("/v1/embeddings", headers=key, json={"input": "hello"}),
            client.post("/v1/embeddings", headers=key, content=b'{"input": "hello"}'),  # 415
            client.get("/chat/config"),
        ):
            where = (response.request.method, str(response.request.url), response.status_code)
            assert response.headers.get("x-content-type-options") == "nosniff", (where, response.headers)
            assert response.headers.get("cache-control") == "no-store", (where, response.headers)


# ---- DNS rebinding: the Host header ---------------------------------------------------------

REBOUND = ["evil.example", "evil.example:8000", "localhost.evil.example", "127.0.0.1.nip.io"]
REBINDING_PATHS = ["/status", "/chat/", "/chat/config", "/v1/models", "/", "/docs", "/no-such-page"]


def port_of(server) -> int:
    return int(server.base_url.rsplit(":", 1)[1])


@pytest.mark.parametrize("host", REBOUND)
def test_a_rebinding_host_is_refused_on_every_route(live_server, host):
    """A page of evil.example whose name now resolves to 127.0.0.1 reaches the server with its own Host."""
    with httpx.Client(base_url=live_server.base_url, timeout=30) as client:
        for path in REBINDING_PATHS:
            for headers in ({}, live_server.headers()):  # refused before the key is even looked at
                response = client.get(path, headers={"Host": host, **headers})
                assert response.status_code == 421, (host, path, response.status_code, response.text[:300])
                assert response.json() == {"error": {
                    "message": f"Host {host!r} is not allowed; add it to ALLOWED_HOSTS",
                    "type": "invalid_request_error", "param": None, "code": "host_not_allowed"}}
        post = client.post("/v1/embeddings", json={"input": "x"}, headers={"Host": host, **live_server.headers()})
        assert post.status_code == 421 and "ALLOWED_HOSTS" in post.text
        head = client.head("/chat/", headers={"Host": host})
        assert head.status_code == 421


def test_localhost_and_loopback_hosts_are_allowed_with_and_without_the_port(live_server):
    port = port_of(live_server)
    with httpx.Client(base_url=live_server.base_url, timeout=30) as client:
        for host in ("localhost", f"localhost:{port}", "127.0.0.1", f"127.0.0.1:{port}", "[::1]", f"[::1]:{port}"):
            for path in REBINDING_PATHS[:-1]:
                headers = {"Host": host, **(live_server.headers() if path.startswith("/v1") else {})}
                response = client.get(path, headers=headers)
                assert response.status_code == 200, (host, path, response.status_code, response.text[:300])


def test_allowed_hosts_adds_a_name_and_star_turns_the_check_off(tmp_path):
    from tests.helpers.launch import start_fake_server

    named = start_fake_server(tmp_path / "named", ALLOWED_HOSTS="llm.internal, Proxy.Example:443")
    anything = start_fake_server(tmp_path / "star", ALLOWED_HOSTS="*")
    try:
        for host in ("llm.internal", f"llm.internal:{port_of(named)}", "proxy.example"):
            assert httpx.get(named.base_url + "/health", headers={"Host": host}, timeout=30).status_code == 200, host
        assert httpx.get(named.base_url + "/health", headers={"Host": "localhost"}, timeout=30).status_code == 200
        assert httpx.get(named.base_url + "/health", headers={"Host": "evil.example"}, timeout=30).status_code == 421
        assert httpx.get(anything.base_url + "/health", headers={"Host": "evil.example"}, timeout=30).status_code == 200
    finally:
        named.stop()
        anything.stop()


# ---- CORS -----------------------------------------------------------------------------------


def test_cors_is_off_by_default(live_server):
    with httpx.Client(base_url=live_server.base_url, timeout=30) as client:
        for origin in (FOREIGN, "http://a.example", "null"):
            preflight = client.options("/v1/models", headers={"Origin": origin, "Access-Control-Request-Method": "GET"})
            actual = client.get("/v1/models", headers={"Origin": origin, **live_server.headers()})
            for response in (preflight, actual):
                assert not any(name.startswith("access-control-") for name in response.headers), response.headers


@pytest.fixture(scope="module")
def cors_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cors")
    server = start_server(tmp, wait_healthy=False, CORS_ORIGINS="http://a.example", **no_models(tmp))
    yield server
    server.stop()


def test_cors_allows_only_the_configured_origin(cors_server):
    allowed = "http://a.example"
    with httpx.Client(base_url=cors_server.base_url, timeout=30) as client:
        request_headers = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type"}
        preflight = client.options("/v1/embeddings", headers={"Origin": allowed, **request_headers})
        assert preflight.status_code in (200, 204), preflight.text
        assert preflight.headers.get("access-control-allow-origin") == allowed
        assert preflight.content == b""  # a preflight carries no key and gets no data
        actual = client.get("/v1/models", headers={"Origin": allowed, **cors_server.headers()})
        assert actual.status_code == 200 and actual.headers.get("access-control-allow-origin") == allowed
        for origin in (FOREIGN, "http://a.example.evil.example", "https://a.example", "null"):
            preflight = client.options("/v1/embeddings", headers={"Origin": origin, **request_headers})
            assert "access-control-allow-origin" not in preflight.headers, (origin, preflight.headers)
            actual = client.get("/v1/models", headers={"Origin": origin, **cors_server.headers()})
            assert "access-control-allow-origin" not in actual.headers, (origin, actual.headers)


def test_cors_does_not_replace_the_key(cors_server):
    with httpx.Client(base_url=cors_server.base_url, timeout=30) as client:
        response = client.get("/v1/models", headers={"Origin": "http://a.example"})
        assert response.status_code == 401
        options = client.options("/v1/models", headers={"Origin": "http://a.example"})  # not a preflight
        assert options.status_code == 401


# ---- the other key modes --------------------------------------------------------------------


def test_require_api_key_false_lets_requests_through(tmp_path):
    server = start_server(tmp_path, wait_healthy=False, REQUIRE_API_KEY="false", **no_models(tmp_path))
    try:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            assert client.get("/v1/models").status_code == 200
            assert client.get("/metrics").status_code == 200
            assert client.get("/v1/training/datasets", headers={"Authorization": "Bearer anything"}).status_code == 200
    finally:
        server.stop()


def test_no_keys_configured_means_a_generated_key_printed_once(tmp_path):
    server = start_server(tmp_path, wait_healthy=False, API_KEYS="", REQUIRE_API_KEY="true", **no_models(tmp_path))
    try:
        found = re.findall(r"generated this key for this run: (\S+)", server.log())
        assert len(found) == 1, server.log()[-2000:]
        key = found[0]
        assert len(key) >= 32
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            assert client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
            assert client.get("/v1/models").status_code == 401
            assert client.get("/v1/models", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 401
            assert client.get("/v1/models", headers={"Authorization": "Bearer"}).status_code == 401
        assert server.log().count(key) == 1  # printed once, and never again after use
    finally:
        server.stop()
