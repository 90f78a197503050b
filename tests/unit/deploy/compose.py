"""Compose files read as `docker compose -f a.yaml -f b.yaml config` reads them, for the checks
that need no engine: the YAML tags compose adds, the merge of override files, interpolation.
(No compose binary here: the Compose Specification's merge and interpolation rules, the parts these
files use, written out.)"""

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"


@dataclass(frozen=True)
class Tagged:
    """A value carrying compose's `!reset` or `!override` tag."""

    tag: str
    value: Any


class Loader(yaml.SafeLoader):
    """YAML with compose's tags read as plain values: what one file means on its own."""


class TaggedLoader(yaml.SafeLoader):
    """YAML with compose's tags kept (Tagged), for merging files."""


def _plain(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


def _tagged(tag: str) -> Any:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> Tagged:
        return Tagged(tag, _plain(loader, node))

    return construct


for _tag in ("!reset", "!override"):
    Loader.add_constructor(_tag, _plain)
    TaggedLoader.add_constructor(_tag, _tagged(_tag))


def load(path: Path, *, tagged: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = yaml.load(path.read_text(), TaggedLoader if tagged else Loader)
    return data


# Keys whose value an override replaces rather than merges (the specification's "merge" rules).
REPLACED = {"command", "entrypoint", "test", "image", "replicas"}


def _volume_target(entry: Any) -> str:
    if isinstance(entry, dict):
        return str(entry["target"])
    parts = str(entry).split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def merge(base: Any, override: Any, key: str = "") -> Any:
    if isinstance(override, Tagged):
        # !reset: as if no earlier file had set it; !override: this value, not merged.
        return type(override.value)() if override.tag == "!reset" else override.value
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for name, value in override.items():
            if isinstance(value, Tagged) and value.tag == "!reset":
                merged.pop(name, None)
            else:
                merged[name] = merge(base.get(name), value, name) if name in base else strip(value)
        return merged
    if isinstance(base, list) and isinstance(override, list) and key not in REPLACED:
        if key == "volumes":  # merged by mount target
            by_target = {_volume_target(v): v for v in base}
            by_target.update({_volume_target(v): v for v in override})
            return list(by_target.values())
        return base + [v for v in override if v not in base]
    return strip(override)


def strip(value: Any) -> Any:
    """A value of the first file that sets it: its tags mean nothing there."""
    if isinstance(value, Tagged):
        return strip(value.value)
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


def project(*names: str) -> dict[str, Any]:
    """deploy/<names> merged in order, as `docker compose -f ... -f ...` does (before interpolation)."""
    merged: dict[str, Any] = {}
    for name in names:
        merged = merge(merged, load(DEPLOY / name, tagged=True))
    return merged


_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})"
)


def required_variables(value: Any) -> set[str]:
    """The variables a file refuses to start without (`${NAME:?message}`)."""
    text = yaml.safe_dump(strip(value))
    return {m["name"] for m in _VARIABLE.finditer(text) if m["op"] in {":?", "?"}}


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's interpolation of every string; a required variable missing raises KeyError."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name, op, arg = match["name"], match["op"], match["arg"]
        present = env.get(name)
        if op in {":-", ":?"} and not present:
            present = None
        if present is not None:
            return present
        if op and op.endswith("?"):
            raise KeyError(f"{name}: {arg}")
        return arg if op else ""

    left = _VARIABLE.sub(one, value)
    return left


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a mapping (compose accepts a list of NAME=value too)."""
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}
