"""Indirect Object Identification (Wang et al. 2022, "Interpretability in the Wild").

"When Mary and John went to the store, John gave a drink to" -> " Mary". The indirect object (IO)
is correct, the repeated subject (S) wrong. Half the prompts are ABBA (IO named first), half BABA
(S named first). The corrupted prompt is the "ABC" distribution: the same template with three
*other* names, so neither answer appears in it and the model has no reason to prefer one.

Every name, place and object must be a single token for the model's tokenizer. The default word
lists are filtered to single tokens at generation time (what was dropped is recorded in the
task); word lists and templates you pass yourself are checked strictly, with errors that say
what to change. Written for this project; generated from a seed and a size.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Any, Optional

from interp.config import Config
from interp.datasets.task_batch import TaskBatch, position_of, single_token, task_from_prompts, token_ids, word_pool
from interp.errors import InterpError

__all__ = ["IOIConfig", "ioi", "IOI_TEMPLATES", "NAMES", "PLACES", "OBJECTS"]

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


@dataclass(frozen=True)
class IOIConfig(Config):
    """Settings of the IOI generator (Wang et al. 2022); word lists are checked against the
    tokenizer when the task is generated (`ioi`)."""

    n: int = 16  # number of prompts (half ABBA, half BABA; odd n gives one more ABBA)
    seed: int = 0  # seed of the random choices of template, names, place and object
    templates: Optional[tuple[str, ...]] = None  # None: IOI_TEMPLATES (those of the common token length)
    names: Optional[tuple[str, ...]] = None  # None: NAMES filtered to single tokens (need >= 5)
    places: Optional[tuple[str, ...]] = None  # None: PLACES filtered to single tokens
    objects: Optional[tuple[str, ...]] = None  # None: OBJECTS filtered to single tokens

    def validate(self) -> None:
        """Raise `InterpError` on a size below one or templates without their placeholders."""
        if self.n < 1:
            raise InterpError(f"n = {self.n}: ask for at least one prompt")
        for name in ("templates", "names", "places", "objects"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise InterpError(f"{name} must be a sequence of strings: wrap a single one as ({value!r},)")
            if value is not None:
                self.normalise(**{name: tuple(value)})
        if self.templates is not None:
            if not self.templates:
                raise InterpError("no IOI templates given: pass at least one template with {N1}, {N2} and {S}")
            for t in self.templates:
                if not all("{" + k + "}" in t for k in ("N1", "N2", "S")):
                    raise InterpError(f"IOI template {t!r} lacks a placeholder: it needs {{N1}}, {{N2}} and {{S}}")


def _ioi_templates(tokenizer: Any, given: Optional[tuple[str, ...]]) -> tuple[list[str], list[str]]:
    """Templates of one common token length (strict for user templates)."""
    probe = {"N1": "Mary", "N2": "John", "S": "John", "place": "store", "object": "drink"}
    templates = list(given) if given is not None else list(IOI_TEMPLATES)  # checked by IOIConfig
    lengths = {t: len(token_ids(tokenizer, t.format_map(_Fill(probe)))) for t in templates}
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


def ioi(tokenizer: Any, config: IOIConfig = IOIConfig(), *, bos: Optional[int] = None) -> TaskBatch:
    """Generate the IOI task (Wang et al. 2022): ABBA/BABA clean prompts, ABC corrupted prompts.

    Prompt ``i`` is ABBA for even ``i`` and BABA for odd ``i``. Correct answer: the indirect
    object; wrong answer: the subject. The corrupted prompt uses the same template, place and
    object with three names different from each other and from IO and S.

    Args:
        tokenizer: the model's tokenizer (checks that every filler is one token).
        config: `IOIConfig`.
        bos: the token every prompt opens with (`LoadedModel.bos_id`; None: none), counted in
            the role positions.

    Returns:
        A `TaskBatch` with roles IO, S1, S2, end.

    Raises:
        InterpError: too few single-token words, or user templates of unequal lengths.
    """
    templates, dropped_t = _ioi_templates(tokenizer, config.templates)
    names, d1 = word_pool(tokenizer, config.names, NAMES, "names", 5)
    places, d2 = word_pool(tokenizer, config.places, PLACES, "places", 1)
    objects, d3 = word_pool(tokenizer, config.objects, OBJECTS, "objects", 1)
    name_id = {w: single_token(tokenizer, " " + w) for w in names}
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
        ids = token_ids(tokenizer, text)
        roles["IO"].append(position_of(ids, name_id[io]))
        roles["S1"].append(position_of(ids, name_id[s], 0))
        roles["S2"].append(position_of(ids, name_id[s], 1))
        roles["end"].append(len(ids) - 1)
        slots["N1"].append(position_of(ids, name_id[n1]))
        slots["N2"].append(position_of(ids, name_id[n2]))
        slots["S2"].append(roles["S2"][-1])
        for key in ("place", "object"):
            at = [position_of(ids, t) for t in (single_token(tokenizer, " " + fill[key]),) if t in ids]
            slots[key].append(at[0] if at else -1)
    return task_from_prompts(
        tokenizer,
        clean,
        corrupt,
        correct,
        wrong,
        task="ioi",
        order=order,
        roles=roles,
        slots=slots,
        dropped=dropped_t + d1 + d2 + d3,
        bos=bos,
    )
