"""A real OpenAI-compatible server: llama-cpp-python's (``python -m llama_cpp.server``)
serving the bundled Gemma 3 270M GGUF on loopback.

It differs from the fake server in what it accepts: it rejects ``response_format``
``json_schema`` with HTTP 500 (a validation error) and honours llama.cpp's own form,
``json_object`` with a ``schema``. These tests label, serve and adjudicate through it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from canonlabel.config import Settings
from canonlabel.errors import BackendError
from canonlabel.labelspace.adjudicate import _ask_chunk
from canonlabel.llm.openai import OpenAILabeler
from canonlabel.llm.retry import call_with_retries
from canonlabel.types import LabelRequest
from tests.conftest import run_cli

TEXTS = [
    "my card has not arrived yet",
    "the card I ordered still has not arrived",
    "what exchange rate do you use for euros",
    "how do I top up my account",
    "my top up failed",
    "I lost my card yesterday",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(url)


@pytest.fixture(scope="module")
def llama_server():
    from canonlabel.llm.llamacpp import bundled_gemma_path

    model = bundled_gemma_path(Settings().cache_dir)
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host",
         "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--verbose", "false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait(f"http://127.0.0.1:{port}/v1/models", proc)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _labeler(url: str, **kw) -> OpenAILabeler:
    return OpenAILabeler("gemma", base_url=url, timeout=60, **kw)


def test_structured_output_steps_down_to_llama_cpp_form_and_holds_to_the_schema(llama_server):
    lab = _labeler(llama_server)
    closed = LabelRequest(TEXTS[0], ("card_arrival", "exchange_rate"), closed=True)
    answer = lab.label(closed)
    assert lab.form == "json_object"  # json_schema was rejected (HTTP 500, not retried)
    assert answer.output in ("card_arrival", "exchange_rate")
    assert answer.usage.prompt_tokens > 0
    free = lab.label(LabelRequest(TEXTS[2])).output
    assert free and free == free.strip()


def test_several_texts_in_one_call_get_one_schema_bound_label_each(llama_server):
    lab = _labeler(llama_server)
    requests = [LabelRequest(t) for t in TEXTS[:4]]
    answers = lab.label_group(requests)
    assert len(answers) == 4 and all(a.output and a.output == a.output.strip() for a in answers)
    # the schema's minItems/maxItems bound the grammar: one call answered all four
    assert sum(a.usage.prompt_tokens for a in answers) > 0
    assert len({a.usage.prompt_tokens for a in answers}) <= 2  # one call's usage, shared


def test_its_error_bodies_are_rejections_and_a_dead_port_is_retryable(llama_server):
    lab = _labeler(llama_server)
    calls = []

    def bad():
        calls.append(1)
        return lab.client.chat.completions.create(model="gemma", messages="not a list")

    with pytest.raises(BackendError) as info:
        call_with_retries(bad, max_retries=3, sleep=lambda s: None)
    assert info.value.rejected and not info.value.retryable and len(calls) == 1
    dead = _labeler(f"http://127.0.0.1:{_free_port()}/v1", max_retries=1)
    with pytest.raises(BackendError) as info:
        dead.label(LabelRequest("x"))
    assert info.value.retryable


def test_an_adjudication_question_gets_an_answer_or_decides_nothing(llama_server):
    lab = _labeler(llama_server)
    shown = [
        (("card_arrival", [TEXTS[0]]), ("card_not_arrived", [TEXTS[1]])),
        (("card_arrival", [TEXTS[0]]), ("exchange_rate", [TEXTS[2]])),
    ]
    found, calls = _ask_chunk(lab, ["a|b", "a|c"], shown, budget=1)
    assert calls == 1 and set(found) <= {0, 1}
    assert all(isinstance(v, bool) for v in found.values())


def test_classify_and_serve_through_the_server(llama_server, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(
        "".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(TEXTS))
    )
    out = tmp_path / "out.jsonl"
    args = ["--llm", "openai:gemma", "--llm-base-url", llama_server]
    done = run_cli("classify", str(src), "-o", str(out), "--db", str(tmp_path / "c.db"), *args)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == len(TEXTS) and all(r["label"] for r in rows)
    port = _free_port()
    env = os.environ | {"CANONLABEL_DB": str(tmp_path / "s.db")}
    serve = subprocess.Popen(
        [sys.executable, "-m", "canonlabel.cli", "serve", "--port", str(port), *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:
        _wait(f"http://127.0.0.1:{port}/healthz", serve, 180)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/classify", json={"text": TEXTS[4]}, timeout=60)
        assert r.status_code == 200 and r.json()["label"], r.text
    finally:
        serve.terminate()
        serve.wait(timeout=60)
