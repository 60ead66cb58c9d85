"""What a PromQL expression asks for, checked against series that were emitted: every selector must select
at least one of them, each literal alternative of a regex matcher on its own, and every label an
aggregation groups by (or a binary operation matches on) must be on the series it groups."""

import re
from collections.abc import Iterable
from dataclasses import dataclass

import promql_parser as promql

from tests.deploy_monitoring.emitted.scrape import Labels

_LITERAL_ALTERNATIVES = re.compile(r"[\w.:-]+(\|[\w.:-]+)+")
_RELABELLING = {"label_replace", "label_join"}


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str
    value: str

    def holds(self, labels: dict[str, str]) -> bool:
        value = labels.get(self.name, "")
        if self.op in ("=", "!="):
            return (value == self.value) == (self.op == "=")
        return (re.fullmatch(self.value, value) is not None) == (self.op == "=~")

    def __str__(self) -> str:
        return f'{self.name}{self.op}"{self.value}"'


@dataclass(frozen=True)
class Selector:
    name: str
    matchers: tuple[Matcher, ...]

    def selects(self, labels: dict[str, str]) -> bool:
        return labels.get("__name__") == self.name and all(m.holds(labels) for m in self.matchers)

    def variants(self) -> list["Selector"]:
        """The selector, and one selector per alternative of each `=~"a|b|c"` matcher made of literals:
        a matcher naming a value the code never emits is a mistake even when its other values match."""
        out = [self]
        for i, m in enumerate(self.matchers):
            if m.op == "=~" and _LITERAL_ALTERNATIVES.fullmatch(m.value):
                for value in m.value.split("|"):
                    out.append(
                        Selector(self.name, (*self.matchers[:i], Matcher(m.name, "=", value), *self.matchers[i + 1 :]))
                    )
        return out

    def __str__(self) -> str:
        return f"{self.name}{{{', '.join(map(str, self.matchers))}}}"


_OPS = {"MatchOp.Equal": "=", "MatchOp.NotEqual": "!=", "MatchOp.Re": "=~", "MatchOp.NotRe": "!~"}


def _selector(node: promql.VectorSelector) -> Selector:
    matchers = [Matcher(m.name, _OPS[str(m.op)], m.value) for m in node.matchers.matchers]
    name = node.name or next(m.value for m in matchers if m.name == "__name__" and m.op == "=")
    return Selector(name, tuple(m for m in matchers if m.name != "__name__"))


def _nodes(node: promql.Expr) -> list[promql.Expr]:
    """`node` and every node beneath it."""
    found: list[promql.Expr] = []

    def visit(child: promql.Expr) -> bool:
        found.append(child)
        return True

    promql.walk(node, visit)
    return found


def selectors(expr: str) -> list[Selector]:
    return [_selector(n) for n in _nodes(promql.parse(expr)) if isinstance(n, promql.VectorSelector)]


@dataclass(frozen=True)
class Grouping:
    """Labels an aggregation groups by, or a binary operation matches on, and the selectors beneath it."""

    labels: tuple[str, ...]
    selectors: tuple[Selector, ...]


def groupings(expr: str) -> list[Grouping]:
    """Every `by (...)` and `on (...)` of `expr` whose operands are not relabelled on the way."""
    found: list[Grouping] = []
    for node in _nodes(promql.parse(expr)):
        if isinstance(node, promql.AggregateExpr) and node.modifier is not None:
            if node.modifier.type != promql.AggModifierType.By:
                continue
            labels, operands = node.modifier.labels, [node.expr]
        elif isinstance(node, promql.BinaryExpr) and node.modifier is not None and node.modifier.matching is not None:
            if node.modifier.matching.type != promql.LabelModifierType.Include:
                continue
            labels, operands = node.modifier.matching.labels, [node.lhs, node.rhs]
        else:
            continue
        for operand in operands:
            beneath = _nodes(operand)
            if any(isinstance(n, promql.Call) and n.func.name in _RELABELLING for n in beneath):
                continue
            chosen = tuple(_selector(n) for n in beneath if isinstance(n, promql.VectorSelector))
            found.append(Grouping(tuple(labels), chosen))
    return found


def problems(expr: str, emitted: Iterable[Labels], recorded: set[str]) -> list[str]:
    """Why `expr` would select nothing, or group by nothing, on `emitted` series; empty when it is fine."""
    series = [dict(labels) for labels in emitted]
    found: list[str] = []
    for selector in selectors(expr):
        if selector.name in recorded:
            if selector.matchers:
                found.append(f"{selector}: label matchers on a recorded series are not checked here")
            continue
        for variant in selector.variants():
            if not any(variant.selects(s) for s in series):
                found.append(f"{variant} selects no emitted series")
    for grouping in groupings(expr):
        for selector in grouping.selectors:
            if selector.name in recorded:
                continue
            chosen = [s for s in series if selector.selects(s)]
            missing = [label for label in grouping.labels if chosen and not any(label in s for s in chosen)]
            if missing:
                found.append(f"{selector} has no label {missing} to group or match by")
    return list(dict.fromkeys(found))
