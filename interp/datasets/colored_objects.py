"""Colored Objects (Ippolito & Callison-Burch 2023; as used by Merullo et al. 2023, "Circuit
component reuse across tasks").

"On the desk there is a red pen, a blue cup and a green hat. Which color is the cup? It is" ->
" blue". The wrong answer is the colour of another item on the table (the distractor). The
corrupted prompt exchanges the colours of the asked item and the distractor ("a red pen, a green
cup and a blue hat"), so it holds the same tokens and only the binding of colour to object
changes: a model that reads the binding flips its answer, and token-frequency preferences
between the two colours cancel. (Replacing all colours by unused ones, the analogue of IOI's
ABC, leaves each prompt's prior preference between the two answer colours in the corrupted run;
with a weak 135M model that bias is as large as the clean logit difference and makes the
normalised score unstable.)

Every object and colour must be a single token for the model's tokenizer (default lists are
filtered, lists you pass are checked strictly). Written for this project.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from interp.config import Config
from interp.datasets.task_batch import TaskBatch, position_of, single_token, task_from_prompts, token_ids, word_pool
from interp.errors import InterpError

__all__ = ["ColoredObjectsConfig", "colored_objects", "CO_TEMPLATE", "CO_OBJECTS", "COLOURS"]

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
class ColoredObjectsConfig(Config):
    """Settings of the Colored Objects generator (Merullo et al. 2023); word lists are checked
    against the tokenizer when the task is generated (`colored_objects`)."""

    n: int = 16  # number of prompts
    seed: int = 0  # seed of the random choices of objects, colours and the asked item
    n_items: int = 3  # items on the table (>= 2), each a different colour
    template: str = CO_TEMPLATE  # must contain {items} and {query}
    objects: Optional[tuple[str, ...]] = None  # None: CO_OBJECTS filtered to single tokens
    colours: Optional[tuple[str, ...]] = None  # None: COLOURS filtered to single tokens

    def validate(self) -> None:
        """Raise `InterpError` on a size below one, fewer than 2 items, or a template without its placeholders."""
        if self.n < 1:
            raise InterpError(f"n = {self.n}: ask for at least one prompt")
        if self.n_items < 2:
            raise InterpError(f"n_items = {self.n_items}: a question needs at least 2 items to choose between")
        if "{items}" not in self.template or "{query}" not in self.template:
            raise InterpError("the Colored Objects template needs {items} and {query} placeholders")
        for name in ("objects", "colours"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise InterpError(f"{name} must be a sequence of strings: wrap a single one as ({value!r},)")
            if value is not None:
                self.normalise(**{name: tuple(value)})


def _item_list(pairs: Sequence[tuple[str, str]]) -> str:
    parts = [f"a {c} {o}" for c, o in pairs]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def colored_objects(
    tokenizer: Any, config: ColoredObjectsConfig = ColoredObjectsConfig(), *, bos: Optional[int] = None
) -> TaskBatch:
    """Generate the Colored Objects task (Merullo et al. 2023).

    Each prompt lists ``n_items`` coloured objects and asks for the colour of one of them.
    Correct answer: that item's colour; wrong answer: the colour of another (random) item, the
    distractor. The corrupted prompt is the clean one with the colours of the asked item and the
    distractor exchanged (objects, question and the set of tokens unchanged).

    Args:
        tokenizer: the model's tokenizer.
        config: `ColoredObjectsConfig`.
        bos: the token every prompt opens with (`LoadedModel.bos_id`; None: none), counted in
            the role positions.

    Returns:
        A `TaskBatch` with roles item (the asked object in the list), colour (its colour),
        distractor (the distractor's colour), query (the object in the question) and end.

    Raises:
        InterpError: too few single-token objects or colours.
    """
    objects, d1 = word_pool(tokenizer, config.objects, CO_OBJECTS, "objects", config.n_items)
    colours, d2 = word_pool(tokenizer, config.colours, COLOURS, "colours", config.n_items)
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
        ids = token_ids(tokenizer, text)
        obj_id = single_token(tokenizer, " " + objs[q])
        col_id = single_token(tokenizer, " " + cols[q])
        roles["item"].append(position_of(ids, obj_id, 0))
        roles["colour"].append(position_of(ids, col_id, 0))
        roles["distractor"].append(position_of(ids, single_token(tokenizer, " " + cols[d]), 0))
        roles["query"].append(position_of(ids, obj_id, 1))
        roles["end"].append(len(ids) - 1)
        for j in range(config.n_items):
            slots[f"colour{j + 1}"].append(position_of(ids, single_token(tokenizer, " " + cols[j])))
            slots[f"object{j + 1}"].append(position_of(ids, single_token(tokenizer, " " + objs[j])))
        slots["query"].append(roles["query"][-1])
    return task_from_prompts(
        tokenizer,
        clean,
        corrupt,
        correct,
        wrong,
        task="colored-objects",
        roles=roles,
        slots=slots,
        dropped=d1 + d2,
        bos=bos,
    )
