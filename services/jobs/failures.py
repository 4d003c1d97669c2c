"""What a failed task tells API clients: the exception's type and message, without where the worker
keeps its files. The full traceback is in the worker's log (``run.py`` logs it), not in the row.

Messages carry paths from many places (``FileNotFoundError`` names the file, a filesystem store
names its root, a DataLoader worker's error embeds the whole traceback of the child process).
Rather than trusting each to be clean, every message is cleaned here: traceback blocks are dropped
and each absolute path is cut to its last segment, which is usually what tells a reader something.
"""

from __future__ import annotations

import re

from services.errors import dependency_of
from services.learning.errors import PretrainedWeightsUnavailable

# "Traceback (most recent call last):" (also "Original Traceback ..." from a DataLoader worker)
# starts a block of indented frame lines; the unindented line after it is the error: kept.
_TRACEBACK = re.compile(r"^.*Traceback \(most recent call last\):\s*$")
_CHAINING = re.compile(r"^(During handling of the above exception|The above exception was the direct cause)")
# An absolute POSIX path: a '/' that does not continue a word, a relative path or a URL ("a/b",
# "./x", "http://h/p" stay), then directories, then the last segment, which is kept.
_SEGMENT = r"[^\s/'\"`<>|:;,()\[\]{}]+"
_ABSOLUTE_PATH = re.compile(rf"(?<![\w.~/:-])/(?:{_SEGMENT}/)+({_SEGMENT})")


def describe(err: BaseException) -> str:
    """What a task that failed with ``err`` shows: its type and message; for a dependency that was
    down, which one only (its address and the driver's words stay in the worker's log)."""
    if dependency := dependency_of(err):
        return f"{type(err).__name__}: {dependency} unavailable (the worker's log has the details)"
    if isinstance(err, PretrainedWeightsUnavailable):  # what to change, in the task spec's terms
        return (f"{type(err).__name__}: {err}. Put {err.file_name} in STRATA_BACKBONE_WEIGHTS_DIR on the workers, or "
                "submit the task again with hyperparameters.backbone_weights (a weights file on the worker) or "
                "hyperparameters.pretrained_backbone: false (random initialisation)")
    return f"{type(err).__name__}: {err}"


def public_error(message: str) -> str:
    """``message`` without traceback blocks and with every absolute path cut to its last segment."""
    return _ABSOLUTE_PATH.sub(r"\1", _without_tracebacks(message))


def _without_tracebacks(message: str) -> str:
    lines = message.splitlines()
    if not any(_TRACEBACK.match(line) for line in lines):
        return message
    kept: list[str] = []
    in_traceback = False
    for line in lines:
        if _TRACEBACK.match(line):
            in_traceback = True
        elif (in_traceback and line[:1].isspace()) or _CHAINING.match(line) or not line.strip():
            continue  # a frame ('  File "...", line N, in f'), its source line, or what joins two tracebacks
        else:
            in_traceback = False
            kept.append(line)
    return "\n".join(kept)
