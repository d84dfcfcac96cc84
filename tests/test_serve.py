"""`textgen.serve`: every route and every bad request, over real HTTP to a real server process."""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli, start_server


def post(
    url: str,
    body,
    *,
    raw: bytes | None = None,
    timeout: float = 60,
    content_type: str | None = "application/json",
    headers: dict | None = None,
) -> tuple[int, dict]:
    """POSTs JSON (or raw bytes); returns (status, parsed JSON body); `headers` gets the
    response's headers (lower-case names) when given."""
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST")
    if content_type is not None:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            (headers if headers is not None else {}).update(_lower(response.headers))
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        (headers if headers is not None else {}).update(_lower(e.headers))
        return e.code, json.loads(e.read())


def _lower(headers) -> dict:
    return {k.lower(): v for k, v in headers.items()}


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.read()


def health(url: str) -> dict:
    return json.loads(get(f"{url}/healthz")[1])


def sse_events(payload: str) -> list[tuple[str, dict]]:
    """(event, data) pairs of a Server-Sent Events body."""
    out = []
    for block in payload.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((fields.get("event", "message"), json.loads(fields["data"])))
    return out


@pytest.fixture(scope="module")
def url(server) -> str:
    return server[0]


def test_generate(url: str) -> None:
    status, body = post(f"{url}/v1/generate", {"prompt": "Café ", "length": 50, "seed": 3,
                                               "temperature": 0.8, "num_samples": 3})  # fmt: skip
    assert status == 200
    assert len(body["texts"]) == 3 and all(len(t) == 50 for t in body["texts"])
    assert len(set(body["texts"])) == 3  # samples of one request differ
    assert body["tokens"] == [50, 50, 50] and body["seed"] == 3 and body["seconds"] > 0
    again = post(f"{url}/v1/generate", {"prompt": "Café ", "length": 50, "seed": 3,
                                        "temperature": 0.8, "num_samples": 3})[1]  # fmt: skip
    assert again["texts"] == body["texts"]


def test_texts_equal_the_exports(url: str, small_export: Path) -> None:
    import tensorflow as tf

    model = tf.saved_model.load(str(small_export))
    expected = model.signatures["serving_default"](
        prompt=tf.constant(["The ", ""]), length=tf.constant([40, 30]),
        temperature=tf.constant([0.0, 1.1]), top_k=tf.constant([0, 4]),
        top_p=tf.constant([1.0, 0.9]), seed=tf.constant([0, 11], tf.int64),
        stop=tf.constant([[""], [""]]), stop_at_end=tf.constant([True, True]),
    )["text"].numpy()  # fmt: skip
    greedy = post(f"{url}/v1/generate", {"prompt": "The ", "length": 40, "temperature": 0})[1]
    sampled = {"prompt": "", "length": 30, "temperature": 1.1, "top_k": 4, "top_p": 0.9}
    drawn = post(f"{url}/v1/generate", {**sampled, "seed": 11})[1]
    assert [greedy["texts"][0], drawn["texts"][0]] == [t.decode() for t in expected]


def test_stream(url: str) -> None:
    request = urllib.request.Request(
        f"{url}/v1/stream", data=json.dumps({"prompt": "ab", "length": 300, "seed": 4}).encode(),
        method="POST", headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = sse_events(response.read().decode())
    texts = [data["text"] for kind, data in events if kind == "message"]
    assert len(texts) > 1  # it arrived in pieces
    assert events[-1][0] == "done" and events[-1][1]["tokens"] == [300]
    whole = post(f"{url}/v1/generate", {"prompt": "ab", "length": 300, "seed": 4})[1]
    assert "".join(texts) == whole["texts"][0]


def test_tf_serving_predict(url: str) -> None:
    instances = [
        {"prompt": "The ", "length": 20, "temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 1},
        {"prompt": "a", "length": 7, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "seed": 2},
    ]
    status, body = post(f"{url}/v1/models/textgen:predict", {"instances": instances})
    assert status == 200 and [p["tokens"] for p in body["predictions"]] == [20, 7]
    assert [len(p["text"]) for p in body["predictions"]] == [20, 7]
    columns = {k: [i[k] for i in instances] for k in instances[0]}
    status, outputs = post(f"{url}/v1/models/textgen:predict", {"inputs": columns})
    assert status == 200
    assert outputs["outputs"]["text"] == [p["text"] for p in body["predictions"]]


def test_stop_strings_cut_the_text_and_say_why(url: str) -> None:
    body = {"prompt": "The ", "length": 300, "seed": 9, "num_samples": 3}
    free = post(f"{url}/v1/generate", body)[1]
    assert free["stopped"] == ["length"] * 3 and free["tokens"] == [300] * 3
    stop = ["e ", "a"]
    status, cut = post(f"{url}/v1/generate", {**body, "stop": stop})
    assert status == 200
    for whole, text, reason, tokens in zip(free["texts"], cut["texts"], cut["stopped"],
                                           cut["tokens"], strict=True):  # fmt: skip
        first = min((whole.find(s), s) for s in stop if s in whole)
        assert reason == "stop" and text == whole[: first[0]]  # cut before the stop string
        assert tokens == first[0] + len(first[1])  # a char model: the stop string counted
    assert (
        post(f"{url}/v1/generate", {**body, "stop": "e "})[1]["texts"][0]
        == (free["texts"][0].split("e ")[0])
    )  # one string is a list of one
    request = urllib.request.Request(
        f"{url}/v1/stream", data=json.dumps({**body, "stop": stop}).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=60) as response:
        events = sse_events(response.read().decode())
    done = events[-1][1]
    assert events[-1][0] == "done"
    assert (done["stopped"], done["tokens"]) == (cut["stopped"], cut["tokens"])
    streamed = ["".join(d["text"] for k, d in events if k == "message" and d["index"] == i)
                for i in range(3)]  # fmt: skip
    assert streamed == cut["texts"]


def test_predict_takes_stop_strings_padded_as_the_export(url: str) -> None:
    instances = [
        {"prompt": "The ", "length": 300, "seed": 9, "stop": ["e ", "a", ""]},
        {"prompt": "The ", "length": 30, "seed": 9, "stop": ["", ""], "stop_at_end": True},
    ]
    status, body = post(f"{url}/v1/models/textgen:predict", {"instances": instances})
    assert status == 200, body
    [first, second] = body["predictions"]
    assert first["stopped"] == "stop" and "e " not in first["text"] and "a" not in first["text"]
    assert (second["stopped"], second["tokens"], len(second["text"])) == ("length", 30, 30)
    columns = {k: [i.get(k, True) for i in instances] for k in instances[1]}
    status, outputs = post(f"{url}/v1/models/textgen:predict", {"inputs": columns})
    assert status == 200 and outputs["outputs"]["stopped"] == ["stop", "length"]
    assert outputs["outputs"]["text"] == [first["text"], second["text"]]


@pytest.fixture(scope="module")
def docs_url(docs_run: Path):
    """The documents run served from its run dir (its index there: novelty works)."""
    with start_server(docs_run) as (url, _):
        yield url


def test_novelty_of_a_gone_index_is_a_400(docs_url: str, docs_run: Path) -> None:
    # The first novelty request to this server (it opens the index on first use).
    index = docs_run.parent / "run-index"
    moved = index.rename(index.with_name("run-index-away"))
    try:
        status, answer = post(f"{docs_url}/v1/generate", {"prompt": "A", "novelty": True})
        assert status == 400 and "index, which is gone; rebuild it with" in answer["error"]
        assert "\n" not in answer["error"]
    finally:
        moved.rename(index)
    status, answer = post(f"{docs_url}/v1/generate", {"prompt": "A", "novelty": True})
    assert status == 200 and len(answer["novelty"]) == 1


def test_a_documents_run_stops_at_the_end_and_reports_novelty(docs_url: str) -> None:
    body = {"prompt": "", "length": 2000, "seed": 3, "num_samples": 4, "novelty": True}
    status, answer = post(f"{docs_url}/v1/generate", body)
    assert status == 200 and answer["stopped"] == ["end"] * 4
    for text, tokens, report in zip(answer["texts"], answer["tokens"], answer["novelty"],
                                    strict=True):  # fmt: skip
        assert text and "\n" not in text and tokens == len(text) + 1  # one name, its end
        assert report["longest"] <= len(text) and "in_training" in report
        assert report["longest_span"][1] - report["longest_span"][0] == report["longest"]
    assert any(r["in_training"] for r in answer["novelty"])  # eight names: some come back
    going = post(f"{docs_url}/v1/generate", {**body, "stop_at_end": False, "length": 100})[1]
    assert going["stopped"] == ["length"] * 4 and all(t.count("\n") >= 3 for t in going["texts"])
    status, predicted = post(f"{docs_url}/v1/models/textgen:predict",
                             {"instances": [{"prompt": "Ad", "novelty": True}]})  # fmt: skip
    assert status == 200 and predicted["predictions"][0]["stopped"] == "end"
    [prediction] = predicted["predictions"]
    assert prediction["novelty"]["longest_text"] == prediction["text"]  # "a": found there


def test_page_and_healthz(url: str) -> None:
    status, page = get(f"{url}/")
    assert status == 200 and b'id="generate"' in page and b"/v1/stream" in page
    assert health(url)["status"] == "ok"


def test_concurrent_requests_share_calls(url: str) -> None:
    before = health(url)["calls"]
    body = {"prompt": "x", "length": 200, "temperature": 1.0}
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(lambda s: post(f"{url}/v1/generate", {**body, "seed": s}), range(16))
        )
    assert all(status == 200 for status, _ in results)
    calls = health(url)["calls"] - before
    assert calls < 16 * 4  # alone, each request would take 4 calls of <= 64 tokens


BAD = [
    ({"length": 5}, "prompt is required"),
    ({"prompt": 5}, "prompt must be a string"),
    ({"prompt": "a", "length": "5"}, "length must be an integer"),
    ({"prompt": "a", "length": 0}, "length must be in [1, 1000000]"),
    ({"prompt": "a", "length": 1000001}, "length must be in"),
    ({"prompt": "a", "length": True}, "length must be an integer"),
    ({"prompt": "a", "temperature": -0.1}, "temperature must be >= 0"),
    ({"prompt": "a", "temperature": "hot"}, "temperature must be a number"),
    ({"prompt": "a", "temperature": 1e300}, "temperature must be 0 or in [1e-30, 1e+30]"),
    ({"prompt": "a", "temperature": 1e-45}, "temperature must be 0 or in"),
    ({"prompt": "a", "top_p": 1e-50}, "top_p must be in (0, 1], got 1e-50 (0 in float32)"),
    ({"prompt": "a", "top_p": 0}, "top_p must be in (0, 1]"),
    ({"prompt": "a", "top_p": 1.5}, "top_p must be in (0, 1]"),
    ({"prompt": "a", "top_k": -1}, "top_k must be >= 0"),
    ({"prompt": "a", "top_k": 2**31}, "top_k must be in [0, 2147483647]"),
    ({"prompt": "a", "num_samples": 5}, "num_samples must be in [1, 4]"),
    ({"prompt": "a", "seed": 2**64}, "seed must be in"),
    ({"prompt": "a", "length": -(10**50)}, "an integer of 51 digits"),
    ({"prompt": "a", "lenght": 5}, "unknown field 'lenght'"),
    ({"prompt": "a§bß§"}, "'§' (U+00A7) 'ß' (U+00DF)"),
    ({"prompt": "a", "allow_unknown": "yes"}, "allow_unknown must be true or false"),
    ([1, 2], "must be a JSON object"),
    ({"prompt": "a", "stop": ["a"] * 9}, "stop: at most 8 stop strings, got 9"),
    ({"prompt": "a", "stop": ["x" * 65]}, "stop: a stop string must be at most 64 characters"),
    ({"prompt": "a", "stop": [""]}, "a stop string must be a non-empty string"),
    ({"prompt": "a", "stop": [5]}, "stop must be a list of strings"),
    ({"prompt": "a", "stop": {"a": 1}}, "stop must be a list of strings"),
    ({"prompt": "a", "stop_at_end": "yes"}, "stop_at_end must be true or false"),
    ({"prompt": "a", "novelty": 1}, "novelty must be true or false"),
    ({"prompt": "a", "novelty": True}, "novelty needs a run dir whose index exists"),
]


@pytest.mark.parametrize("route", ["generate", "stream"])
@pytest.mark.parametrize("body, message", BAD, ids=[m for _, m in BAD])
def test_bad_requests(url: str, route: str, body, message: str) -> None:
    status, answer = post(f"{url}/v1/{route}", body)
    assert status == 400 and list(answer) == ["error"]
    assert message in answer["error"] and "\n" not in answer["error"]


def test_bad_bodies_and_routes(url: str) -> None:
    for raw, status, message in [
        (b"{not json", 400, "invalid JSON"),
        (b"\xff\xfe", 400, "invalid JSON: not UTF-8"),
        (json.dumps({"prompt": "a" * 70_000}).encode(), 413, "over 64 KiB"),
        (b'{"prompt": "\\ud800"}', 400, "lone surrogate"),
        (b'{"prompt": "a", "seed": ' + b"9" * 5000 + b"}", 400, "an integer of 5000 digits"),
        (b'{"prompt": "a", "length": -' + b"9" * 5000 + b"}", 400, "an integer of 5000 digits"),
        (b"[" * 20_000 + b"]" * 20_000, 400, "nested 20000 deep"),
        (b'{"a":' * 10_000 + b"1" + b"}" * 10_000, 400, "nested 10000 deep"),
        (b'{"prompt": "' + b"[" * 30 + b'", "allow_unknown": true}', 200, ""),  # in a string
        (b'{"prompt": "a", "length": 2, "top_p": NaN}', 400, "top_p must be finite"),
        (b'{"prompt": "a", "temperature": 1e999}', 400, "temperature must be finite"),
    ]:
        got, answer = post(f"{url}/v1/generate", None, raw=raw)
        assert got == status and message in answer.get("error", ""), answer
        assert got == 200 or list(answer) == ["error"]
    for content_type in (None, "text/plain", "application/x-www-form-urlencoded"):
        got, answer = post(f"{url}/v1/generate", {"prompt": "a"}, content_type=content_type)
        assert got == 415 and "Content-Type: application/json" in answer["error"], answer
    got, answer = post(f"{url}/v1/generate", {"prompt": "a", "length": 3},
                       content_type="application/json; charset=utf-8")  # fmt: skip
    assert got == 200
    for body, message in [
        ({"instances": []}, "non-empty list"),
        ({"rows": []}, "instances"),
        ({"instances": [{"prompt": "a", "top_p": 2}]}, "top_p"),
        ({"inputs": {"prompt": ["a", "b"], "length": [3]}}, "same number"),
        ({"instances": [{"prompt": "a", "num_samples": 4}]}, "unknown field 'num_samples'"),
    ]:
        status, answer = post(f"{url}/v1/models/textgen:predict", body)
        assert status == 400 and message in answer["error"], answer
    with pytest.raises(urllib.error.HTTPError) as e:
        get(f"{url}/v1/nothing")
    assert e.value.code == 404 and json.loads(e.value.read()) == {"error": "Not Found"}
    with pytest.raises(urllib.error.HTTPError) as e:
        get(f"{url}/v1/generate")
    assert e.value.code == 405 and list(json.loads(e.value.read())) == ["error"]


def test_unknown_characters_can_be_substituted(url: str) -> None:
    body = {"prompt": "a§b", "length": 10, "allow_unknown": True}
    status, answer = post(f"{url}/v1/generate", body)
    assert status == 200 and len(answer["texts"][0]) == 10


def test_bad_requests_leave_the_server_whole(url: str, server) -> None:
    def rss_kb() -> int:
        status = Path(f"/proc/{server[1].pid}/status").read_text()
        return int(
            next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))
        )

    def burst() -> None:
        for i in range(100):
            body, _ = BAD[i % len(BAD)]
            assert post(f"{url}/v1/generate", body)[0] == 400
            assert post(f"{url}/v1/generate", None, raw=b"x" * (i * 700))[0] in (400, 413)

    burst()  # warm up allocations
    before = rss_kb()
    burst()
    burst()
    assert rss_kb() - before < 10_000  # KiB: no growth per bad request
    assert server[1].poll() is None and health(url)["status"] == "ok"


def test_a_client_that_leaves_mid_stream_stops_its_sampling(url: str) -> None:
    before = health(url)
    host, port = urllib.parse.urlsplit(url).netloc.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    body = json.dumps({"prompt": "a", "length": 1_000_000})  # minutes of sampling
    connection.request("POST", "/v1/stream", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200 and response.readline().startswith(b"data: ")
    connection.sock.shutdown(socket.SHUT_RDWR)
    connection.close()
    for _ in range(600):
        now = health(url)
        if now["cancelled_requests"] > before["cancelled_requests"]:
            break
        time.sleep(0.05)
    assert now["cancelled_requests"] == before["cancelled_requests"] + 1
    assert now["active_rows"] == 0
    calls = now["calls"]
    time.sleep(0.3)
    assert health(url)["calls"] == calls  # nothing samples any more


def test_a_client_that_leaves_generate_frees_its_row(url: str) -> None:
    before = health(url)
    connection = connect(url)
    body = json.dumps({"prompt": "a", "length": 1_000_000})  # minutes of sampling
    connection.request("POST", "/v1/generate", body, {"Content-Type": "application/json"})
    assert wait_for(url, lambda h: h["active_rows"] == 1)
    connection.sock.shutdown(socket.SHUT_RDWR)
    connection.close()
    now = wait_for(url, lambda h: h["cancelled_requests"] > before["cancelled_requests"])
    assert now["cancelled_requests"] == before["cancelled_requests"] + 1
    assert now["active_rows"] == 0


def test_long_prompts_read_in_pieces_give_the_exports_text(url: str, small_export: Path) -> None:
    import tensorflow as tf

    prompt = "The cat sat on the mat. " * 1000  # 24,000 tokens: ~90 blocks
    model = tf.saved_model.load(str(small_export))
    expected = model.signatures["serving_default"](
        prompt=tf.constant([prompt]), length=tf.constant([60]), temperature=tf.constant([0.9]),
        top_k=tf.constant([0]), top_p=tf.constant([1.0]), seed=tf.constant([8], tf.int64),
        stop=tf.constant([[""]]), stop_at_end=tf.constant([True]),
    )["text"].numpy()[0].decode()  # fmt: skip
    body = {"prompt": prompt, "length": 60, "temperature": 0.9, "seed": 8}
    with ThreadPoolExecutor(2) as pool:  # a short request shares the calls meanwhile
        short = pool.submit(post, f"{url}/v1/generate", {"prompt": "a", "length": 300})
        status, answer = post(f"{url}/v1/generate", body)
        assert short.result()[0] == 200
    assert status == 200 and answer["texts"] == [expected]


TIGHT = ("--max-batch", "1", "--max-samples", "1", "--max-queue", "1", "--timeout", "4",
         "--header-timeout", "1")  # fmt: skip


def test_overload_is_a_503_with_retry_after(small_export: Path) -> None:
    with start_server(small_export, *TIGHT) as (url, _):
        busy = connect(url)  # holds the only row
        body = json.dumps({"prompt": "a", "length": 1_000_000})
        busy.request("POST", "/v1/generate", body, {"Content-Type": "application/json"})
        assert wait_for(url, lambda h: h["active_rows"] == 1)
        with ThreadPoolExecutor(1) as pool:
            queued = pool.submit(post, f"{url}/v1/generate", {"prompt": "a", "length": 5})
            wait_for(url, lambda h: h["waiting_requests"] == 1)
            headers: dict = {}
            status, answer = post(f"{url}/v1/generate", {"prompt": "b"}, headers=headers)
            assert status == 503 and "busy" in answer["error"] and headers["retry-after"] == "1"
            # A request that arrives whole is refused at the door; one whose body comes later
            # is refused by the app once read: the same 503, JSON and Retry-After, either way.
            assert "its 2 places (queue and batch)" in refused_raw(url, split=False)["error"]
            assert "1 requests are waiting" in refused_raw(url, split=True)["error"]
            busy.sock.shutdown(socket.SHUT_RDWR)  # leaving frees the row for the queued one
            busy.close()
            assert queued.result()[0] == 200
        status, answer = post(f"{url}/v1/generate", {"prompt": "a", "length": 1_000_000})
        assert status == 503 and "--timeout" in answer["error"]  # after 4 s
        assert health(url)["timed_out_requests"] == 1 and health(url)["refused_requests"] == 3


def refused_raw(url: str, *, split: bool) -> dict:
    """POSTs a request over a raw socket (headers and body in one write, or 0.3 s apart); the
    body of its 503, whose headers must carry Retry-After."""
    host, port = urllib.parse.urlsplit(url).netloc.split(":")
    body = b'{"prompt": "c"}'
    head = (b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body))  # fmt: skip
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        if split:
            sock.sendall(head)
            time.sleep(0.3)
            sock.sendall(body)
        else:
            sock.sendall(head + body)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head_out, _, payload = raw.partition(b"\r\n\r\n")
    lines = head_out.decode("latin-1").lower().split("\r\n")
    assert lines[0].startswith("http/1.1 503") and "retry-after: 1" in lines
    assert "content-type: application/json" in lines
    return json.loads(payload)


def test_keep_alive_requests_and_slow_headers(small_export: Path) -> None:
    with start_server(small_export, *TIGHT) as (url, _):
        reused = connect(url)  # one connection, more requests than the server has places
        for _ in range(4):
            reused.request("POST", "/v1/generate", json.dumps({"prompt": "a", "length": 3}),
                           {"Content-Type": "application/json"})  # fmt: skip
            response = reused.getresponse()
            assert response.status == 200 and len(json.loads(response.read())["texts"][0]) == 3
        host, port = urllib.parse.urlsplit(url).netloc.split(":")
        with socket.create_connection((host, int(port)), timeout=30) as slow:
            slow.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: x\r\n")  # and nothing more
            started = time.monotonic()
            assert slow.recv(1024) == b""  # closed by the server: headers past --header-timeout
            assert time.monotonic() - started < 25
        assert post(f"{url}/v1/generate", {"prompt": "a", "length": 2})[0] == 200


def connect(url: str) -> http.client.HTTPConnection:
    host, port = urllib.parse.urlsplit(url).netloc.split(":")
    return http.client.HTTPConnection(host, int(port), timeout=30)


def wait_for(url: str, ready, seconds: float = 30) -> dict:
    """/healthz once `ready(it)` holds (or after `seconds`)."""
    deadline = time.monotonic() + seconds
    while not ready(now := health(url)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return now


def test_serve_cli_bad_input(tmp_path: Path, url: str) -> None:
    assert_one_line_error(run_cli("textgen.serve", tmp_path / "nope"), "no such run dir")
    port = urllib.parse.urlsplit(url).port
    line = assert_one_line_error(run_cli("textgen", "serve", tmp_path, "--port", port))
    assert "cannot listen" in line and f"127.0.0.1:{port}" in line
    assert_one_line_error(run_cli("textgen.serve", tmp_path, "--max-length", "0"), "max-length")
    assert_one_line_error(run_cli("textgen.serve", tmp_path, "--max-queue", "0"), "max-queue")
    assert_one_line_error(run_cli("textgen.serve", tmp_path, "--timeout", "0"), "--timeout")


def test_binds_to_loopback_by_default(server) -> None:
    assert server[0].startswith("http://127.0.0.1:")


def test_a_sentencepiece_model_serves_and_streams_whole_characters(sp_export: Path) -> None:
    import tensorflow as tf

    model = tf.saved_model.load(str(sp_export))
    expected = model.signatures["serving_default"](
        prompt=tf.constant(["Zürich ∮ "]), length=tf.constant([200]),
        temperature=tf.constant([1.3]), top_k=tf.constant([0]),
        top_p=tf.constant([1.0]), seed=tf.constant([21], tf.int64),
        stop=tf.constant([[""]]), stop_at_end=tf.constant([True]),
    )["text"].numpy()[0].decode()  # fmt: skip
    body = {"prompt": "Zürich ∮ ", "length": 200, "temperature": 1.3, "seed": 21}
    with start_server(sp_export) as (url, _):
        status, whole = post(f"{url}/v1/generate", body)
        assert status == 200 and whole["texts"] == [expected] and whole["tokens"] == [200]
        request = urllib.request.Request(
            f"{url}/v1/stream", data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=60) as response:
            events = sse_events(response.read().decode())
        texts = [data["text"] for kind, data in events if kind == "message"]
        assert "".join(texts) == expected  # byte pieces are joined across chunks
