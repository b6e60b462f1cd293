"""A memory plan: what a run holds on each device, how each figure was found, and its peak."""
from __future__ import annotations

from dataclasses import dataclass, field

GiB = 1024 ** 3


@dataclass
class Term:
    """One line of the plan: bytes per device, and how the figure was found."""

    group: str  # weights | gradients | optimizer | activations
    name: str
    bytes: float
    how: str


@dataclass
class Phase:
    """A moment of the step: which transient terms are alive together then."""

    name: str
    terms: list[str]  # names of activation terms alive in this phase (summed)
    extra: float = 0.0  # bytes alive only in this phase that are not a term (e.g. gradients already built)


@dataclass
class Plan:
    """Per-device memory of one training run, from :func:`vidcli.plan.plan_run`."""

    command: str
    setting: str  # one line: models, precision, fine-tuning, sizes
    terms: list[Term]
    phases: list[Phase]
    notes: list[str] = field(default_factory=list)
    measures: list[tuple[str, float]] = field(default_factory=list)  # (flag text, peak with it) for a budget
    budget: float | None = None

    def total(self, group: str) -> float:
        return sum(t.bytes for t in self.terms if t.group == group)

    @property
    def static(self) -> float:
        """Bytes held throughout the step: weights, gradients, optimiser state."""
        return sum(t.bytes for t in self.terms if t.group != "activations")

    def phase_bytes(self, phase: Phase) -> float:
        named = {t.name: t.bytes for t in self.terms if t.group == "activations"}
        return sum(named[n] for n in phase.terms) + phase.extra

    @property
    def peak_phase(self) -> Phase:
        return max(self.phases, key=self.phase_bytes)

    @property
    def peak(self) -> float:
        """Static bytes plus the largest phase."""
        return self.static + self.phase_bytes(self.peak_phase)

    def summary(self) -> dict:
        return {"command": self.command, "setting": self.setting, "peak_gib": self.peak / GiB,
                "peak_phase": self.peak_phase.name,
                "groups_gib": {g: self.total(g) / GiB for g in ("weights", "gradients", "optimizer", "activations")},
                "terms": [{"group": t.group, "name": t.name, "gib": t.bytes / GiB, "how": t.how} for t in self.terms],
                "phases_gib": {p.name: (self.static + self.phase_bytes(p)) / GiB for p in self.phases},
                "measures": [{"flags": f, "peak_gib": b / GiB} for f, b in self.measures]}

    def render(self) -> str:
        """The table ``--plan`` prints."""
        lines = [f"vidcli {self.command} --plan: {self.setting}", "",
                 f"{'per device':<13}{'':<44}{'GiB':>8}  how"]
        last = None
        for term in self.terms:
            group = term.group if term.group != last else ""
            last = term.group
            lines.append(f"{group:<13}{term.name:<44.44}{term.bytes / GiB:>8.2f}  {term.how}")
        lines.append("")
        for phase in self.phases:
            mark = "  <- peak" if phase is self.peak_phase else ""
            alive = " + ".join(phase.terms) or "nothing"
            extra = " (gradients not built yet)" if phase.extra < 0 else ""
            lines.append(f"{'phase':<13}{phase.name:<44.44}{(self.static + self.phase_bytes(phase)) / GiB:>8.2f}"
                         f"  weights, gradients, optimizer + {alive}{extra}{mark}")
        lines.append(f"{'peak':<13}{'':<44}{self.peak / GiB:>8.2f}")
        if self.budget is not None:
            lines.append("")
            if self.peak <= self.budget:
                lines.append(f"fits --gpu-memory {self.budget / GiB:g} GiB ({(self.budget - self.peak) / GiB:.1f} GiB "
                             "to spare, before the allocator's fragmentation and the CUDA context, ~1-2 GiB)")
            else:
                over = (self.peak - self.budget) / GiB
                lines.append(f"over --gpu-memory {self.budget / GiB:g} GiB by {over:.1f} GiB."
                             + (" Measures, each added to the ones above it:" if self.measures else
                                " No measure vidcli offers brings it under; use more processes with sharding."))
                for flags, peak in self.measures:
                    verdict = "fits" if peak <= self.budget else "still over"
                    lines.append(f"  {flags:<64} {peak / GiB:>8.2f} GiB  {verdict}")
        for note in self.notes:
            lines.append(f"note: {note}")
        return "\n".join(lines)


def gib(value: float) -> str:
    return f"{value / GiB:.2f} GiB"


def count_text(n: float) -> str:
    """1.42 B, 40.4 M, 512 K."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return str(int(n))
