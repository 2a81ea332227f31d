"""Strings from files are data in the C header: strict escapers and the header audit.

Labels and file names come from checkpoints and config files that anyone can craft. In the
header they appear only as C string literals (``c_string``: printable ASCII except ``"``,
``\\`` and ``?`` as itself, every other byte as a three-digit octal escape) or in comments
whose characters come from a whitelist (``c_comment``: no ``*``, ``\\``, ``?`` or newline, so
neither ``*/``, a line splice nor a trigraph can occur). No identifier is derived from a
label. Before the self-check compiles anything, ``audit_header`` rejects headers with
``__attribute__``, ``asm``, ``#pragma``/``_Pragma``, an ``#include`` other than ``<math.h>``,
another preprocessor directive than the ones rollfit writes, a trigraph, a line splice or a
non-ASCII byte; ``check_definitions`` then preprocesses the header and checks that the only
top-level definitions are the ``static`` ones rollfit generated, each once.
"""
from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

from ..errors import OutputError

MAX_LABEL_BYTES = 1024
_COMMENT_CHARS = frozenset(chr(c) for c in range(32, 127)) - set("\\?*<")
_LITERAL_CHARS = frozenset(chr(c) for c in range(32, 127)) - set('"\\?')
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_LEXEME = re.compile(r'"(?:[^"\\\n]|\\.)*"|/\*.*?\*/|//[^\n]*', re.S)
_TOKEN = re.compile(r'""|[A-Za-z_]\w*|\d[\w.]*(?:[eE][+-]\d+)?f?|\S')
_FORBIDDEN = re.compile(r"\b(?:__attribute__|__attribute|asm|__asm__|__asm|_Pragma|__declspec|__thread|"
                        r"_Thread_local|thread_local|__extension__|__builtin_\w*)\b")


# ----------------------------------------------------------------------------- escaping
def c_string(s: str, where: str = "label") -> str:
    """A C string literal holding ``s``'s UTF-8 bytes exactly, as inert data.

    Printable ASCII other than ``"``, ``\\`` and ``?`` (trigraphs) stands for itself; every
    other byte, newlines included, is a three-digit octal escape (never a hex escape, which
    would swallow a following hex digit). Refused: text that is not valid Unicode, a NUL
    (C strings end there) and more than ``MAX_LABEL_BYTES`` bytes (C99 compilers need not
    accept long literals, and ``-pedantic`` warns).
    """
    try:
        raw = s.encode("utf-8")
    except UnicodeEncodeError:
        raise OutputError(f"c export: expected {where} to be valid Unicode text, but got {ascii(s)[:80]}") from None
    if b"\0" in raw or len(raw) > MAX_LABEL_BYTES:
        why = "a NUL character" if b"\0" in raw else f"{len(raw)} bytes"
        raise OutputError(f"c export: expected {where} without NUL characters and at most {MAX_LABEL_BYTES} bytes "
                          f"long (UTF-8), but got {why}: {ascii(s)[:80]}")
    return '"' + "".join(chr(b) if chr(b) in _LITERAL_CHARS else f"\\{b:03o}" for b in raw) + '"'


def c_comment(s: str) -> str:
    """``s`` for a ``/* */`` comment: whitelisted characters as themselves, others as ``<U+XXXX>``.

    The whitelist is printable ASCII without ``*``, ``\\``, ``?`` and ``<`` (the escape's own
    opener), so the text can neither end the comment, splice lines nor form a trigraph.
    """
    return "".join(ch if ch in _COMMENT_CHARS else f"<U+{ord(ch):04X}>" for ch in str(s))


def c_ident(name: str, where: str) -> str:
    """``name`` if it is a C identifier; an ``OutputError`` otherwise (defence in depth)."""
    if not _IDENT.match(name):
        raise OutputError(f"c export: expected {where} to be a C identifier, but got {ascii(name)[:80]}")
    return name


# ----------------------------------------------------------------------------- auditing
def _directives_allowed(prefix: str, guard: str) -> list[re.Pattern]:
    """The preprocessor lines rollfit writes, and nothing else."""
    p, g = re.escape(prefix.upper()), re.escape(guard)
    return [re.compile(x + r"\Z") for x in (
        rf"#ifndef {g}", rf"#define {g}", r"#include <math\.h>", r"#ifdef __cplusplus", r"#endif",
        rf"#define {p}_N_(?:INPUTS|OUTPUTS) \d+")]


def audit_header(text: str, prefix: str) -> None:
    """Refuse a header that could do more than define rollfit's arrays and functions.

    Checked on the whole text: ASCII only, no trigraph (``??``), no line splice (backslash
    before a newline). Checked on the code outside string literals and comments: no
    ``__attribute__``, ``asm``, ``_Pragma`` and the like, no backslash, and every
    preprocessor line one that rollfit writes.
    """
    guard = f"ROLLFIT_{prefix.upper()}_H"
    problems = []
    if not text.isascii():
        problems.append("a non-ASCII character")
    if "??" in text:
        problems.append("a trigraph ('??')")
    if re.search(r"\\\s*\n", text):
        problems.append("a line splice (backslash-newline)")
    code = _LEXEME.sub(lambda m: '""' if m.group().startswith('"') else " ", text)
    if "\\" in code or '"' in code.replace('""', ""):
        problems.append("a backslash or quote outside string literals")
    bad = _FORBIDDEN.search(code)
    if bad:
        problems.append(f"'{bad.group()}'")
    allowed = _directives_allowed(prefix, guard)
    for line in code.splitlines():
        line = line.strip()
        if line.startswith("#") and not any(rx.match(line) for rx in allowed):
            problems.append(f"the directive {ascii(line[:60])}")
            break
    if "%:" in code:
        problems.append("a digraph directive ('%:')")
    if problems:
        raise OutputError(f"c export: expected a header with only rollfit's own definitions, but it contains "
                          f"{problems[0]}; nothing was compiled")


def top_level_definitions(source: str) -> list[tuple[str, str, str]]:
    """(first word, kind, name) of each top-level declaration in preprocessed C ``source``.

    kind is ``function`` when the name is followed by ``(``, ``array`` when by ``[``, else
    ``other`` (and the name is the declaration's start, for the error message).
    """
    tokens = _TOKEN.findall(_LEXEME.sub(lambda m: '""' if m.group().startswith('"') else " ", source))
    out, decl, depth, initialized = [], [], 0, False
    for tok in tokens:
        decl.append(tok)
        initialized |= tok == "=" and depth == 0
        depth += (tok in "({[") - (tok in ")}]") if len(tok) == 1 else 0
        if depth == 0 and (tok == ";" or (tok == "}" and not initialized)):
            out.append(_describe_declaration(decl))
            decl, initialized = [], False
    if decl:
        out.append((decl[0], "other", " ".join(decl)[:60]))
    return out


def _describe_declaration(decl: list[str]) -> tuple[str, str, str]:
    """(first word, kind, name) of one top-level declaration's tokens."""
    for tok, nxt in zip(decl, decl[1:]):
        if _IDENT.match(tok) and nxt in ("(", "["):
            return decl[0], "function" if nxt == "(" else "array", tok
    return decl[0], "other", " ".join(decl)[:60]


def check_definitions(cc: str, header: Path, functions: set[str], arrays: re.Pattern) -> None:
    """Preprocess ``header`` and check that it defines only rollfit's own names, each once.

    Preprocessed in a private temp folder with ``<math.h>`` replaced by an empty file, so
    only the header's own declarations remain: each must be ``static``, a function named in
    ``functions`` or an array whose name matches ``arrays``.
    """
    with tempfile.TemporaryDirectory(prefix="rollfit-cpp-") as tmp:
        (Path(tmp) / "math.h").write_text("")
        res = subprocess.run([cc, "-E", "-P", "-std=c99", "-nostdinc", "-I", tmp, str(header)],
                             capture_output=True, text=True, cwd=tmp)
    if res.returncode != 0:
        first = (res.stderr.strip().splitlines() or ["(no message)"])[0]
        raise OutputError(f"{header.name}: expected the header to preprocess, but {Path(cc).name} failed: {first}")
    found = top_level_definitions(res.stdout)
    names = [name for _, _, name in found]
    wrong = [name for word, kind, name in found
             if word != "static" or not (name in functions if kind == "function"
                                         else kind == "array" and arrays.match(name))]
    wrong += [n for n in names if names.count(n) > 1]
    if wrong:
        raise OutputError(f"c export: expected the header to define only rollfit's static arrays and functions, "
                          f"but it defines {ascii(wrong[0])}; nothing was compiled")
