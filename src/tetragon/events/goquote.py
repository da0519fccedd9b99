"""Go's `strconv.Quote` and the "quote only when needed" rule of Tetragon's compact output."""

from __future__ import annotations

import unicodedata

__all__ = ["go_quote", "is_print", "quote_if_needed"]

_SIMPLE_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def is_print(ch: str) -> bool:
    """Go's strconv.IsPrint: letters, marks, numbers, punctuation, symbols and the ASCII space."""
    if " " <= ch <= "~":
        return True
    return ord(ch) > 0x7F and unicodedata.category(ch)[0] in "LMNPS"


def go_quote(text: str) -> str:
    """Go's strconv.Quote: a double-quoted Go string literal for `text`."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif is_print(ch):
            out.append(ch)
        elif ch in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif 0xDC80 <= code <= 0xDCFF:  # surrogateescape'd byte: Go sees invalid UTF-8
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:  # a lone surrogate is not a valid rune: Go writes U+FFFD
            out.append("\\ufffd")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def quote_if_needed(text: str) -> str:
    """Go-quote user-controlled text only when it holds a space or a non-printable character."""
    if all(ch != " " and is_print(ch) for ch in text):
        return text
    return go_quote(text)
