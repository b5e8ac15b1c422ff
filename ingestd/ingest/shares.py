"""Which lines of a log one loading pass takes: a :class:`Share` of the projects.

Projects are independent, so a log can be loaded a share of its projects at a time,
every line of a project in the same share, in log order: ``smalltable replay`` runs
its jobs and passes so (ingest/replay.py), and the daemon a backlog over more projects
than it keeps open (``ingestd.daemon.Daemon``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .routing import PROJECT_FIELD, route

MAX_VERDICTS = 10000
"""Most project names a :class:`Share` remembers its verdict for."""


@dataclass(frozen=True)
class Share:
    """The lines one pass loads: those of ``projects`` (None: every line)."""

    projects: frozenset[str] | None = None
    rest: frozenset[str] | None = None
    """When set, also every line whose project is not one of these (or that names no
    project: counted as unparsable). The first share of a :func:`plan` takes the
    lines the other shares do not, so that no line is ever left out."""
    _verdicts: dict[bytes, bool] = field(default_factory=dict, compare=False, repr=False)
    """What :meth:`keeps` decided per project field (as logged), so that it decides once."""

    def passes(self, most: int) -> list[Share]:
        """This share as shares of at most ``most`` projects each, to load one after the
        other (every file read once per pass). A share of more projects than may be open
        at once (``ingest.open_databases``) would close and reopen databases all through
        the log, as each batch names most of them: a log over 2,000 projects took 7 times
        as long (bench/RESULTS.md, "Varied mix"). The first pass also takes what this
        share takes beside its projects."""
        if self.projects is None or len(self.projects) <= most:
            return [self]
        names = sorted(self.projects)
        groups = [frozenset(names[start : start + most]) for start in range(0, len(names), most)]
        return [Share(group, rest=self.rest if number == 0 else None) for number, group in enumerate(groups)]

    def wants(self, line: bytes) -> bool:
        if self.projects is None:
            return True
        name = route(line)
        return name in self.projects or (self.rest is not None and name not in self.rest)

    def keeps(self, line: bytes) -> bool:
        """:meth:`wants`, decided once per project field (as logged): a look at that
        field only, found as :func:`route` finds it. The apex's lines (``""``, named in
        their body) and lines without the field are routed one by one."""
        start = line.find(PROJECT_FIELD) + len(PROJECT_FIELD)
        # the name route() finds; b"" when the line has no field or names the apex
        name = line[start : line.find(b'"', start)] if start >= len(PROJECT_FIELD) else b""
        verdict = self._verdicts.get(name)
        if verdict is None:
            verdict = self.wants(line)
            if name:
                if len(self._verdicts) >= MAX_VERDICTS:  # a log of many odd names: stay bounded
                    self._verdicts.clear()
                self._verdicts[name] = verdict
        return verdict

    def select(self, lines: list[bytes]) -> list[bytes]:
        """The lines :meth:`keeps`, in order. Each job of a parallel replay reads every
        line and keeps its share, so this runs once per line per job."""
        if self.projects is None or self.projects == self.rest:
            return lines  # every line (one job's only share takes its projects and the rest)
        return [line for line in lines if self.keeps(line)]


EVERY_LINE = Share()
"""The share of a whole log (one job, one pass)."""
