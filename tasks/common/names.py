"""Subject and song ids come from outside: each must be one plain folder name."""
from __future__ import annotations

import re

from tasks.common.errors import PipelineInputError

_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_name(name: str, what: str = "subject") -> str:
    """`name` if it is a single plain folder name (letters, digits, '.', '_', '-'; no leading dot)."""
    if not isinstance(name, str) or not _PLAIN.fullmatch(name) or name in (".", ".."):
        raise PipelineInputError(repr(name), f"not a valid {what} id: use one plain folder name "
                                 "(letters, digits, '.', '_', '-', not starting with a dot)",
                                 f"name the {what} by its folder under the raw root")
    return name
