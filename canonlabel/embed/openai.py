from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from canonlabel.embed.base import Embedder
from canonlabel.llm.retry import call_with_retries


class OpenAIEmbedder(Embedder):
    """Any OpenAI-compatible ``/embeddings`` endpoint (OpenAI, vLLM, Ollama, llama.cpp)."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        client=None,
        batch_size: int = 128,
        timeout: float = 60.0,
        max_retries: int = 4,
    ) -> None:
        self.model = model
        self.id = f"openai:{model}"
        self.batch_size = batch_size
        self.max_retries = max_retries
        if client is None:
            from canonlabel.llm.openai import make_client

            client = make_client(base_url=base_url, api_key=api_key, timeout=timeout)
        self.client = client
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self.embed_batch(["dimension probe"]).shape[1])
        return self._dim

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        def request():
            return self.client.embeddings.create(model=self.model, input=list(texts))

        response = call_with_retries(request, max_retries=self.max_retries)
        data = sorted(response.data, key=lambda d: d.index)
        vectors = np.asarray([d.embedding for d in data], dtype=np.float32)
        self._dim = vectors.shape[1]
        return vectors
