"""`POST /v1/embeddings` of the OpenAI-compatible API, read as a run of the `embed` pattern
(the runtime's `llm.embed`, the router's `Embed`) and answered in OpenAI's shape.

Read: `model`, `input` (a string or a list of 1 to 2048 strings; token arrays are refused
PARAMETER_UNSUPPORTED), `dimensions`, `encoding_format` (`float`, or `base64`: each vector's
float32 values, little-endian, base64 — what the Python SDK asks for by default and
decodes). `user` is refused PARAMETER_UNSUPPORTED (the router's Embed sends no end user);
a field OpenAI does not define is PARAMETER_UNKNOWN."""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from typing import Any

from google.protobuf import struct_pb2

from services.common.config import MAX_MODEL_NAME
from services.gateway.web.openai_request import invalid, refuse_fields, unsupported

EMBED_PATTERN = "embed"
MAX_INPUTS = 2048
"""The router's bound on one call's texts (the embed pattern's too)."""
MAX_NUMBERS = 250_000
"""Most numbers (inputs times dimensions) one call may ask for: the vectors come back as the
run's outputs, a Struct of about 11 bytes a number, in one gRPC message of at most
`server.max_message_bytes` (4 MiB by default). Without `dimensions` the model's own length
decides, which the edge cannot know before the call."""
ENCODINGS = ("float", "base64")
_FIELDS = frozenset(("model", "input", "dimensions", "encoding_format"))
_UNSUPPORTED = frozenset(("user",))


@dataclass(frozen=True)
class EmbeddingsRequest:
    """A checked request: the model asked for, the encoding, and the embed pattern's inputs."""

    model: str
    encoding_format: str
    inputs: struct_pb2.Struct


def _texts(value: Any) -> list[str]:
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts:
        raise invalid("input", "input must be a string or a non-empty list of strings")
    if len(texts) > MAX_INPUTS:
        raise invalid("input", f"at most {MAX_INPUTS} inputs")
    for i, text in enumerate(texts):
        if isinstance(text, int | list) and not isinstance(text, bool):
            raise unsupported("input", "input as token ids")
        if not isinstance(text, str):
            raise invalid(f"input[{i}]", "each input is a string")
    return texts


def parse(body: Any) -> EmbeddingsRequest:
    """The checked request of JSON `body`; INVALID_ARGUMENT naming the first bad field."""
    if not isinstance(body, dict):
        raise invalid("body", "the request body must be a JSON object", "REQUEST_MALFORMED")
    refuse_fields(body, _FIELDS, _UNSUPPORTED)
    model = body.get("model")
    if not isinstance(model, str) or not model or len(model) > MAX_MODEL_NAME:
        raise invalid("model", f"model must be a model id of at most {MAX_MODEL_NAME} chars")
    inputs: dict[str, Any] = {"texts": _texts(body.get("input"))}
    dimensions = body.get("dimensions")
    if dimensions is not None:
        if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1:
            raise invalid("dimensions", "dimensions must be a positive integer")
        if dimensions * len(inputs["texts"]) > MAX_NUMBERS:
            raise invalid(
                "input", f"inputs times dimensions is at most {MAX_NUMBERS}: send fewer a call"
            )
        inputs["dimensions"] = dimensions
    encoding = body.get("encoding_format") or "float"
    if encoding not in ENCODINGS:
        raise invalid("encoding_format", "encoding_format is float or base64")
    given = struct_pb2.Struct()
    given.update(inputs)
    return EmbeddingsRequest(model, str(encoding), given)


def encoded(vector: list[float], encoding: str) -> list[float] | str:
    """`vector` as `encoding` asks: the numbers, or their float32 bytes in base64."""
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector


def response(
    vectors: list[list[float]], model: str, input_tokens: int, encoding: str
) -> dict[str, Any]:
    """OpenAI's embeddings list."""
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encoded(v, encoding)}
            for i, v in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": input_tokens, "total_tokens": input_tokens},
    }
