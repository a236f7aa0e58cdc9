"""Needle-in-a-haystack samples (Wu et al. 2024): the needles file and prompts with exact spans.

A sample is one prompt: haystack prose of a target token length with one needle sentence
inserted at a sentence boundary at depth d, ending with a question about the needle, plus the
*response* that teacher forcing feeds after it (the needle sentence as models restate it, or
the bare answer).

Spans are exact by construction, never searched for with a fuzzy overlap: the prompt is a
concatenation of separately tokenised segments (template and instruction, haystack sentences,
the needle split into before-answer / answer / after-answer, the question), so the token
span of the needle and of the answer inside it are known from the segment lengths. The
answer's ids in the response are checked to equal its ids in the needle.

The haystack text (the default stdlib docstrings, or the user's files) is
`interp.datasets.haystack`. The default needles live in ``interp/data/needles.jsonl`` (written
for this project; one JSON object per line with ``id``, ``needle``, ``question``, ``answer``;
the answer must occur verbatim in the needle).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Optional, Sequence

from interp.datasets.haystack import Haystack
from interp.errors import InterpError

__all__ = [
    "Needle",
    "NeedleSample",
    "PromptTemplate",
    "load_needles",
    "default_needles_path",
    "insertion_index",
    "build_sample",
    "build_samples",
]


INTRO = "Below is a long document. Read it, then answer the question that follows it.\n\n<document>"
OUTRO = "\n</document>\n\nBased on the content of the document, answer the question. Question: {question}"
PLAIN_ANSWER_CUE = "\nAnswer:"  # ends the prompt of a model without a chat template
_MARKER = "INTERPUSERMESSAGEMARKER"


# --------------------------------------------------------------------------------------------
# needles
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Needle:
    """One fact to hide: the sentence, the question about it and the answer it contains.

    Attributes:
        id: short name (appears in samples.csv).
        needle: the sentence inserted into the haystack.
        question: asked at the end of the prompt.
        answer: the reference answer; must occur verbatim in ``needle``.
    """

    id: str
    needle: str
    question: str
    answer: str

    def __post_init__(self) -> None:
        for name in ("id", "needle", "question", "answer"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise InterpError(f"needle {self.id!r}: field '{name}' must be a non-empty string")
        if self.answer not in self.needle:
            raise InterpError(
                f"needle {self.id!r}: the answer {self.answer!r} does not occur verbatim in the needle "
                f"{self.needle!r}; the answer must be a substring of the needle sentence"
            )

    def parts(self) -> tuple[str, str, str]:
        """(before, answer, after) with the space before the answer kept on the answer.

        ``before + answer + after == needle``. Keeping the space on the answer makes its token
        ids the ones the answer has inside running text (" paprika", not "paprika").
        """
        start = self.needle.index(self.answer)
        if start > 0 and self.needle[start - 1] == " ":
            start -= 1
        end = self.needle.index(self.answer) + len(self.answer)
        return self.needle[:start], self.needle[start:end], self.needle[end:]


def default_needles_path() -> Path:
    """The shipped ``interp/data/needles.jsonl``."""
    return Path(str(resources.files("interp") / "data" / "needles.jsonl"))


def load_needles(path: Optional[str | Path] = None) -> tuple[Needle, ...]:
    """Read needles from a JSONL file (default: the shipped set).

    Raises:
        InterpError: unreadable file, a line that is not a JSON object with the four fields,
            duplicate ids, an answer not inside its needle, or no needle at all.
    """
    path = Path(path) if path is not None else default_needles_path()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InterpError(
            f"cannot read needles file {path} ({err}): pass a readable UTF-8 JSONL file with --needles"
        ) from err
    needles: list[Needle] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise InterpError(f"{path}:{number} is not valid JSON ({err.msg}): write one JSON object per line") from err
        if not isinstance(obj, dict):
            raise InterpError(f"{path}:{number}: expected a JSON object with needle, question, answer")
        missing = [k for k in ("needle", "question", "answer") if k not in obj]
        if missing:
            raise InterpError(
                f"{path}:{number}: missing field(s) {missing}; each line needs needle, question, answer (id optional)"
            )
        needles.append(Needle(str(obj.get("id", f"n{len(needles)}")), obj["needle"], obj["question"], obj["answer"]))
    if not needles:
        raise InterpError(f"needles file {path} holds no needles: write one JSON object per line")
    ids = [n.id for n in needles]
    if len(set(ids)) != len(ids):
        raise InterpError(f"needles file {path} repeats an id ({ids}): give each needle a unique 'id'")
    return tuple(needles)


# --------------------------------------------------------------------------------------------
# prompts and samples
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptTemplate:
    """Text around the haystack: ``head`` + haystack + ``tail(question)``; then the response.

    Attributes:
        head: chat-template text before the user message, plus `INTRO`.
        tail_template: `OUTRO` (+ `PLAIN_ANSWER_CUE` without a chat template) plus the
            chat-template text after the user message (the generation prompt), with
            ``{question}`` left to fill.
        response_prefix: text before the response ("" after a chat generation prompt, " "
            after "Answer:").
        chat: whether the model's chat template is used.
    """

    head: str
    tail_template: str
    response_prefix: str
    chat: bool

    @classmethod
    def from_chat(cls, chat_prompt: Optional[Callable[[str], str]]) -> PromptTemplate:
        """Build from a ``chat_prompt(user) -> text`` function (`LoadedModel.chat_prompt`) or None."""
        if chat_prompt is not None:
            wrapped = chat_prompt(_MARKER)
            if wrapped != _MARKER and wrapped.count(_MARKER) == 1:
                before, after = wrapped.split(_MARKER)
                return cls(before + INTRO, OUTRO.replace("{question}", "\x00") + after, "", True)
        return cls(INTRO, OUTRO.replace("{question}", "\x00") + PLAIN_ANSWER_CUE, " ", False)

    def tail(self, question: str) -> str:
        return self.tail_template.replace("\x00", question)


@dataclass(frozen=True)
class NeedleSample:
    """One prompt of the grid, as token ids with exact spans (half-open [start, end)).

    Attributes:
        key: unique id, e.g. "L1024-d0.50-soup" (the resume key).
        length: the requested prompt length in tokens (the actual length is at most this,
            short by less than one haystack sentence; at the model's context, short by the
            response too).
        depth: the requested needle depth in [0, 1] (0 = start of the haystack).
        needle_id: the needle's id.
        prompt_ids: token ids of the prompt (ends with the question and generation prompt).
        response_ids: token ids teacher forcing feeds after the prompt.
        needle_span: the needle sentence in ``prompt_ids``.
        answer_span: the answer inside the needle, in ``prompt_ids``.
        response_answer_span: the answer inside ``response_ids`` (indices into the response).
        answer: the reference answer text.
        haystack_depth: the actual depth: haystack tokens before the needle / all haystack tokens.
    """

    key: str
    length: int
    depth: float
    needle_id: str
    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]
    needle_span: tuple[int, int]
    answer_span: tuple[int, int]
    response_answer_span: tuple[int, int]
    answer: str
    haystack_depth: float

    @property
    def n_prompt(self) -> int:
        return len(self.prompt_ids)

    @property
    def input_ids(self) -> tuple[int, ...]:
        """Prompt followed by the response (what one teacher-forced forward pass sees)."""
        return self.prompt_ids + self.response_ids


def _needle_segments(
    encode: Callable[[str], list[int]], needle: Needle, prefix: str
) -> tuple[list[int], list[int], list[int]]:
    """Token ids of ``prefix + needle`` as (before answer, answer, after answer) segments."""
    before, answer, after = needle.parts()
    if before:
        head, mid = encode(prefix + before), encode(answer)
    else:  # the answer opens the needle: the prefix (a space or nothing) attaches to it
        head, mid = [], encode(prefix + answer)
    return head, mid, encode(after) if after else []


def sample_key(length: int, depth: float, needle_id: str) -> str:
    return f"L{length}-d{depth:.2f}-{needle_id}"


def insertion_index(counts: Sequence[int], depth: float) -> int:
    """Sentence boundary for a needle at ``depth``: the last boundary at or before depth x total.

    Args:
        counts: tokens per haystack sentence.
        depth: in [0, 1].

    Returns:
        k in 0..len(counts): insert the needle before sentence k (k = len: at the end).
    """
    total = sum(counts)
    target = depth * total
    k, cum = 0, 0
    for i, c in enumerate(counts):
        if cum + c > target + 1e-9:
            break
        cum += c
        k = i + 1
    return k


def build_sample(
    encode: Callable[[str], list[int]],
    template: PromptTemplate,
    haystack: Haystack,
    needle: Needle,
    length: int,
    depth: float,
    *,
    n_ctx: int,
    response: str = "needle",
    bos: Optional[int] = None,
) -> NeedleSample:
    """Build one sample (see module docstring).

    Args:
        encode: text -> token ids, no special tokens added (the tokenizer's own).
        template: the prompt text around the haystack.
        haystack: tokenised haystack sentences; the first sentences that fit are used.
        needle: the needle to insert.
        length: target prompt length in tokens, at most ``n_ctx``. The prompt is at most
            ``length`` and at most ``n_ctx`` minus the response long (so ``length = n_ctx``
            works: the prompt is then shorter by the response), short by less than one
            haystack sentence.
        depth: needle depth in [0, 1].
        n_ctx: the model's context; prompt + response must fit.
        response: "needle" (teacher forcing feeds the needle sentence, as models restate it)
            or "answer" (only the answer, with the token ids it has inside the needle).
        bos: the token the prompt opens with (`LoadedModel.bos_id`: the model's BOS where it
            prepends one; None: none), once, at position 0 only (a head whose chat template
            already opens with it keeps its own); every span counts it.

    Token-level shared prefixes: every segment is tokenised on its own and the prompt is the
    concatenation of their ids, and the haystack is whole sentences taken from its start, so
    two samples of one haystack share exactly the ids of ``head`` + the sentences before the
    earlier needle, whatever their lengths and depths (`interp.hooks.prefix` relies
    on this; it compares token ids, so it stays exact for any tokenizer).

    Raises:
        InterpError: depth outside [0, 1], a length beyond the context or too short for the
            template, needle and question, a haystack too short for the length.
    """
    if not 0.0 <= depth <= 1.0:
        raise InterpError(f"depth {depth} outside [0, 1]: depths are fractions of the haystack (0 = start, 1 = end)")
    if response not in ("needle", "answer"):
        raise InterpError(f"response must be 'needle' or 'answer', got {response!r}")
    head = encode(template.head)
    if bos is not None and head[:1] != [bos]:
        head = [bos] + head
    tail = encode(template.tail(needle.question))
    n_before, n_answer, n_after = _needle_segments(encode, needle, " ")
    needle_ids = n_before + n_answer + n_after
    if not n_answer:
        raise InterpError(f"needle {needle.id!r}: the answer tokenises to nothing; give a non-empty answer")
    if response == "needle":
        r_before, r_answer, r_after = _needle_segments(encode, needle, template.response_prefix)
    else:
        r_before, r_answer, r_after = [], list(n_answer), []
    response_ids = r_before + r_answer + r_after

    overhead = len(head) + len(tail) + len(needle_ids)
    if length > n_ctx:
        raise InterpError(f"length {length} exceeds the model's context of {n_ctx} tokens: use --lengths up to {n_ctx}")
    # The response must fit behind the prompt: at the context's end the prompt gives way to it.
    budget = min(length, n_ctx - len(response_ids)) - overhead
    if budget <= 0:
        raise InterpError(
            f"length {length} is too short: the template, needle {needle.id!r} and question alone take {overhead} "
            f"tokens; use --lengths above {overhead}"
        )
    counts, used = [], 0
    for ids in haystack.ids:
        if used + len(ids) > budget:
            break
        counts.append(len(ids))
        used += len(ids)
    if len(counts) == len(haystack.ids) and budget - used > max((len(i) for i in haystack.ids), default=0):
        raise InterpError(
            f"the haystack ({haystack.name}) has only {haystack.n_tokens} tokens but length {length} needs about "
            f"{budget}: give more text with --haystack or lower --lengths"
        )
    if not counts:
        raise InterpError(f"no haystack sentence fits into length {length}: raise --lengths")
    k = insertion_index(counts, depth)
    hay_before = [t for ids in haystack.ids[:k] for t in ids]
    hay_after = [t for ids in haystack.ids[k : len(counts)] for t in ids]
    prompt = head + hay_before + needle_ids + hay_after + tail
    needle_start = len(head) + len(hay_before)
    answer_start = needle_start + len(n_before)
    r_start = len(r_before)
    sample = NeedleSample(
        key=sample_key(length, depth, needle.id),
        length=length,
        depth=depth,
        needle_id=needle.id,
        prompt_ids=tuple(prompt),
        response_ids=tuple(response_ids),
        needle_span=(needle_start, needle_start + len(needle_ids)),
        answer_span=(answer_start, answer_start + len(n_answer)),
        response_answer_span=(r_start, r_start + len(r_answer)),
        answer=needle.answer,
        haystack_depth=len(hay_before) / max(1, used),
    )
    # Exact spans: the answer's ids in the response are its ids inside the needle, except when
    # the answer opens both the needle (" Ride ...") and a chat response ("Ride ..."), where
    # the model, too, would emit the token without the space.
    a0, a1 = sample.answer_span
    b0, b1 = sample.response_answer_span
    if needle.parts()[0] or template.response_prefix == " " or response == "answer":
        if sample.prompt_ids[a0:a1] != sample.response_ids[b0:b1]:
            raise InterpError(f"needle {needle.id!r}: the answer's token ids differ between needle and response")
    return sample


def build_samples(
    encode: Callable[[str], list[int]],
    template: PromptTemplate,
    haystack: Haystack,
    needles: Sequence[Needle],
    lengths: Sequence[int],
    depths: Sequence[float],
    *,
    n_ctx: int,
    response: str = "needle",
    bos: Optional[int] = None,
) -> list[NeedleSample]:
    """The grid lengths x depths x needles, in that nesting order (short samples first); ``bos``
    as in `build_sample`."""
    return [
        build_sample(encode, template, haystack, needle, length, depth, n_ctx=n_ctx, response=response, bos=bos)
        for length in lengths
        for depth in depths
        for needle in needles
    ]
