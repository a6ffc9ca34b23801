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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

#: A label set, hashable: ``frozenset({("proto", "udp")})``.
Labels = frozenset[tuple[str, str]]
#: How one series is keyed: (sample name, label set).
SeriesKey = tuple[str, Labels]
#: A cumulative histogram: ``[(le, count), ...]`` sorted by ``le``, ``+Inf`` last.
Buckets = list[tuple[float, float]]

_NO_LABELS: Labels = frozenset()


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


def _is_created(name: str) -> bool:
    return name.endswith("_created")


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
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[SeriesKey, float] = {}
    families: dict[str, str] = {}
    sample_type: dict[str, str] = {}
    try:
        for family in text_string_to_metric_families(text):
            if _is_created(family.name):
                continue
            families[family.name] = family.type
            for sample in family.samples:
                if _is_created(sample.name):
                    continue
                labels = frozenset((str(k), str(v)) for k, v in sample.labels.items())
                key = (sample.name, labels)
                if key in samples:
                    raise ExpositionError(f"duplicate series {_show(key)}")
                bucket = family.type == "histogram" and sample.name.endswith("_bucket")
                if bucket and _le_of(labels) is None:
                    raise ExpositionError(f"histogram bucket without a numeric le: {_show(key)}")
                samples[key] = float(sample.value)
                sample_type[sample.name] = family.type
    except ExpositionError:
        raise
    except Exception as exc:  # the parser raises ValueError, IndexError, KeyError, ...
        raise ExpositionError(f"cannot parse metrics exposition: {_one_line(exc)}") from exc
    return Scrape.from_samples(samples, at, families, sample_type)


def _show(key: SeriesKey) -> str:
    name, labels = key
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels))
    return f"{name}{{{inner}}}" if inner else name


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]
