"""Untrusted text (corpus windows, tokens, file names) on its way into HTML and JavaScript.

HTML goes through Jinja2 with autoescape on. Data for scripts goes into ``.js`` files as JSON in
which ``<``, ``>``, ``&``, U+2028 and U+2029 are ``\\u`` escapes: the result is still valid JSON
(and a valid JS literal) but can never close a ``<script>`` element or open a comment, whatever
the strings hold. Scripts then put strings into the page with ``textContent``, never ``innerHTML``.
"""

from __future__ import annotations

import json
from typing import Any

_UNSAFE = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def js_literal(obj: Any) -> str:
    """``obj`` as JSON that is safe inside a script element and a .js file (see the module doc)."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for char, escaped in _UNSAFE.items():
        text = text.replace(char, escaped)
    return text
