"""Tasks for circuit patching: Indirect Object Identification and Colored Objects.

Both tasks are written for this project and generated from a seed and a size. Each produces a
:class:`TaskBatch`: clean and corrupted token batches of the *same* length (so that patching by
position compares like with like), and the correct and wrong answer token of every prompt, whose
logit difference is the patching metric (METRICS.md, "Circuit patching").

- **IOI** (Wang et al. 2022, "Interpretability in the Wild"): "When Mary and John went to the
  store, John gave a drink to" -> " Mary". The indirect object (IO) is correct, the repeated
  subject (S) wrong. Half the prompts are ABBA (IO named first), half BABA (S named first). The
  corrupted prompt is the "ABC" distribution: the same template with three *other* names, so
  neither answer appears in it and the model has no reason to prefer one.
- **Colored Objects** (Ippolito & Callison-Burch 2023; as used by Merullo et al. 2023, "Circuit
  component reuse across tasks"): "On the desk there is a red pen, a blue cup and a green hat.
  Which color is the cup? It is" -> " blue". The wrong answer is the colour of another item
  on the table (the distractor). The corrupted prompt exchanges the colours of the asked item
  and the distractor ("a red pen, a green cup and a blue hat"), so it holds the same tokens and
  only the binding of colour to object changes: a model that reads the binding flips its answer,
  and token-frequency preferences between the two colours cancel. (Replacing all colours by
  unused ones, the analogue of IOI's ABC, leaves each prompt's prior preference between the two
  answer colours in the corrupted run; with a weak 135M model that bias is as large as the clean
  logit difference and makes the normalised score unstable.)

Every name, place, object and colour must be a single token for the model's tokenizer (the
logit difference compares two tokens; the corruption must not change the length). The default
word lists are filtered to single tokens at generation time (what was dropped is recorded);
word lists and templates you pass yourself are checked strictly, with errors that say what to
change. `task_from_prompts` turns any hand-written prompt pairs into a `TaskBatch` with the
same checks, and `task_from_jsonl` reads such pairs from a file, one
``{"clean", "corrupt", "correct", "wrong"}`` object per line (what ``interp patch pairs`` runs);
its errors name the offending line.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from interp.errors import InterpError

__all__ = [
    "TaskBatch",
    "IOIConfig",
    "ColoredObjectsConfig",
    "TASKS",
    "ioi",
    "colored_objects",
    "make_task",
    "task_from_prompts",
    "PAIR_KEYS",
    "read_pairs",
    "task_from_jsonl",
    "IOI_TEMPLATES",
    "NAMES",
    "PLACES",
    "OBJECTS",
    "CO_TEMPLATE",
    "CO_OBJECTS",
    "COLOURS",
]

# Placeholders: {N1} and {N2} are the two names introduced first, {S} the repeated subject.
# All templates share one shape so that, with single-token fillers, every role (IO, S1, S2,
# end) sits at the same position in every prompt of a dataset.
IOI_TEMPLATES: tuple[str, ...] = (
    "When {N1} and {N2} went to the {place}, {S} gave a {object} to",
    "After {N1} and {N2} went to the {place}, {S} gave a {object} to",
    "When {N1} and {N2} got to the {place}, {S} handed a {object} to",
    "Once {N1} and {N2} came to the {place}, {S} passed a {object} to",
    "While {N1} and {N2} walked to the {place}, {S} brought a {object} to",
    "After {N1} and {N2} ran to the {place}, {S} sent a {object} to",
)
NAMES: tuple[str, ...] = tuple(
    "Mary John Tom James Anna Sarah David Michael Lisa Paul Kate Alice Bob Emma Jack Peter Mark "
    "Laura Daniel Rachel Kevin Helen Steven Jessica Robert Linda Richard Susan Thomas Karen Brian "
    "Nancy Eric Amy Adam Emily Ryan Anne Henry Lucy Jane Jason Alex Sam Ben Tim Dan Joe Frank George".split()
)
PLACES: tuple[str, ...] = tuple(
    "store park school hospital restaurant office station garden beach market library museum "
    "church house kitchen farm river lake airport bank".split()
)
OBJECTS: tuple[str, ...] = tuple(
    "drink book ring bone basketball computer necklace snack apple ball gift letter bag key "
    "phone cake flower hat ticket".split()
)

# Colored Objects: {items} is the list "a red pen, a blue cup and a green hat", {query} the asked object.
# Zero-shot. The embedded SmolLM2-135M is near chance on it (LD > 0 on about half the prompts) but
# clearly reads the binding: exchanging two colours moves its LD by about 0.8 on average. Other
# phrasings and one- or two-shot prefixes tried did no better and cost 2-3x the tokens.
CO_TEMPLATE = "On the desk there is {items}. Which color is the {query}? It is"
CO_OBJECTS: tuple[str, ...] = tuple(
    "pen book cup ball hat key bag box lamp phone shoe plate bottle chair clock sock toy car bike "
    "coat shirt pencil".split()
)
COLOURS: tuple[str, ...] = tuple("red blue green yellow black white orange purple pink brown grey silver gold".split())


@dataclass(frozen=True)
class TaskBatch:
    """Clean and corrupted prompts of one task, tokenized, with their answer tokens.

    Attributes:
        task: "ioi", "colored-objects" or a name given to `task_from_prompts`.
        clean: LongTensor [batch, pos], the clean prompts (no BOS; what `LoadedModel.encode` gives).
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
    ) -> "TaskBatch":
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
            task=task, clean=clean, corrupt=corrupt, correct=correct, wrong=wrong,
            clean_text=("",) * n, corrupt_text=("",) * n, answers=(("", ""),) * n, order=("",) * n,
            roles={"end": torch.full((n,), clean.shape[1] - 1, dtype=torch.long)},
            pos_labels=tuple(f"pos {p}" for p in range(clean.shape[1])),
        )

    def to(self, device) -> "TaskBatch":
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


@dataclass(frozen=True)
class IOIConfig:
    """Settings of the IOI generator (Wang et al. 2022)."""

    n: int = 16  # number of prompts (half ABBA, half BABA; odd n gives one more ABBA)
    seed: int = 0  # seed of the random choices of template, names, place and object
    templates: Optional[tuple[str, ...]] = None  # None: IOI_TEMPLATES (those of the common token length)
    names: Optional[tuple[str, ...]] = None  # None: NAMES filtered to single tokens (need >= 5)
    places: Optional[tuple[str, ...]] = None  # None: PLACES filtered to single tokens
    objects: Optional[tuple[str, ...]] = None  # None: OBJECTS filtered to single tokens


@dataclass(frozen=True)
class ColoredObjectsConfig:
    """Settings of the Colored Objects generator (Merullo et al. 2023)."""

    n: int = 16  # number of prompts
    seed: int = 0  # seed of the random choices of objects, colours and the asked item
    n_items: int = 3  # items on the table (>= 2), each a different colour
    template: str = CO_TEMPLATE  # must contain {items} and {query}
    objects: Optional[tuple[str, ...]] = None  # None: CO_OBJECTS filtered to single tokens
    colours: Optional[tuple[str, ...]] = None  # None: COLOURS filtered to single tokens


# --------------------------------------------------------------------------------------------
# Tokenization checks
# --------------------------------------------------------------------------------------------


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False).input_ids)


def _single_token(tokenizer, word: str) -> Optional[int]:
    """The id of ``word`` if it is exactly one token, else None."""
    ids = _ids(tokenizer, word)
    return ids[0] if len(ids) == 1 else None


def _word_pool(tokenizer, given, default, what: str, need: int) -> tuple[list[str], list[str]]:
    """Words usable as single tokens (with a leading space). Strict for user lists.

    Returns (usable words, dropped words).
    """
    if given is not None:
        words = list(given)
        bad = [w for w in words if _single_token(tokenizer, " " + w) is None]
        if bad:
            raise InterpError(
                f"these {what} are not single tokens for this tokenizer (with a leading space): {bad[:8]}; "
                f"the logit difference and equal-length corruption need one token per {what[:-1]}: "
                f"remove them or pick other words"
            )
        dropped: list[str] = []
    else:
        words = [w for w in default if _single_token(tokenizer, " " + w) is not None]
        dropped = [w for w in default if w not in words]
    words = list(dict.fromkeys(words))
    if len(words) < need:
        raise InterpError(
            f"only {len(words)} {what} are single tokens for this tokenizer but the task needs {need}: "
            f"pass a longer list of one-token {what} in the task config"
        )
    return words, dropped


def _check_answer(tokenizer, answer: str, where: str) -> int:
    ids = _ids(tokenizer, answer)
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
    tokenizer,
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
) -> TaskBatch:
    """Tokenize prompt pairs into a :class:`TaskBatch`, checking what patching needs.

    Args:
        tokenizer: the model's tokenizer.
        clean, corrupt: one clean and one corrupted prompt per example.
        correct, wrong: per example, the correct and the wrong answer (one token each, usually
            with a leading space).
        task: a name for the task.
        order: optional per-example tag (e.g. "ABBA").
        roles: optional role name -> positions per example (e.g. IO, S1, S2 for IOI).
        slots: optional template slot name -> positions per example, used to label positions
            where the prompts hold different words (default: ``roles``).
        dropped: default words left out by a generator (recorded in the batch).
        where: optional name of each example for error messages (e.g. "pairs.jsonl line 3");
            default "prompt i".

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
    rows_clean = [_ids(tokenizer, t) for t in clean]
    rows_corrupt = [_ids(tokenizer, t) for t in corrupt]
    for i, (a, b) in enumerate(zip(rows_clean, rows_corrupt)):
        if not a or not b:
            raise InterpError(f"{names[i]}: the {'clean' if not a else 'corrupted'} prompt is empty: give at least one token of text")
        if len(a) != len(b):
            raise InterpError(
                f"{names[i]}: the clean prompt has {len(a)} tokens but the corrupted prompt has {len(b)}: patching "
                "copies activations position by position, so both must tokenize to the same length. Change only "
                "words that are single tokens (swap a name for another one-token name), or rephrase the "
                f"corrupted prompt to match. clean={clean[i]!r} corrupted={corrupt[i]!r}"
            )
    lengths = Counter(len(r) for r in rows_clean)
    if len(lengths) > 1:
        (common, _), = lengths.most_common(1)
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
    roles_t = {k: torch.as_tensor(v, dtype=torch.long) for k, v in (roles or {}).items()}
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


PAIR_KEYS = ("clean", "corrupt", "correct", "wrong")  # the keys of one line of a pairs file


def read_pairs(path: Union[str, Path]) -> tuple[list[dict], list[int]]:
    """Read a pairs file: one JSON object ``{"clean", "corrupt", "correct", "wrong"}`` per line.

    Blank lines are skipped; other keys on a line are ignored (e.g. an "id" of your own). Each
    value must be a non-empty string; answers are usually a word with a leading space (" Mary").

    Args:
        path: a JSONL file.

    Returns:
        (records with the four keys, their 1-based line numbers).

    Raises:
        InterpError: a missing or unreadable file, a line that is not a JSON object, a missing
            key or a value that is not a non-empty string (naming the line), or no pairs at all.
    """
    path = Path(path)
    shape = '{"clean": ..., "corrupt": ..., "correct": " Mary", "wrong": " John"}'
    if not path.is_file():
        raise InterpError(f"pairs file {path} not found: pass a JSONL file with one {shape} object per line")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise InterpError(f"cannot read pairs file {path} ({err}): pass a UTF-8 text file with one JSON object per line") from err
    records, lines = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name} line {number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise InterpError(
                f"{where} is not valid JSON ({err.msg} at column {err.colno}): each line must be one object like {shape}"
            ) from err
        if not isinstance(obj, dict):
            raise InterpError(f"{where} holds a JSON {type(obj).__name__}, not an object: write one object like {shape} per line")
        missing = [k for k in PAIR_KEYS if k not in obj]
        if missing:
            raise InterpError(f"{where} lacks {', '.join(repr(k) for k in missing)}: every line needs {', '.join(PAIR_KEYS)}")
        bad = [k for k in PAIR_KEYS if not isinstance(obj[k], str) or not obj[k]]
        if bad:
            raise InterpError(f"{where}: {', '.join(repr(k) for k in bad)} must be a non-empty string")
        records.append({k: obj[k] for k in PAIR_KEYS})
        lines.append(number)
    if not records:
        raise InterpError(f"pairs file {path} holds no pairs: write one {shape} object per line")
    return records, lines


def task_from_jsonl(tokenizer, path: Union[str, Path], *, task: Optional[str] = None) -> TaskBatch:
    """A :class:`TaskBatch` from a pairs file (see `read_pairs`), with the checks of the built-in tasks.

    Args:
        tokenizer: the model's tokenizer.
        path: a JSONL file, one ``{"clean", "corrupt", "correct", "wrong"}`` object per line.
        task: the task's name (default: the file name without its extension).

    Raises:
        InterpError: as `read_pairs` and `task_from_prompts`; every message names the line
            (clean and corrupted prompts of different token lengths, prompts of different
            lengths, answers that are not one token, equal answers).
    """
    path = Path(path)
    records, lines = read_pairs(path)
    return task_from_prompts(
        tokenizer, *([r[k] for r in records] for k in PAIR_KEYS), task=task or path.stem,
        where=[f"{path.name} line {n}" for n in lines],
    )


def _pos_labels(tokenizer, clean: torch.Tensor, slots: dict) -> tuple[str, ...]:
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


def _position(ids: list[int], token: int, nth: int = 0) -> int:
    hits = [i for i, t in enumerate(ids) if t == token]
    if len(hits) <= nth:
        raise InterpError("a filler word merged with its neighbours when tokenized: choose other words")
    return hits[nth]


# --------------------------------------------------------------------------------------------
# IOI
# --------------------------------------------------------------------------------------------


def _ioi_templates(tokenizer, given) -> tuple[list[str], list[str]]:
    """Templates of one common token length (strict for user templates)."""
    probe = {"N1": "Mary", "N2": "John", "S": "John", "place": "store", "object": "drink"}
    templates = list(given) if given is not None else list(IOI_TEMPLATES)
    if not templates:
        raise InterpError("no IOI templates given: pass at least one template with {N1}, {N2} and {S}")
    for t in templates:
        if not all("{" + k + "}" in t for k in ("N1", "N2", "S")):
            raise InterpError(f"IOI template {t!r} lacks a placeholder: it needs {{N1}}, {{N2}} and {{S}}")
    lengths = {t: len(_ids(tokenizer, t.format_map(_Fill(probe)))) for t in templates}
    common = Counter(lengths.values()).most_common(1)[0][0]
    keep = [t for t in templates if lengths[t] == common]
    if given is not None and len(keep) < len(templates):
        raise InterpError(
            f"IOI templates tokenize to different lengths {sorted(set(lengths.values()))}: positions must line up "
            "across prompts; pass templates of one token length"
        )
    return keep, [t for t in templates if t not in keep]


class _Fill(dict):
    """format_map helper: placeholders a template does not use are simply ignored."""

    def __missing__(self, key):
        return "{" + key + "}"


def ioi(tokenizer, config: IOIConfig = IOIConfig()) -> TaskBatch:
    """Generate the IOI task (Wang et al. 2022): ABBA/BABA clean prompts, ABC corrupted prompts.

    Prompt ``i`` is ABBA for even ``i`` and BABA for odd ``i``. Correct answer: the indirect
    object; wrong answer: the subject. The corrupted prompt uses the same template, place and
    object with three names different from each other and from IO and S.

    Args:
        tokenizer: the model's tokenizer (checks that every filler is one token).
        config: `IOIConfig`.

    Returns:
        A `TaskBatch` with roles IO, S1, S2, end.

    Raises:
        InterpError: n < 1, too few single-token words, or user templates of unequal lengths.
    """
    if config.n < 1:
        raise InterpError(f"n = {config.n}: ask for at least one prompt")
    templates, dropped_t = _ioi_templates(tokenizer, config.templates)
    names, d1 = _word_pool(tokenizer, config.names, NAMES, "names", 5)
    places, d2 = _word_pool(tokenizer, config.places, PLACES, "places", 1)
    objects, d3 = _word_pool(tokenizer, config.objects, OBJECTS, "objects", 1)
    name_id = {w: _single_token(tokenizer, " " + w) for w in names}
    rng = random.Random(config.seed)
    clean, corrupt, correct, wrong, order = [], [], [], [], []
    roles: dict[str, list[int]] = {"IO": [], "S1": [], "S2": [], "end": []}
    slots: dict[str, list[int]] = {"N1": [], "N2": [], "S2": [], "place": [], "object": []}
    for i in range(config.n):
        template = rng.choice(templates)
        io, s = rng.sample(names, 2)
        c, d, e = rng.sample([w for w in names if w not in (io, s)], 3)
        fill = {"place": rng.choice(places), "object": rng.choice(objects)}
        abba = i % 2 == 0
        n1, n2 = (io, s) if abba else (s, io)
        text = template.format_map(_Fill({**fill, "N1": n1, "N2": n2, "S": s}))
        clean.append(text)
        corrupt.append(template.format_map(_Fill({**fill, "N1": c, "N2": d, "S": e})))
        correct.append(" " + io)
        wrong.append(" " + s)
        order.append("ABBA" if abba else "BABA")
        ids = _ids(tokenizer, text)
        roles["IO"].append(_position(ids, name_id[io]))
        roles["S1"].append(_position(ids, name_id[s], 0))
        roles["S2"].append(_position(ids, name_id[s], 1))
        roles["end"].append(len(ids) - 1)
        slots["N1"].append(_position(ids, name_id[n1]))
        slots["N2"].append(_position(ids, name_id[n2]))
        slots["S2"].append(roles["S2"][-1])
        for key in ("place", "object"):
            at = [_position(ids, t) for t in (_single_token(tokenizer, " " + fill[key]),) if t in ids]
            slots[key].append(at[0] if at else -1)
    return task_from_prompts(
        tokenizer, clean, corrupt, correct, wrong, task="ioi", order=order, roles=roles, slots=slots,
        dropped=dropped_t + d1 + d2 + d3,
    )


# --------------------------------------------------------------------------------------------
# Colored Objects
# --------------------------------------------------------------------------------------------


def _item_list(pairs: Sequence[tuple[str, str]]) -> str:
    parts = [f"a {c} {o}" for c, o in pairs]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def colored_objects(tokenizer, config: ColoredObjectsConfig = ColoredObjectsConfig()) -> TaskBatch:
    """Generate the Colored Objects task (Merullo et al. 2023).

    Each prompt lists ``n_items`` coloured objects and asks for the colour of one of them.
    Correct answer: that item's colour; wrong answer: the colour of another (random) item, the
    distractor. The corrupted prompt is the clean one with the colours of the asked item and the
    distractor exchanged (objects, question and the set of tokens unchanged).

    Args:
        tokenizer: the model's tokenizer.
        config: `ColoredObjectsConfig`.

    Returns:
        A `TaskBatch` with roles item (the asked object in the list), colour (its colour),
        distractor (the distractor's colour), query (the object in the question) and end.

    Raises:
        InterpError: n < 1, n_items < 2, a template without {items}/{query}, or too few
            single-token objects or colours.
    """
    if config.n < 1:
        raise InterpError(f"n = {config.n}: ask for at least one prompt")
    if config.n_items < 2:
        raise InterpError(f"n_items = {config.n_items}: a question needs at least 2 items to choose between")
    if "{items}" not in config.template or "{query}" not in config.template:
        raise InterpError("the Colored Objects template needs {items} and {query} placeholders")
    objects, d1 = _word_pool(tokenizer, config.objects, CO_OBJECTS, "objects", config.n_items)
    colours, d2 = _word_pool(tokenizer, config.colours, COLOURS, "colours", config.n_items)
    rng = random.Random(config.seed)
    clean, corrupt, correct, wrong = [], [], [], []
    roles: dict[str, list[int]] = {"item": [], "colour": [], "distractor": [], "query": [], "end": []}
    slots: dict[str, list[int]] = {f"{kind}{j + 1}": [] for j in range(config.n_items) for kind in ("colour", "object")}
    slots["query"] = []
    for _ in range(config.n):
        objs = rng.sample(objects, config.n_items)
        cols = rng.sample(colours, config.n_items)
        q = rng.randrange(config.n_items)
        d = rng.choice([j for j in range(config.n_items) if j != q])
        swapped = list(cols)
        swapped[q], swapped[d] = cols[d], cols[q]
        text = config.template.format(items=_item_list(list(zip(cols, objs))), query=objs[q])
        clean.append(text)
        corrupt.append(config.template.format(items=_item_list(list(zip(swapped, objs))), query=objs[q]))
        correct.append(" " + cols[q])
        wrong.append(" " + cols[d])
        ids = _ids(tokenizer, text)
        obj_id = _single_token(tokenizer, " " + objs[q])
        col_id = _single_token(tokenizer, " " + cols[q])
        roles["item"].append(_position(ids, obj_id, 0))
        roles["colour"].append(_position(ids, col_id, 0))
        roles["distractor"].append(_position(ids, _single_token(tokenizer, " " + cols[d]), 0))
        roles["query"].append(_position(ids, obj_id, 1))
        roles["end"].append(len(ids) - 1)
        for j in range(config.n_items):
            slots[f"colour{j + 1}"].append(_position(ids, _single_token(tokenizer, " " + cols[j])))
            slots[f"object{j + 1}"].append(_position(ids, _single_token(tokenizer, " " + objs[j])))
        slots["query"].append(roles["query"][-1])
    return task_from_prompts(
        tokenizer, clean, corrupt, correct, wrong, task="colored-objects", roles=roles, slots=slots,
        dropped=d1 + d2,
    )


TASKS = ("ioi", "colored-objects")


def make_task(tokenizer, task: str, n: int = 16, seed: int = 0) -> TaskBatch:
    """Generate ``task`` ("ioi" or "colored-objects") with ``n`` prompts from ``seed``."""
    if task == "ioi":
        return ioi(tokenizer, IOIConfig(n=n, seed=seed))
    if task in ("colored-objects", "colored_objects", "co"):
        return colored_objects(tokenizer, ColoredObjectsConfig(n=n, seed=seed))
    raise InterpError(f"unknown task '{task}': use one of {', '.join(TASKS)}")
