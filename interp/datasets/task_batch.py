"""The task batch: clean/corrupted prompt pairs, tokenized, with their answer tokens.

`TaskBatch` is what patching runs on (one meaning throughout interp; see `interp.datasets.tasks`
for where tasks come from). `task_from_prompts` tokenizes prompt pairs with every check patching
needs: clean and corrupted prompts of the *same* token length (patching by position compares
like with like), and single-token answers (the logit difference compares two tokens). The
token helpers (`token_ids`, `single_token`, `word_pool`, `position_of`) are shared by the task
generators (`interp.datasets.ioi`, `interp.datasets.colored_objects`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import torch

from interp.errors import InterpError

__all__ = ["TaskBatch", "task_from_prompts", "token_ids", "single_token", "word_pool", "position_of"]


@dataclass(frozen=True)
class TaskBatch:
    """Clean and corrupted prompts of one task, tokenized, with their answer tokens.

    Attributes:
        task: "ioi", "colored-objects" or a name given to `task_from_prompts`.
        clean: LongTensor [batch, pos], the clean prompts (what `LoadedModel.encode` gives: BOS
            first where the model prepends one, ``bos=`` of the builders).
        corrupt: LongTensor [batch, pos], the corrupted prompts, same length.
        correct: LongTensor [batch], the correct answer token of each prompt.
        wrong: LongTensor [batch], the wrong (distractor) answer token.
        clean_text, corrupt_text: the prompt strings.
        answers: (correct, wrong) answer strings per prompt.
        order: per prompt, "ABBA" or "BABA" for IOI; "" otherwise.
        roles: role name -> LongTensor [batch] of that role's position in each prompt
            (IOI: IO, S1, S2, end; Colored Objects: item, colour, query, end).
        pos_labels: one label per position: the token where all prompts agree, else the
            template slot that sits there in every prompt (e.g. "N1", "S2", "colour2"), else the
            distinct tokens seen there joined by "/" (up to three), else "pos P".
        dropped: default words or templates left out because they are not single tokens /
            not of the common length for this tokenizer.
    """

    task: str
    clean: torch.Tensor
    corrupt: torch.Tensor
    correct: torch.Tensor
    wrong: torch.Tensor
    clean_text: tuple[str, ...]
    corrupt_text: tuple[str, ...]
    answers: tuple[tuple[str, str], ...]
    order: tuple[str, ...]
    roles: dict = field(default_factory=dict)
    pos_labels: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()

    @property
    def n(self) -> int:
        """Number of prompts."""
        return int(self.clean.shape[0])

    @property
    def n_pos(self) -> int:
        """Tokens per prompt."""
        return int(self.clean.shape[1])

    @classmethod
    def from_tokens(
        cls, clean: torch.Tensor, corrupt: torch.Tensor, correct, wrong, *, task: str = "custom"
    ) -> TaskBatch:
        """A batch from token ids directly: clean/corrupt [batch, pos], correct/wrong [batch].

        Raises:
            InterpError: shapes that do not match (the message says how to fix them).
        """
        clean, corrupt = torch.as_tensor(clean, dtype=torch.long), torch.as_tensor(corrupt, dtype=torch.long)
        if clean.dim() != 2 or clean.shape != corrupt.shape:
            raise InterpError(
                f"clean {tuple(clean.shape)} and corrupted {tuple(corrupt.shape)} must both be [batch, pos] of the same "
                "shape: each corrupted prompt must have as many tokens as its clean prompt"
            )
        correct = torch.as_tensor(correct, dtype=torch.long).reshape(-1)
        wrong = torch.as_tensor(wrong, dtype=torch.long).reshape(-1)
        n = clean.shape[0]
        if correct.shape != (n,) or wrong.shape != (n,):
            raise InterpError(f"give one correct and one wrong answer token per prompt ({n} prompts)")
        return cls(
            task=task,
            clean=clean,
            corrupt=corrupt,
            correct=correct,
            wrong=wrong,
            clean_text=("",) * n,
            corrupt_text=("",) * n,
            answers=(("", ""),) * n,
            order=("",) * n,
            roles={"end": torch.full((n,), clean.shape[1] - 1, dtype=torch.long)},
            pos_labels=tuple(f"pos {p}" for p in range(clean.shape[1])),
        )

    def to(self, device: Union[str, torch.device]) -> TaskBatch:
        """The same batch with its tensors on ``device``."""
        from dataclasses import replace

        return replace(
            self,
            clean=self.clean.to(device),
            corrupt=self.corrupt.to(device),
            correct=self.correct.to(device),
            wrong=self.wrong.to(device),
            roles={k: v.to(device) for k, v in self.roles.items()},
        )


# --------------------------------------------------------------------------------------------
# Tokenization checks
# --------------------------------------------------------------------------------------------


def token_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` with no special tokens (`LoadedModel.tokens`: a piece, without BOS)."""
    return list(tokenizer(text, add_special_tokens=False).input_ids)


def single_token(tokenizer: Any, word: str) -> Optional[int]:
    """The id of ``word`` if it is exactly one token, else None."""
    ids = token_ids(tokenizer, word)
    return ids[0] if len(ids) == 1 else None


def word_pool(
    tokenizer: Any, given: Optional[Sequence[str]], default: Sequence[str], what: str, need: int
) -> tuple[list[str], list[str]]:
    """Words usable as single tokens (with a leading space). Strict for user lists.

    Returns (usable words, dropped words).
    """
    if given is not None:
        words = list(given)
        bad = [w for w in words if single_token(tokenizer, " " + w) is None]
        if bad:
            raise InterpError(
                f"these {what} are not single tokens for this tokenizer (with a leading space): {bad[:8]}; "
                f"the logit difference and equal-length corruption need one token per {what[:-1]}: "
                f"remove them or pick other words"
            )
        dropped: list[str] = []
    else:
        words = [w for w in default if single_token(tokenizer, " " + w) is not None]
        dropped = [w for w in default if w not in words]
    words = list(dict.fromkeys(words))
    if len(words) < need:
        raise InterpError(
            f"only {len(words)} {what} are single tokens for this tokenizer but the task needs {need}: "
            f"pass a longer list of one-token {what} in the task config"
        )
    return words, dropped


def _check_answer(tokenizer: Any, answer: str, where: str) -> int:
    ids = token_ids(tokenizer, answer)
    if len(ids) != 1:
        pieces = [tokenizer.decode([t]) for t in ids]
        raise InterpError(
            f"{where}: answer {answer!r} is {len(ids)} tokens {pieces}, not one: the logit difference "
            "compares single next tokens; use an answer that is one token for this tokenizer "
            "(usually a common word with a leading space, e.g. ' Mary')"
        )
    return ids[0]


def _several(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def task_from_prompts(
    tokenizer: Any,
    clean: Sequence[str],
    corrupt: Sequence[str],
    correct: Sequence[str],
    wrong: Sequence[str],
    *,
    task: str = "custom",
    order: Optional[Sequence[str]] = None,
    roles: Optional[dict] = None,
    slots: Optional[dict] = None,
    dropped: Sequence[str] = (),
    where: Optional[Sequence[str]] = None,
    bos: Optional[int] = None,
) -> TaskBatch:
    """Tokenize prompt pairs into a :class:`TaskBatch`, checking what patching needs.

    Args:
        tokenizer: the model's tokenizer.
        clean: one clean prompt per example.
        corrupt: one corrupted prompt per example.
        correct: per example, the correct answer (one token, usually with a leading space).
        wrong: per example, the wrong answer (one token, usually with a leading space).
        task: a name for the task.
        order: optional per-example tag (e.g. "ABBA").
        roles: optional role name -> positions per example (e.g. IO, S1, S2 for IOI).
        slots: optional template slot name -> positions per example, used to label positions
            where the prompts hold different words (default: ``roles``).
        dropped: default words left out by a generator (recorded in the batch).
        where: optional name of each example for error messages (e.g. "pairs.jsonl line 3");
            default "prompt i".
        bos: the token every prompt opens with (`LoadedModel.bos_id`: the model's BOS where it
            prepends one; None: nothing). ``roles`` and ``slots`` count positions in the prompt's
            text tokens; they are shifted past it (a position of -1, "absent", stays -1).

    Raises:
        InterpError: empty or mismatched lists, an empty prompt, a clean and corrupted prompt of
            different token lengths, prompts of different lengths, an answer that is not one
            token, or the same correct and wrong answer. The message names the example.
    """
    n = len(clean)
    if n == 0:
        raise InterpError("no prompts given: pass at least one clean/corrupted prompt pair")
    if not (len(corrupt) == len(correct) == len(wrong) == n):
        raise InterpError(
            f"got {n} clean prompts, {len(corrupt)} corrupted prompts, {len(correct)} correct and "
            f"{len(wrong)} wrong answers: pass one of each per example"
        )
    if where is not None and len(where) != n:
        raise InterpError(f"got {len(where)} example names for {n} examples: pass one name per example (or none)")
    names = list(where) if where is not None else [f"prompt {i}" for i in range(n)]
    rows_clean = [token_ids(tokenizer, t) for t in clean]
    rows_corrupt = [token_ids(tokenizer, t) for t in corrupt]
    # BOS first, once: a prompt whose text already opens with it (a chat template's) keeps its own
    lead = [int(bos is not None and r[:1] != [bos]) for r in rows_clean]
    rows_clean = [[bos] * k + r for k, r in zip(lead, rows_clean)]
    rows_corrupt = [[bos] * int(bos is not None and r[:1] != [bos]) + r for r in rows_corrupt]
    for i, (a, b) in enumerate(zip(rows_clean, rows_corrupt)):
        if not a or not b:
            raise InterpError(
                f"{names[i]}: the {'clean' if not a else 'corrupted'} prompt is empty: give at least one token of text"
            )
        if len(a) != len(b):
            raise InterpError(
                f"{names[i]}: the clean prompt has {len(a)} tokens but the corrupted prompt has {len(b)}: patching "
                "copies activations position by position, so both must tokenize to the same length. Change only "
                "words that are single tokens (swap a name for another one-token name), or rephrase the "
                f"corrupted prompt to match. clean={clean[i]!r} corrupted={corrupt[i]!r}"
            )
    lengths = Counter(len(r) for r in rows_clean)
    if len(lengths) > 1:
        ((common, _),) = lengths.most_common(1)
        odd = [f"{names[i]} ({len(r)})" for i, r in enumerate(rows_clean) if len(r) != common]
        raise InterpError(
            f"prompts tokenize to different lengths {dict(sorted(lengths.items()))}: most have {common} tokens but "
            f"{_several(odd)} do not. Positions must mean the same thing in every prompt of a batch: use "
            "templates of one token length (fillers of one token each) or run each length group as its own batch"
        )
    correct_ids = [_check_answer(tokenizer, a, names[i]) for i, a in enumerate(correct)]
    wrong_ids = [_check_answer(tokenizer, a, names[i]) for i, a in enumerate(wrong)]
    same = [names[i] for i in range(n) if correct_ids[i] == wrong_ids[i]]
    if same:
        raise InterpError(
            f"{_several(same)}: the same correct and wrong answer token, so the logit difference would be 0; "
            "give two different one-token answers"
        )
    clean_t = torch.tensor(rows_clean, dtype=torch.long)
    shift = torch.tensor(lead, dtype=torch.long)

    def past_bos(where: Any) -> torch.Tensor:
        where = torch.as_tensor(where, dtype=torch.long)
        return torch.where(where >= 0, where + shift, where)

    roles_t = {k: past_bos(v) for k, v in (roles or {}).items()}
    slots = {k: past_bos(v) for k, v in slots.items()} if slots else None
    roles_t.setdefault("end", torch.full((n,), clean_t.shape[1] - 1, dtype=torch.long))
    return TaskBatch(
        task=task,
        clean=clean_t,
        corrupt=torch.tensor(rows_corrupt, dtype=torch.long),
        correct=torch.tensor(correct_ids, dtype=torch.long),
        wrong=torch.tensor(wrong_ids, dtype=torch.long),
        clean_text=tuple(clean),
        corrupt_text=tuple(corrupt),
        answers=tuple(zip(correct, wrong)),
        order=tuple(order) if order is not None else ("",) * n,
        roles=roles_t,
        pos_labels=_pos_labels(
            tokenizer, clean_t, {k: torch.as_tensor(v) for k, v in slots.items()} if slots else roles_t
        ),
        dropped=tuple(dropped),
    )


def _pos_labels(tokenizer: Any, clean: torch.Tensor, slots: dict) -> tuple[str, ...]:
    """Label per position: the shared token, else the slot there in every prompt, else the tokens seen."""
    labels = []
    for p in range(clean.shape[1]):
        col = clean[:, p]
        slot = [name for name, where in slots.items() if bool((where == p).all())]
        distinct = list(dict.fromkeys(col.tolist()))
        if len(distinct) == 1:
            labels.append(tokenizer.decode([distinct[0]]))
        elif slot:
            labels.append("|".join(slot))
        elif len(distinct) <= 3:
            labels.append("/".join(tokenizer.decode([t]).strip() for t in distinct))
        else:
            labels.append(f"pos {p}")
    return tuple(labels)


def position_of(ids: list[int], token: int, nth: int = 0) -> int:
    """Position of the ``nth`` occurrence of ``token`` in ``ids`` (a filler word that merged with its neighbours has none)."""
    hits = [i for i, t in enumerate(ids) if t == token]
    if len(hits) <= nth:
        raise InterpError("a filler word merged with its neighbours when tokenized: choose other words")
    return hits[nth]
