"""The OpenAI-compatible backends over real HTTP against a local fake server."""

import pytest

from canonlabel import BackendError, LabelError
from canonlabel.embed.openai import OpenAIEmbedder
from canonlabel.llm.openai import OpenAILabeler
from canonlabel.types import LabelRequest
from tests.fake_openai import FakeOpenAIServer


@pytest.fixture
def server():
    with FakeOpenAIServer() as s:
        yield s


def labeler(server, **kw):
    kw.setdefault("max_retries", 3)
    return OpenAILabeler("test-model", base_url=server.url, api_key="k", timeout=2, **kw)


def test_structured_label_and_usage(server):
    response = labeler(server).label(LabelRequest("my card", ("card_delivery",)))
    assert response.output == "card_delivery"
    assert response.usage.prompt_tokens == 50
    body = server.requests[0]["body"]
    assert body["temperature"] == 0 and body["response_format"]["type"] == "json_schema"
    assert "card_delivery" in body["messages"][1]["content"]
    assert server.requests[0]["auth"] == "Bearer k"


def test_falls_back_to_plain_text_when_structured_output_is_unsupported(server):
    server.script.extend([("json400",), ("json400",)])
    lab = labeler(server)
    assert lab.label(LabelRequest("x")).output == "card_delivery"
    assert lab.form is None
    forms = [r["body"].get("response_format", {}).get("type") for r in server.requests]
    assert forms == ["json_schema", "json_object", None]  # llama.cpp's form tried between


def test_429_and_500_are_retried_honouring_retry_after(server):
    server.script.extend(
        [("status", 429, {"Retry-After": "0.2"}), ("status", 500, {}), "exchange_rate"]
    )
    response = labeler(server).label(LabelRequest("x"))
    assert response.output == "exchange_rate"
    assert len(server.requests) == 3


def test_retries_run_out_with_retryable_error(server):
    server.script.extend([("status", 503, {"Retry-After": "0"})] * 3)
    with pytest.raises(BackendError) as info:
        labeler(server, max_retries=2).label(LabelRequest("x"))
    assert info.value.retryable and "503" in str(info.value)


def test_401_is_not_retried(server):
    server.script.append(("status", 401, {}))
    with pytest.raises(BackendError, match="API key") as info:
        labeler(server).label(LabelRequest("x"))
    assert not info.value.retryable and len(server.requests) == 1


def test_timeout_is_retryable(server):
    server.script.extend([("sleep", 1.5), "card_delivery"])
    lab = OpenAILabeler("m", base_url=server.url, api_key="k", timeout=0.5, max_retries=1)
    assert lab.label(LabelRequest("x")).output == "card_delivery"


def test_invalid_labels_are_reasked_then_failed_through_the_pipeline(server, make_clf):
    server.script.extend(["I am sorry, I can't", "card delivery", "!!", "???"])
    clf, _ = make_clf(labeler=labeler(server))
    assert clf.classify("where is my card").label == "card_delivery"
    with pytest.raises(LabelError):
        clf.classify("what is the exchange rate")
    assert len(server.requests) == 4


def test_openai_embedder(server):
    emb = OpenAIEmbedder("e", base_url=server.url, api_key="k")
    vectors = emb.embed(["a", "abc"])
    assert vectors.shape == (2, 3) and emb.dim == 3


def test_several_texts_in_one_call_split_the_usage_and_a_miscount_is_asked_again(server):
    lab = labeler(server)
    requests = [LabelRequest(t, ("card_delivery",)) for t in ("my card", "new card", "lost pin")]
    server.script.append(["card_delivery", "card_delivery", "pin_reset"])
    answers = lab.label_group(requests)
    assert [a.output for a in answers] == ["card_delivery", "card_delivery", "pin_reset"]
    assert sum(a.usage.prompt_tokens for a in answers) == 50  # one call's usage, shared
    body = server.requests[0]["body"]
    schema = body["response_format"]["json_schema"]["schema"]["properties"]["labels"]
    assert schema["minItems"] == schema["maxItems"] == 3
    assert body["messages"][1]["content"].count("<message n=") == 3
    server.script.append(["card_delivery"])  # one label for three texts: asked one by one
    answers = lab.label_group(requests)
    assert len(answers) == 3 and len(server.requests) == 1 + 1 + 3


def test_grouped_labeler_gathers_concurrent_questions_into_one_call():
    import threading

    from canonlabel.llm.group import Grouped
    from canonlabel.testing import FakeLabeler

    class Counting(FakeLabeler):
        def __init__(self):
            super().__init__()
            self.group_sizes = []

        def label_group(self, requests):
            self.group_sizes.append(len(requests))
            return self.label_batch(requests)

    inner = Counting()
    lab = Grouped(inner, size=4, wait=5.0)  # long wait: only a full group is sent
    out = {}

    def ask(i):
        out[i] = lab.label(LabelRequest(f"where is my card number {i}"))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert inner.group_sizes == [4, 4] and len(out) == 8
    # closed choices and re-asks keep their own instruction: one by one, at once
    lab.label(LabelRequest("x", ("a", "b"), closed=True))
    assert inner.group_sizes == [4, 4]
    lone = Grouped(inner, size=4, wait=0.01)  # nobody else comes: it goes alone
    assert lone.label(LabelRequest("alone")).output


def test_classify_through_a_server_with_several_texts_per_call(server, make_clf):
    from canonlabel import Settings

    settings = Settings(llm="openai:test-model", llm_base_url=server.url, texts_per_call=4)
    from canonlabel.llm import make_labeler

    lab = make_labeler(settings.llm, settings.model_copy(update={"llm_api_key": "k"}))
    clf, _ = make_clf(labeler=lab)
    words = [
        "apple",
        "brick",
        "cloud",
        "delta",
        "ember",
        "fjord",
        "grape",
        "harbor",
        "iris",
        "jungle",
        "kelp",
        "lemon",
    ]
    texts = [f"{w} {w}s and more {w} talk, item {i}" for i, w in enumerate(words)]
    results = clf.classify_many(texts, concurrency=1)
    assert all(r.label == "card_delivery" for r in results)
    grouped = [r for r in server.requests if "<message n=" in str(r["body"]["messages"])]
    assert grouped and len(server.requests) < len(texts)
