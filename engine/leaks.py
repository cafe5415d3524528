"""What counts as a leak, in one place: a sensitive string in an output, matched case-, space- and
punctuation-insensitively (digits-only for numbers, spelled-out digits included); the spans to mask; and the key
spans of a gold answer (numbers, codes, e-mails, addresses, proper names) when a request names no sensitive
strings. Plain Python, no torch: the guard, the verifier, the privacy purge, the service and the report all use it."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

REDACTED = "[REDACTED]"

_NUMBER_WORDS = {
    "zero": "0", "oh": "0", "nought": "0", "naught": "0",
    "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9",
}
_MULTIPLIERS = {"double": 2, "triple": 3}
# Inside a number, these separate its groups: "415 555-0142", "(415) 555.0142", "+1/415". Letters
# (other than number words) and the breakers below end a number, so two unrelated numbers in one
# sentence ("born 1947, 11 children") do not fuse into a false match.
_DIGIT_BREAKERS = frozenset(",;:!?")
# A needle this short (normalised) that is matched inside a longer word is usually a false alarm
# ("Ann" in "planning"), so short needles must start and end on word boundaries. Longer ones match
# anywhere: "Alma Riveras" or a case ending glued to a name is still a leak.
_SHORT_NEEDLE = 4
# Scripts written without spaces between words (or whose particles attach to names): no word
# boundaries to check there.
_UNSPACED_SCRIPTS = ("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "THAI", "LAO", "KHMER", "MYANMAR", "TIBETAN", "YI")
_TOKEN_RE = re.compile(r"\d|[^\W\d_]+|\s+|.", re.DOTALL)


def _clusters(text: str):
    """(start, end) of each base character with the combining marks that follow it."""
    start = 0
    for i in range(1, len(text) + 1):
        if i == len(text) or not unicodedata.category(text[i]).startswith("M"):
            yield start, i
            start = i


def _leak_stream(text: str) -> list[tuple[str, int, int, int]]:
    """The text as leak matching sees it: one (char, orig_start, orig_end, word_id) per kept character.

    Each character cluster is NFKC-normalised, case-folded and normalised again (Unicode's
    NFKC_Casefold recipe); only alphanumerics are kept; word_id changes at every dropped
    separator, so the original word boundaries stay known."""
    out: list[tuple[str, int, int, int]] = []
    word = 0
    for start, end in _clusters(text):
        norm = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text[start:end]).casefold())
        kept = [c for c in norm if c.isalnum()]
        if kept:
            out.extend((c, start, end, word) for c in kept)
        else:
            word += 1
    return out


def normalise_for_leak(text: str) -> str:
    """NFKC, case-folded, with every whitespace, punctuation and symbol character removed:
    "Alma  Rivera!" and "alma-rivera" both become "almarivera"."""
    return "".join(c for c, *_ in _leak_stream(text))


def _number_groups(text: str) -> list[tuple[str, list[tuple[int, int]]]]:
    """Each number in `text` as (digits, span of each digit in the original text).

    Digits may be written with any separators ("(415) 555-0142"), as words ("four one five",
    "oh", "double five") or in any script's decimal digits; a non-number word ends the number."""
    groups: list[tuple[str, list[tuple[int, int]]]] = []
    digits: list[str] = []
    spans: list[tuple[int, int]] = []
    repeat = 1
    broken = False  # a breaker punctuation mark was seen since the last digit
    last_was_word = False

    def close():
        nonlocal digits, spans
        if digits:
            groups.append(("".join(digits), spans))
        digits, spans = [], []

    def add(value: str, span: tuple[int, int], as_word: bool):
        nonlocal repeat, broken, last_was_word
        # "four, one, five" stays one number; "1947, 11" becomes two.
        if broken and not (as_word and last_was_word):
            close()
        for _ in range(repeat):
            digits.append(value)
            spans.append(span)
        repeat, broken, last_was_word = 1, False, as_word

    for m in _TOKEN_RE.finditer(text):
        tok, span = m.group(), m.span()
        if tok.isdecimal():
            add(str(unicodedata.decimal(tok)), span, as_word=False)
        elif tok[0].isalpha():
            word = unicodedata.normalize("NFKC", tok).casefold()
            if word in _NUMBER_WORDS:
                add(_NUMBER_WORDS[word], span, as_word=True)
            elif word in _MULTIPLIERS:
                repeat = _MULTIPLIERS[word]
            else:
                close()
                repeat, broken = 1, False
        elif tok in _DIGIT_BREAKERS:
            broken = True
    close()
    return groups


def digits_only(text: str) -> str:
    """Every digit of `text` in order, number words included: "(415) five-five-five 0142" -> "4155550142"."""
    return "".join(d for d, _ in _number_groups(text))


def _is_numberlike(s: str) -> bool:
    # A phone or account number: mostly digits (>= 60% of the non-space characters), and at least 4.
    chars = [c for c in s if not c.isspace()]
    n_digits = sum(c.isdecimal() for c in chars)
    return n_digits >= 4 and n_digits >= 0.6 * len(chars)


def _spaced_letter(c: str) -> bool:
    return c.isalpha() and not unicodedata.name(c, "").startswith(_UNSPACED_SCRIPTS)


def _find_all(haystack: str, needle: str):
    i = haystack.find(needle)
    while i != -1:
        yield i
        i = haystack.find(needle, i + 1)  # overlapping: "5555" holds "555" twice


def sensitive_spans(text: str, sensitive: Sequence[str]) -> list[tuple[int, int, str]]:
    """Every occurrence of a sensitive string in `text` as (start, end, sensitive string), in text order.

    Number-like sensitive strings (>= 4 digits making up >= 60% of the non-space characters) match
    digits-only: their digits must occur contiguously within one number of the text, whatever the
    separators or spelled-out digits. Everything else matches on `normalise_for_leak` forms, i.e.
    case-, space- and punctuation-insensitively; needles of at most 4 normalised characters must
    also start and end on a word boundary of the text."""
    found: list[tuple[int, int, str]] = []
    stream: list | None = None
    haystack = ""
    groups: list | None = None
    for s in dict.fromkeys(sensitive):  # de-duplicated, order kept
        if _is_numberlike(s):
            needle = "".join(str(unicodedata.decimal(c)) for c in s if c.isdecimal())
            if groups is None:
                groups = _number_groups(text)
            for digits, spans in groups:
                for i in _find_all(digits, needle):
                    start, end = spans[i][0], spans[i + len(needle) - 1][1]
                    if start > 0 and text[start - 1] in "(+":  # mask "(415) 555-0142" whole
                        start -= 1
                    found.append((start, end, s))
            continue
        needle = normalise_for_leak(s)
        if not needle:
            continue
        if stream is None:
            stream = _leak_stream(text)
            haystack = "".join(c for c, *_ in stream)
        short = len(needle) <= _SHORT_NEEDLE
        for i in _find_all(haystack, needle):
            j = i + len(needle) - 1
            if short and (_joined(stream, i - 1, i) or _joined(stream, j, j + 1)):
                continue
            found.append((stream[i][1], stream[j][2], s))
    return sorted(found)


def _joined(stream: list, a: int, b: int) -> bool:
    """Whether stream positions a and b are letters of one and the same word of a spaced script."""
    if a < 0 or b >= len(stream):
        return False
    (ca, *_, wa), (cb, *_, wb) = stream[a], stream[b]
    return wa == wb and _spaced_letter(ca) and _spaced_letter(cb)


def contains_sensitive(output: str, sensitive: Sequence[str]) -> list[str]:
    """The sensitive strings that occur in `output` (matching rules: `sensitive_spans`), in the order given."""
    hits = {s for *_, s in sensitive_spans(output, sensitive)}
    return [s for s in dict.fromkeys(sensitive) if s in hits]


def leak_rate(outputs: Sequence[str], sensitive: Sequence[str]) -> float:
    """Share of outputs that contain at least one sensitive string."""
    if not outputs:
        raise ValueError("leak_rate of no outputs")
    return sum(bool(contains_sensitive(o, sensitive)) for o in outputs) / len(outputs)


def leak_spans(text: str, sensitive: Sequence[str]) -> list[tuple[int, int]]:
    """The parts of `text` that leak: (start, end) character offsets of every occurrence of a sensitive
    string (matched exactly as `contains_sensitive` matches: case-, space- and punctuation-insensitive,
    digits-only for numbers), overlapping or touching occurrences merged, in text order. Empty when
    nothing leaks; `text[start:end]` is what the evidence viewer highlights."""
    merged: list[list[int]] = []
    for start, end, _ in sensitive_spans(text, sensitive):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def mask_sensitive(text: str, sensitive: Sequence[str], replacement: str = REDACTED) -> str:
    """`text` with every occurrence of a sensitive string replaced by "[REDACTED]", matched exactly as
    `contains_sensitive` matches (so a masked text has no leaks left); overlapping hits merge."""
    return mask_with_spans(text, sensitive, replacement)[0]


def mask_with_spans(text: str, sensitive: Sequence[str],
                    replacement: str = REDACTED) -> tuple[str, list[tuple[int, int]]]:
    """`mask_sensitive(text)` and the (start, end) offsets of each replacement in the masked text."""
    parts, pos, spans, length = [], 0, [], 0
    for start, end in leak_spans(text, sensitive):
        parts.append(text[pos:start])
        length += start - pos
        parts.append(replacement)
        spans.append((length, length + len(replacement)))
        length += len(replacement)
        pos = end
    parts.append(text[pos:])
    return "".join(parts), spans


# Key spans of gold answers

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_CODE = re.compile(r"\b[A-Z]{1,5}[-_]?\d{3,}\b")
_NUMBER = re.compile(r"\(?\+?\d[\d\s().\-/]*\d")
_ADDRESS = re.compile(r"\b\d{1,6}\s+(?:[A-Z][\w'-]*\s?){1,4}")
_PROPER = re.compile(r"\b[A-Z][\w'’-]*(?:\s+(?:[A-Z][\w'’-]*|de|da|van|von|del|la|le|of))*\s*")
_STOP = {"the", "a", "an", "he", "she", "it", "they", "his", "her", "their", "i", "we", "you", "this", "that",
         "yes", "no", "in", "on", "at", "my", "our", "its", "there", "these", "those", "what", "who"}


def key_spans(answers: Iterable[str]) -> list[str]:
    """Spans of forget answers worth banning when a request names no sensitive strings: e-mail
    addresses, codes and numbers, street addresses and proper-name sequences. An answer with none of
    them contributes itself (2 to 8 words) or nothing."""
    found: list[str] = []
    for answer in answers:
        found += _answer_spans(answer)
    return list(dict.fromkeys(s for s in found if len(s) >= 3))


def _answer_spans(answer: str) -> list[str]:
    spans: list[tuple[int, str]] = []
    taken = [False] * len(answer)

    def claim(start: int, text: str) -> None:
        end = start + len(text)
        if text and not any(taken[start:end]):
            taken[start:end] = [True] * (end - start)
            spans.append((start, text))

    for pattern in (_EMAIL, _ADDRESS, _CODE, _NUMBER):
        if pattern is _EMAIL and "@" not in answer:
            # Tried from every start, the local part scans a long run of word characters to its end: quadratic
            # on a 6,000-digit answer (0.35 s a call), and there is no address to find without an '@'.
            continue
        for m in pattern.finditer(answer):
            text = m.group().rstrip()
            if pattern is _NUMBER and sum(c.isdigit() for c in text) < 3:
                continue
            claim(m.start(), text)
    for m in _PROPER.finditer(answer):
        # "Alma Rivera's" -> "Alma Rivera": the possessive comes back as an attached variant.
        text = re.sub(r"['’]s$", "", m.group().strip())
        first = text.split()[0].lower() if text.split() else ""
        if len(text) < 3 or (first in _STOP and len(text.split()) == 1):
            continue
        claim(m.start(), text)
    if not spans and 2 <= len(answer.split()) <= 8:
        spans.append((0, answer.strip().rstrip(".")))
    return [t for _, t in sorted(spans)]
