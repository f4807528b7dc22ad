"""Reports of curation passes: how many rows went in, how many came out, and why the others did not.

A report is a plain `dict` (so `json.dumps(report)` works) whose counts always add up: `total == kept + sum of
removed_by_*`. For an in-memory `datasets.Dataset` it is computed eagerly and is final when the function returns. For a
streaming `datasets.IterableDataset` nothing has been read yet when the function returns, so the report is *live*: it
counts the rows as the returned stream is consumed in this process, and is final after one full pass (for example
after the loop that writes the filtered rows out). A new pass over the stream starts the counts afresh.
Rows consumed in DataLoader worker processes are counted in those processes, not here: to have a report, curate
offline first (`cat_filter` then `save_to_disk`) and train on the result.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence


class CurationReport(dict):
    """Counts of one curation pass: `total`, `kept` and `removed_by_<rule>` for every rule, in rule order.

    Args:
        rules: rule names in the order they are applied; a row is attributed to the first rule it fails.
        streaming: True when the counts fill as a stream is consumed (see the module docstring).
    """

    def __init__(self, rules: Sequence[str], streaming: bool = False):
        super().__init__(total=0, kept=0, **{f"removed_by_{rule}": 0 for rule in rules})
        self.rules = tuple(rules)
        self.streaming = streaming

    def reset(self) -> None:
        for key in self:
            self[key] = 0

    def add(self, outcomes: Iterable[str | None]) -> None:
        """Count a batch of outcomes: `None` for a kept row, else the name of the rule that removed it."""
        counts = Counter(outcomes)
        for outcome, count in counts.items():
            key = "kept" if outcome is None else f"removed_by_{outcome}"
            if key not in self:
                raise KeyError(f"unknown rule {outcome!r}; known rules: {self.rules}")
            self[key] += count
            self["total"] += count

    @property
    def removed(self) -> int:
        return self["total"] - self["kept"]

    def summary(self) -> str:
        """One line per count, for printing at the end of a command."""
        total = max(self["total"], 1)
        lines = [f"total {self['total']:>10,}", f"kept  {self['kept']:>10,}  ({self['kept'] / total:.1%})"]
        keys = [key for key in self if key.startswith("removed_by_")]
        width = max([32, *map(len, keys)])
        lines += [f"  {key:<{width}} {self[key]:>10,}  ({self[key] / total:.1%})" for key in keys]
        return "\n".join(lines)


class StreamCounter:
    """`IterableDataset.filter` function (batched, with indices) that keeps rows whose outcome is None and counts all.

    Index 0 marks the start of a pass over the stream, so counts restart on every new pass.
    """

    def __init__(self, report: CurationReport):
        self.report = report

    def __call__(self, outcomes: list[str | None], indices: list[int]) -> list[bool]:
        if indices and indices[0] == 0:
            self.report.reset()
        self.report.add(outcomes)
        return [outcome is None for outcome in outcomes]
