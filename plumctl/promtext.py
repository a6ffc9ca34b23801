"""One scrape of a node's ``/metrics``, parsed into plain numbers (client side).

The exposition has no timestamps, so every :class:`Scrape` carries the client's
monotonic clock reading ``at``; rates are differences between two scrapes of the same
node (see :mod:`plumctl.promql`). Series are keyed exactly as Prometheus keys them: the
*sample* name (``plumtree_graft_sent_total``, not the ``_total``-stripped family name the
parser reports) plus the label set.

``prometheus_client`` is imported inside :func:`parse`, never at module import, so that
``import plumctl.cli`` stays cheap (shell completion re-runs it on every TAB).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar

#: A label set, hashable: ``frozenset({("proto", "udp")})``.
Labels = frozenset[tuple[str, str]]
#: How one series is keyed: (sample name, label set).
SeriesKey = tuple[str, Labels]
#: A cumulative histogram: ``[(le, count), ...]`` sorted by ``le``, ``+Inf`` last.
Buckets = list[tuple[float, float]]

_NO_LABELS: Labels = frozenset()
_EMPTY: Mapping[Labels, float] = MappingProxyType({})


class ExpositionError(ValueError):
    """The text is not a Prometheus exposition we can read (the only error of :func:`parse`)."""


@dataclass(frozen=True, slots=True)
class Scrape:
    """The samples of one scrape, the family types, and when (monotonic seconds) it was taken.

    Missing metrics are not errors: accessors answer ``None`` (or ``[]`` for histograms)
    so that a node of an older version shows "unknown", never a crash.
    """

    samples: Mapping[SeriesKey, float]
    families: Mapping[str, str]  # family name (as the parser reports it) -> type
    at: float
    _by_name: Mapping[str, Mapping[Labels, float]] = field(repr=False, compare=False)
    _sample_type: Mapping[str, str] = field(repr=False, compare=False)
    #: histogram name -> its :meth:`histogram_series` without a filter, computed once
    #: (``top`` reads each histogram of a scrape twice: as the current and the previous)
    _histograms: dict[str, dict[Labels, Buckets]] = field(
        default_factory=dict, repr=False, compare=False
    )

    @classmethod
    def from_samples(
        cls,
        samples: Mapping[SeriesKey, float],
        at: float,
        families: Mapping[str, str] | None = None,
        sample_types: Mapping[str, str] | None = None,
    ) -> Scrape:
        """Build a scrape from already-keyed samples (tests, and merging scrapes)."""
        by_name: dict[str, dict[Labels, float]] = {}
        for (name, labels), value in samples.items():
            by_name.setdefault(name, {})[labels] = value
        return cls(
            samples=MappingProxyType(dict(samples)),
            families=MappingProxyType(dict(families or {})),
            at=at,
            _by_name=MappingProxyType(by_name),
            _sample_type=MappingProxyType(dict(sample_types or {})),
        )

    # -- plain series -------------------------------------------------------------------

    def has(self, name: str) -> bool:
        """Whether any series of this sample name is present."""
        return name in self._by_name

    def names(self) -> list[str]:
        """All sample names, sorted."""
        return sorted(self._by_name)

    def series(self, name: str, /, **match: str) -> dict[Labels, float]:
        """Every series of ``name`` whose labels include ``match`` (a label subset)."""
        if not match:
            return dict(self._by_name.get(name, _EMPTY))
        wanted = set(match.items())
        return {
            labels: value
            for labels, value in self._by_name.get(name, {}).items()
            if wanted <= labels
        }

    def value(self, name: str, /, **labels: str) -> float | None:
        """The series with exactly these labels, or ``None`` when absent."""
        return self._by_name.get(name, {}).get(frozenset(labels.items()))

    def sum(self, name: str, /, **match: str) -> float | None:
        """Sum over every label set (matching ``match``); ``None`` when no series exists."""
        found = self.series(name, **match)
        return math.fsum(found.values()) if found else None

    def type_of(self, name: str) -> str | None:
        """The declared family type (counter, gauge, histogram, ...) of a sample name."""
        return self._sample_type.get(name)

    # -- histograms ---------------------------------------------------------------------

    def histogram_series(self, name: str, /, **match: str) -> dict[Labels, Buckets]:
        """Cumulative buckets of each series of histogram ``name`` (labels without ``le``)."""
        if not match:
            memo = self._histograms.get(name)
            if memo is None:
                memo = self._histograms[name] = self._group_buckets(name)
            return {labels: list(buckets) for labels, buckets in memo.items()}
        return self._group_buckets(name, **match)

    def _group_buckets(self, name: str, /, **match: str) -> dict[Labels, Buckets]:
        groups: dict[Labels, Buckets] = {}
        for labels, count in self.series(f"{name}_bucket", **match).items():
            le = _le_of(labels)
            if le is None:
                continue  # parse() rejects these for typed histograms; ignore otherwise
            rest = frozenset(kv for kv in labels if kv[0] != "le")
            groups.setdefault(rest, []).append((le, count))
        for buckets in groups.values():
            buckets.sort(key=lambda b: b[0])
        return groups

    def histogram(self, name: str, /, **match: str) -> Buckets:
        """Cumulative buckets of histogram ``name``, summed by ``le`` over its label sets.

        Sorted by upper bound with ``+Inf`` last; ``[]`` when the histogram is absent.
        Like ``sum by (le) (name_bucket)`` in PromQL.
        """
        return _sum_by_le(self.histogram_series(name, **match).values())


def _le_of(labels: Labels) -> float | None:
    for key, raw in labels:
        if key == "le":
            try:
                le = float(raw)
            except ValueError:
                return None
            return None if math.isnan(le) else le
    return None


def _sum_by_le(groups: Iterable[Buckets]) -> Buckets:
    totals: dict[float, float] = {}
    for buckets in groups:
        for le, count in buckets:
            totals[le] = totals.get(le, 0.0) + count
    return sorted(totals.items(), key=lambda b: b[0])


def parse(text: str, at: float) -> Scrape:
    """Parse text exposition format 0.0.4 taken at monotonic time ``at``.

    ``_created`` families and samples are skipped (they are timestamps, not values).
    Raises :class:`ExpositionError`, and nothing else, on any input it cannot read:
    the parser of ``prometheus_client`` is lax and raises assorted exceptions itself.
    """
    if not isinstance(text, str):
        raise ExpositionError(f"exposition must be text, not {type(text).__name__}")
    if "\x00" in text:
        raise ExpositionError("exposition contains a NUL byte")
    samples: dict[SeriesKey, float] = {}
    families: dict[str, str] = {}
    sample_type: dict[str, str] = {}
    try:
        for family_name, family_type, family_samples in _families(text):
            if family_name.endswith("_created"):
                continue
            families[family_name] = family_type
            histogram = family_type == "histogram"
            for sample_name, labels, sample_value in family_samples:
                if sample_name.endswith("_created"):
                    continue
                key = (sample_name, labels)
                if key in samples:
                    raise ExpositionError(f"duplicate series {_show(key)}")
                if histogram and sample_name.endswith("_bucket") and _le_of(labels) is None:
                    raise ExpositionError(f"histogram bucket without a numeric le: {_show(key)}")
                samples[key] = float(sample_value)
                sample_type[sample_name] = family_type
    except ExpositionError:
        raise
    except Exception as exc:  # the parser raises ValueError, IndexError, KeyError, ...
        raise ExpositionError(f"cannot parse metrics exposition: {_one_line(exc)}") from exc
    return Scrape.from_samples(samples, at, families, sample_type)


#: One sample as the parser reports it: (sample name, label set, value).
_Sample = tuple[str, Labels, float]
#: One family as the parser reports it: (name, type, samples).
_Family = tuple[str, str, list[_Sample]]
_METRIC_TYPES = frozenset(
    {"counter", "gauge", "summary", "histogram", "gaugehistogram", "unknown", "info", "stateset"}
)


def _families(text: str) -> Iterable[_Family]:
    """The families of ``text``: :func:`_fast_families` when it can, else prometheus_client."""
    fast = _fast_families(text)
    if fast is not None:
        return fast
    from prometheus_client.parser import text_string_to_metric_families

    return (
        (
            f.name,
            f.type,
            [
                (s.name, frozenset((str(k), str(v)) for k, v in s.labels.items()), s.value)
                for s in f.samples
            ],
        )
        for f in text_string_to_metric_families(text)
    )


# -- fast path ---------------------------------------------------------------------------
# prometheus_client's text parser reads labels character by character; for the plain
# exposition nodes write (what generate_latest produces) it was most of the CPU of
# `plumctl top` per poll. _fast_families() replays the very same state machine
# (prometheus_client/parser.py, text_fd_to_metric_families) with regular expressions,
# and gives up (None) on anything it does not handle exactly like it: non-ASCII text,
# quotes in comments, escapes, spaces inside label sets, timestamps, exemplars, odd
# whitespace, any error. Then the full parser runs, so results and errors are its own.
# tests/cli/test_promtext_fastpath.py checks both paths agree on generated expositions.

_ODD_WHITESPACE = re.compile(r"[\x0b\x0c\x1c-\x1f]")
_LEGACY_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_SAMPLE_LINE = re.compile(
    r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[^{}"\\]|"[^"\\]*")*)\})?[ \t]+([^ \t]+)\Z'
)
_INTEGER = re.compile(r"[+-]?[0-9]+\Z")
_LABEL_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"\\]*)"(?:,|\Z)')
_ALLOWED_SUFFIXES = {
    "counter": ("",),
    "gauge": ("",),
    "summary": ("_count", "_sum", ""),
    "histogram": ("_count", "_sum", "_bucket"),
}


def _fast_labels(text: str) -> Labels | None:
    """The label set of ``{text}``, remembered: a node writes the same label sets on
    every scrape, so after the first poll this is one dictionary lookup."""
    cached = _LABEL_SETS.get(text)
    if cached is not None:
        return cached
    labels: dict[str, str] = {}
    pos = 0
    end = len(text)
    while pos < end:
        m = _LABEL_PAIR.match(text, pos)
        if m is None:
            return None
        name, value = m.group(1), m.group(2)
        if name in labels or name.startswith("__"):
            return None  # an error or __name__: the full parser decides
        labels[name] = value
        pos = m.end()
    return _remember(_LABEL_SETS, text, frozenset(labels.items()))


_K = TypeVar("_K")
_V = TypeVar("_V")
#: Entries each memo of the fast path keeps at most (label sets, comment lines).
_MEMO_MAX = 4096
_LABEL_SETS: dict[str, Labels] = {}


def _remember(memo: dict[_K, _V], key: _K, value: _V) -> _V:
    """Store ``value`` in a memo of at most :data:`_MEMO_MAX` entries (emptied when
    full: a node with ever-new label values or comments cannot grow it)."""
    if len(memo) >= _MEMO_MAX:
        memo.clear()
    memo[key] = value
    return value


def _fast_value(text: str) -> float | None:
    if "_" in text:
        return None
    if _INTEGER.match(text):
        return float(int(text))  # as prometheus_client: int first ("-0" is 0), then float
    try:
        return float(text)
    except ValueError:
        return None


def _fast_families(text: str) -> list[_Family] | None:
    if not text.isascii() or _ODD_WHITESPACE.search(text):
        return None
    out: list[_Family] = []

    def build(name: str, typ: str, samples: list[_Sample]) -> None:
        # prometheus_client's build_metric() and Metric(): counters lose "_total" (or their
        # samples gain it), "untyped" is "unknown", other types and empty names are errors
        if typ == "counter":
            if name.endswith("_total"):
                name = name[:-6]
            else:
                samples = [(s[0] + "_total", s[1], s[2]) for s in samples]
        typ = "unknown" if typ == "untyped" else typ
        if not name or typ not in _METRIC_TYPES:
            raise _GiveUp
        out.append((name, typ, samples))

    try:
        _replay(text.split("\n"), build)
    except _GiveUp:
        return None
    return out


#: A comment line, read: (HELP|TYPE|"" for one that is ignored, metric name, type,
#: the sample names a TYPE allows). Nodes write the same comments on every scrape.
_Comment = tuple[str, str, str, tuple[str, ...]]
_COMMENTS: dict[str, _Comment] = {}


def _comment(line: str) -> _Comment:
    """What ``_replay`` does with a ``#`` line (already stripped); _GiveUp as it would."""
    if '"' in line:
        raise _GiveUp
    parts = line.split(None, 3)
    if len(parts) < 2 or (parts[1] != "TYPE" and parts[1] != "HELP"):
        return ("", "", "", ())
    candidate = parts[2] if len(parts) > 2 else ""
    if len(parts) > 2 and not _LEGACY_NAME.match(candidate):
        raise _GiveUp
    if parts[1] == "HELP":
        return ("HELP", candidate, "", ())
    if len(parts) < 4:
        raise _GiveUp
    typ = parts[3]
    allowed = tuple(candidate + suffix for suffix in _ALLOWED_SUFFIXES.get(typ, ("",)))
    return ("TYPE", candidate, typ, allowed)


class _GiveUp(Exception):
    """The fast path cannot vouch for this text: the full parser must read it."""


def _replay(lines: list[str], build: Callable[[str, str, list[_Sample]], None]) -> None:
    """prometheus_client's text_fd_to_metric_families, line by line (see above)."""
    name = ""
    typ = "untyped"
    samples: list[_Sample] = []
    allowed: tuple[str, ...] = ()
    for raw in lines:
        line = raw.strip()
        if line.startswith("#"):
            comment = _COMMENTS.get(line)
            if comment is None:
                comment = _remember(_COMMENTS, line, _comment(line))
            kind, candidate, comment_type, comment_allowed = comment
            if kind == "HELP":
                if candidate != name:
                    if name != "":
                        build(name, typ, samples)
                    name, typ, samples, allowed = candidate, "untyped", [], (candidate,)
            elif kind == "TYPE":
                if candidate != name:
                    if name != "":
                        build(name, typ, samples)
                    name, samples = candidate, []
                typ = comment_type
                allowed = comment_allowed
        elif line:
            m = _SAMPLE_LINE.match(line)
            if m is None:
                raise _GiveUp
            sample_name, label_text, value_text = m.groups()
            labels = _fast_labels(label_text) if label_text else _NO_LABELS
            value = _fast_value(value_text)
            if labels is None or value is None:
                raise _GiveUp
            sample = (sample_name, labels, value)
            if sample_name in allowed:
                samples.append(sample)
            else:
                if name != "":
                    build(name, typ, samples)
                name, typ, samples, allowed = "", "untyped", [], ()
                build(sample_name, "untyped", [sample])
    if name != "":
        build(name, typ, samples)


def _show(key: SeriesKey) -> str:
    name, labels = key
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels))
    return f"{name}{{{inner}}}" if inner else name


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]
