"""Text-format parse errors in the names users know.

protobuf names the message in its errors by full name, which for sigserve's copies of TF Serving's
protos is `sigserve.tensorflow.serving.ModelServerConfig`: an internal package the user never wrote.
TF Serving says `tensorflow.serving.ModelServerConfig`; so do these errors, with the nearest field
name when the error is a misspelt one.
"""

from __future__ import annotations

import difflib
import re

from google.protobuf import descriptor_pool, text_format

_PREFIX = "sigserve."
_NO_FIELD = re.compile(r'Message type "([\w.]+)" has no field named "(\w+)"')


def error_text(error: text_format.ParseError) -> str:
    """`error`'s message with TF Serving's proto names and, for an unknown field, the closest one."""
    text = str(error).rstrip(".")
    match = _NO_FIELD.search(text)
    hint = ""
    if match:
        try:
            fields = [f.name for f in descriptor_pool.Default().FindMessageTypeByName(match[1]).fields]
        except KeyError:
            fields = []
        close = difflib.get_close_matches(match[2], fields, n=1)
        if close:
            hint = f" (did you mean {close[0]}?)"
        elif fields:
            hint = f" (its fields: {', '.join(fields)})"
    return text.replace('"' + _PREFIX, '"') + hint
