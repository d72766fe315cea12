# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Values written into Markdown (GitHub Flavored) so that they show as they read and cannot
change the document's structure: table cells, paragraph text and Mermaid labels.

This is a private module_utils file: its API may change without notice. It has no Ansible
imports: the filters in plugins/filter/markdown.py wrap it, and the audit's module_utils and the
unit tests use it directly.
"""

from __future__ import annotations

import json
import re

CELL_LIMIT = 300            # characters of a value shown in a table cell
TEXT_LIMIT = 10 ** 6        # paragraph and heading text is escaped as a cell, not cut
MERMAID_LIMIT = 80


def compact(value):
    """Any JSON value as short readable text: strings as they are, the rest as compact JSON."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          default=str)
    except (TypeError, ValueError, RecursionError):
        return str(value)


_CELL_TRANSLATION = {ord(char): "\\" + char for char in "\\|`*_[]~"}
_CELL_TRANSLATION.update({ord("<"): "&lt;", ord(">"): "&gt;", ord("&"): "&amp;",
                          ord("\n"): "<br>", 0x7f: "\u2421"})
_CELL_TRANSLATION.update({code: chr(0x2400 + code) for code in range(0x20) if code not in (9, 10)})
_EDGE_SPACE = {" ": "&#32;", "\t": "&#9;"}


def table_cell(value, limit=CELL_LIMIT):
    """The Markdown text of one GFM table cell that shows value as it reads.

    Strings are shown as they are, other values as compact JSON. Longer than limit characters,
    the value is cut and ends in an ellipsis. Backslashes and the characters Markdown would act
    on (pipes, backticks, emphasis, brackets, tildes) are backslash-escaped, `<`, `>` and `&`
    become HTML entities, newlines become <br>, other control characters their visible symbol,
    and spaces at either end (which a table trims) character references.
    """
    text = compact(value).replace("\r\n", "\n").replace("\r", "\n")
    if len(text) > limit:
        text = text[:max(limit - 1, 0)] + "\u2026"
    core = text.strip(" \t")
    lead = text[:len(text) - len(text.lstrip(" \t"))]
    trail = text[len(lead) + len(core):] if core else ""
    return ("".join(_EDGE_SPACE[char] for char in lead) + core.translate(_CELL_TRANSLATION)
            + "".join(_EDGE_SPACE[char] for char in trail))


def inline_text(value):
    """Text in a paragraph or heading: escaped as a table cell is, without cutting it."""
    return table_cell(value, limit=TEXT_LIMIT)


_MERMAID_UNSAFE = re.compile(r'[^A-Za-z0-9 .,:;_+\-/()%#=]')


def mermaid_text(value, limit=MERMAID_LIMIT):
    """Text safe inside a double-quoted Mermaid label: one line, no quotes or brackets."""
    text = _MERMAID_UNSAFE.sub("_", " ".join(compact(value).split()))
    return text[:limit]
