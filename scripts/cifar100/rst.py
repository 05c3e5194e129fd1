"""Data-derived text written into reStructuredText (the report's pages) as plain text.

A class name comes from a dataset's ``meta`` file, so it may hold reST markup: ``.. include::
/etc/hostname`` in a table cell would make docutils read that file into the report, ``.. raw::
html`` would put HTML there, and `` `x <https://...>`_ `` would become a link. Every such string
goes through ``text`` before it is written into a .rst file.
"""

import re

# Letters and digits, joined by single inner "_" or "-": never markup (an inline reference needs
# a trailing "_", a list or directive starts with punctuation).
_PLAIN = re.compile(r"[^\W_]+(?:[_-][^\W_]+)*")
_ASCII_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def text(value) -> str:
    """``value`` as reST that renders to exactly its characters: every ASCII punctuation mark is
    backslash-escaped (a plain name like ``maple_tree`` is left as it is)."""
    value = str(value)
    if _PLAIN.fullmatch(value):
        return value
    return _ASCII_PUNCTUATION.sub(r"\\\1", value)
