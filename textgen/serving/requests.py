"""What an HTTP request may be: JSON read with limits, fields checked by the one sampling rule.

Nothing a client sends reaches the model unchecked, and no body makes the server fail: a body
that is not `application/json` is 415; one over `MAX_BODY` bytes is 413; JSON with an integer
of more than `MAX_DIGITS` digits or nested deeper than `MAX_DEPTH` is refused before Python's
parser could raise (a 400, never a 500); every sampling field goes through
`core.sampling_settings.check_sampling` in the dtypes the graph uses; stop strings go through
`generation.stops.check_stops` (at most 8, of at most 64 characters).
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass

import numpy as np

from textgen.core.errors import TextgenError
from textgen.core.sampling_settings import SamplingSettingError, SamplingSettings, check_sampling
from textgen.data.tokenizers import unknown_chars_message
from textgen.generation.stops import check_stops

MAX_BODY = 64 * 1024  # bytes of a request body: a 64 KB prompt, and no more
MAX_DEPTH = 8  # nesting of JSON arrays and objects (a predict body needs 3)
MAX_DIGITS = 40  # digits of a JSON integer (an int64 has 19; Python's own limit is 4,300)
BODY_SECONDS = 10.0  # to send the whole body once the headers are in (slow senders: 408)
SAMPLING = ("length", "temperature", "top_k", "top_p", "seed", "num_samples")
FIELDS = ("prompt", *SAMPLING, "stop", "stop_at_end", "novelty")
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')  # a JSON string (brackets inside do not nest)


class BadRequest(Exception):
    """A request the server refuses: `status` (400 unless said) with this one-line message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """What a request may ask for."""

    max_length: int = 2000  # tokens per sample
    max_samples: int = 16  # samples per request
    timeout: float = 120.0  # seconds from arrival to the last token (503 after)


@dataclass(frozen=True)
class Request:
    """A checked request.

    Attributes:
        prompt: The text to continue.
        settings: Checked, with a seed (top-k clamped to the vocabulary).
        stop: Stop strings (checked; a sample stops after the first it writes, cut from it).
        stop_at_end: Stop at the end-of-text token; None: the model's default (yes for a
            documents run).
        novelty: Report what of each sample occurs in the run's training split.
    """

    prompt: str
    settings: SamplingSettings
    stop: tuple[str, ...] = ()
    stop_at_end: bool | None = None
    novelty: bool = False


def check_request(
    body, backend, limits: Limits, *, fields: tuple[str, ...] = FIELDS, padding: bool = False
) -> Request:
    """A request object (parsed JSON) checked against the model and the limits.

    Args:
        body: The parsed JSON.
        backend: The model (`batcher.Backend`): its vocabulary.
        limits: The server's limits.
        fields: The fields this route takes (besides `allow_unknown`).
        padding: Empty stop strings are padding (TF Serving's rectangular inputs), not errors.

    Returns:
        The request, checked.

    Raises:
        BadRequest: naming the field at fault.
    """
    if not isinstance(body, dict):
        raise BadRequest("the request must be a JSON object")
    unknown = set(body) - {*fields, "allow_unknown"}
    if unknown:
        raise BadRequest(f"unknown field {sorted(unknown)[0]!r}; fields: {', '.join(fields)}")
    prompt = body.get("prompt")
    if prompt is None:
        raise BadRequest("prompt is required (a string, may be empty)")
    if not isinstance(prompt, str):
        raise BadRequest("prompt must be a string")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("prompt is not valid Unicode (a lone surrogate)") from None
    allow_unknown = body.get("allow_unknown", False)
    if not isinstance(allow_unknown, bool):
        raise BadRequest("allow_unknown must be true or false")
    missing = backend.unknown_chars(prompt)
    if missing and not allow_unknown:
        raise BadRequest(
            f"{unknown_chars_message(missing, 'prompt characters')} "
            '(send "allow_unknown": true to feed them as the unknown token)'
        )
    defaults = SamplingSettings(length=200)  # 200 tokens: a paragraph, a fraction of a second
    given = {k: _whole(body[k]) for k in SAMPLING if k in body}
    try:
        settings = check_sampling(
            SamplingSettings(**{**defaults.__dict__, **given}),
            vocab_size=len(backend.pieces),  # top-k above it: clamped (the documented rule)
            max_length=limits.max_length,
            max_samples=limits.max_samples,
        )
    except SamplingSettingError as e:
        raise BadRequest(e.what) from None
    flags = {k: _flag(body, k) for k in ("stop_at_end", "novelty")}
    return Request(
        prompt, settings.resolved(), _stops(body.get("stop", []), padding=padding),
        flags["stop_at_end"], bool(flags["novelty"]),
    )  # fmt: skip


def _flag(body: dict, name: str) -> bool | None:
    """A true/false field (None when absent)."""
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false")
    return value


def _stops(value, *, padding: bool) -> tuple[str, ...]:
    """The `stop` field: a string or a list of strings, checked by `check_stops`."""
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise BadRequest("stop must be a list of strings")
    if padding:
        value = [s for s in value if s]
    for s in value:
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest("stop is not valid Unicode (a lone surrogate)") from None
    try:
        return check_stops(value)
    except TextgenError as e:
        raise BadRequest(f"stop: {e.what}") from None


def _whole(value):
    """A JSON number that is a whole float as an int (TF Serving clients send float arrays)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def parse_json(data: bytes) -> object:
    """JSON with limits: UTF-8, nesting <= MAX_DEPTH, integers <= MAX_DIGITS digits.

    Raises:
        BadRequest: what is wrong (400).
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(f"invalid JSON: not UTF-8 ({e.reason} at byte {e.start})") from None
    depth = _depth(data)
    if depth > MAX_DEPTH:
        raise BadRequest(f"invalid JSON: nested {depth} deep (the most: {MAX_DEPTH})")
    try:
        return json.loads(text, parse_int=_integer)
    except json.JSONDecodeError as e:
        raise BadRequest(f"invalid JSON: {e}") from None
    except (ValueError, RecursionError) as e:  # belt and braces: never a 500
        raise BadRequest(f"invalid JSON: {e.__class__.__name__}") from None


def _integer(text: str) -> int:
    """A JSON integer, refused past MAX_DIGITS digits (before Python's slow conversion)."""
    digits = len(text.lstrip("-"))
    if digits > MAX_DIGITS:
        raise BadRequest(f"invalid JSON: an integer of {digits} digits (the most: {MAX_DIGITS})")
    return int(text)


def _depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects outside strings (a vectorised scan)."""
    bare = np.frombuffer(_STRING.sub(b'""', data), np.uint8)  # (bytes,)
    opens = (bare == ord("[")) | (bare == ord("{"))
    closes = (bare == ord("]")) | (bare == ord("}"))
    steps = opens.astype(np.int32) - closes.astype(np.int32)  # (bytes,)
    return int(np.cumsum(steps).max(initial=0))


async def read_json(request) -> object:
    """The body as JSON: `application/json`, at most MAX_BODY bytes within BODY_SECONDS.

    Raises:
        BadRequest: 415 (another content type), 413 (too large), 408 (too slow), 400.
    """
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        what = f"the body must be JSON (Content-Type: application/json), got {kind or 'none'}"
        raise BadRequest(what, 415)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise BadRequest(f"the body is over {MAX_BODY // 1024} KiB", 413)
    try:
        async with asyncio.timeout(BODY_SECONDS):
            body = await _read_body(request)
    except TimeoutError:
        raise BadRequest(f"the body took over {BODY_SECONDS:g} s to arrive", 408) from None
    return parse_json(bytes(body))


async def _read_body(request) -> bytearray:
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > MAX_BODY:
            raise BadRequest(f"the body is over {MAX_BODY // 1024} KiB", 413)
    return body


def columns_to_rows(inputs) -> list:
    """TF Serving's columnar `inputs` ({name: [values]}) as a list of instances."""
    if not isinstance(inputs, dict) or not inputs:
        raise BadRequest("inputs must be an object of equally long lists")
    columns = {k: v if isinstance(v, list) else [v] for k, v in inputs.items()}
    sizes = {len(v) for v in columns.values()}
    if len(sizes) != 1:
        raise BadRequest("every input must have the same number of values")
    return [{k: v[i] for k, v in columns.items()} for i in range(sizes.pop())]
