"""Data sets: what analyses are run on, apart from how they are scored.

Each module owns one kind of input and its file format, reads what ships in `interp/data`, and
raises `InterpError` on a bad file with the line to fix:

- `texts`: plain text sets (sinks, head detectors, AttentionInfluence).
- `needles`: needle-in-a-haystack samples (needles file, prompts with exact spans).
- `haystack`: the haystack text of those prompts (stdlib docstrings or the user's files).
- `tasks`, `ioi`, `colored_objects`: patching tasks, sets of clean/corrupted prompt pairs with
  their answers (IOI and Colored Objects generators, users' pairs files).
- `choices`: choice sets, labelled prompts answered by one of a few choices (the calibrations' "--task").
- `prompts`: prompt files, questions with an optional response to score (preplan and anchor).
- `random_tokens`: repeated random tokens (the head detectors' induction probe).
- `questions`: multiple-choice questions with one option per line (select-and-copy heads).
- `documents`: document-retrieval samples, documents and a query with its gold document (QRHead).
- `head_lists`: ranked heads from an earlier run's heads.csv (AttentionInfluence).
"""

from interp.datasets._files import read_user_text
from interp.datasets.texts import TEXT_SEPARATOR, default_texts, read_texts, split_texts, texts_digest

__all__ = ["TEXT_SEPARATOR", "default_texts", "read_texts", "read_user_text", "split_texts", "texts_digest"]

from interp.datasets.haystack import Haystack, load_haystack
from interp.datasets.needles import Needle, NeedleSample, PromptTemplate, build_samples, load_needles

__all__ += ["Haystack", "Needle", "NeedleSample", "PromptTemplate", "build_samples", "load_haystack", "load_needles"]

from interp.datasets.colored_objects import ColoredObjectsConfig, colored_objects
from interp.datasets.ioi import IOIConfig, ioi
from interp.datasets.tasks import TASKS, TaskBatch, make_task, read_pairs, task_from_jsonl, task_from_prompts

__all__ += [
    "TASKS",
    "TaskBatch",
    "make_task",
    "read_pairs",
    "task_from_jsonl",
    "task_from_prompts",
    "IOIConfig",
    "ioi",
    "ColoredObjectsConfig",
    "colored_objects",
]

from interp.datasets.choices import ChoiceItem, ChoiceSet, available_choice_sets, load_choices
from interp.datasets.prompts import Prompt, default_prompts, load_prompts

__all__ += [
    "ChoiceItem",
    "ChoiceSet",
    "available_choice_sets",
    "load_choices",
    "Prompt",
    "default_prompts",
    "load_prompts",
]

from interp.datasets.documents import QRSample, build_prompt, read_samples, shipped_samples
from interp.datasets.head_lists import read_heads
from interp.datasets.questions import Question, format_prompt, option_anchors, read_questions, shipped_questions
from interp.datasets.random_tokens import repeated_random_tokens

__all__ += [
    "QRSample",
    "build_prompt",
    "read_samples",
    "shipped_samples",
    "read_heads",
    "Question",
    "format_prompt",
    "option_anchors",
    "read_questions",
    "shipped_questions",
    "repeated_random_tokens",
]
