"""Loading capabilities and policies from YAML or JSON files (or folders of them).

A file holds one or more YAML documents (`---`); each document is one of

- a mapping with `capabilities: [...]` and/or `policies: [...]`;
- a single policy: a mapping with `name` and `rules`;
- a test-case table for `aegis-server policy test` (a mapping with `cases`), which the loader skips;
- empty.

Folders are read recursively in sorted order (`*.yaml`, `*.yml`, `*.json`; hidden files skipped).
Every problem (YAML syntax with line and column, duplicate keys, unknown fields, bad values, duplicate
names across files) is collected and reported together as one `PolicySetError`: a set either loads
whole or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

from aegis_sdk.models import Capability, Policy, PolicyProblem
from aegis_server.engine import PolicySet, PolicySetError, compile_policy_set

__all__ = [
    "POLICY_FILE_SUFFIXES",
    "PolicyDocuments",
    "load_policy_paths",
    "load_policy_set",
    "parse_policy_text",
    "read_yaml_file",
]

POLICY_FILE_SUFFIXES = (".yaml", ".yml", ".json")
_MAX_FILE_BYTES = 5 * 1024 * 1024
_MAX_VALUES = 200_000
_MERGE_TAG = "tag:yaml.org,2002:merge"
_Item = TypeVar("_Item", Capability, Policy)


@dataclass
class PolicyDocuments:
    """What a set of files defines. `sources` maps a policy name, and `capability:<name>`, to its file."""

    policies: list[Policy] = field(default_factory=list)
    capabilities: list[Capability] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    def extend(self, other: PolicyDocuments) -> None:
        self.policies.extend(other.policies)
        self.capabilities.extend(other.capabilities)
        self.sources.update(other.sources)
        self.files.extend(other.files)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys in a mapping (a silent override hides mistakes)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[tuple[str, str], yaml.Mark] = {}
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
            key = (key_node.tag, key_node.value)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"found duplicate key {key_node.value!r}; keep only one",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON; use a finite number")


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}; keep only one")
        result[key] = value
    return result


def _count_values(value: Any, budget: int) -> int:
    """Walk `value` (aliases expanded) and return the remaining budget; negative means too large."""
    stack = [value]
    while stack:
        item = stack.pop()
        budget -= 1
        if budget < 0:
            return budget
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return budget


def _parse_documents(text: str, source: str, as_json: bool) -> tuple[list[Any], list[PolicyProblem]]:
    try:
        if as_json:
            documents = [json.loads(text, object_pairs_hook=_json_pairs, parse_constant=_reject_constant)]
        else:
            documents = list(yaml.load_all(text, Loader=_StrictLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        detail = " ".join(part for part in (exc.context, exc.problem) if part)
        return [], [PolicyProblem(message=f"invalid YAML: {detail or exc}", source=where)]
    except json.JSONDecodeError as exc:
        return [], [PolicyProblem(message=f"invalid JSON: {exc.msg}", source=f"{source}:{exc.lineno}:{exc.colno}")]
    except RecursionError:
        return [], [PolicyProblem(message="the document is nested too deeply to load", source=source)]
    except Exception as exc:  # any other parser failure (bad date, bad escape...) is a clear problem, not a crash
        return [], [PolicyProblem(message=f"could not parse the file: {type(exc).__name__}: {exc}", source=source)]
    for document in documents:
        if _count_values(document, _MAX_VALUES) < 0:
            return [], [
                PolicyProblem(
                    message=f"the document expands to more than {_MAX_VALUES} values (recursive or repeated YAML "
                    "aliases?); split it or remove the aliases",
                    source=source,
                )
            ]
    return documents, []


def _validation_problems(
    exc: ValidationError, raw: Any, source: str, policy: str | None, kind: str
) -> list[PolicyProblem]:
    problems: list[PolicyProblem] = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = list(error["loc"])
        rule: str | None = None
        if kind == "policy" and len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            rules = raw.get("rules") if isinstance(raw, Mapping) else None
            raw_rule = rules[loc[1]] if isinstance(rules, list) and loc[1] < len(rules) else None
            raw_id = raw_rule.get("id") if isinstance(raw_rule, Mapping) else None
            rule = raw_id if isinstance(raw_id, str) else str(loc[1])
            loc = loc[2:]
        where = ".".join(str(part) for part in loc)
        message = f"{where}: {error['msg']}" if where else error["msg"]
        if kind == "capability":
            message = f"capability {policy or '?'}: {message}"
            problems.append(PolicyProblem(message=message, source=source))
        else:
            problems.append(PolicyProblem(message=message, policy=policy, rule=rule, source=source))
    return problems


def _name_of(raw: Any, fallback: str) -> str:
    name = raw.get("name") if isinstance(raw, Mapping) else None
    return name if isinstance(name, str) and name else fallback


def _validated(model: type[_Item], raw: Any, where: str, source: str, problems: list[PolicyProblem]) -> _Item | None:
    """`raw` as a `model` (Capability or Policy), or None with its problems added (named by `where`)."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        kind = "capability" if model is Capability else "policy"
        problems.extend(_validation_problems(exc, raw, source, _name_of(raw, where), kind))
        return None


def _document_contents(document: Any, source: str, docs: PolicyDocuments) -> list[PolicyProblem]:
    problems: list[PolicyProblem] = []
    if document is None:
        return problems
    if not isinstance(document, Mapping):
        return [
            PolicyProblem(
                message=f"expected a mapping with `capabilities:` and/or `policies:` (or one policy with `rules:`), "
                f"found a {type(document).__name__}",
                source=source,
            )
        ]
    if "cases" in document and not ({"policies", "capabilities", "rules"} & set(document)):
        return problems  # a test-case table for `aegis-server policy test`
    raw_policies: list[Any]
    raw_capabilities: list[Any] = []
    if "rules" in document:
        raw_policies = [document]
    elif "policies" in document or "capabilities" in document:
        unknown = sorted(str(key) for key in document if key not in ("policies", "capabilities"))
        if unknown:
            problems.append(
                PolicyProblem(
                    message=f"unknown top-level key(s) {', '.join(unknown)}; a policy file may hold `capabilities` "
                    "and `policies`",
                    source=source,
                )
            )
        pol = document.get("policies") or []
        cap = document.get("capabilities") or []
        if not isinstance(pol, list):
            problems.append(PolicyProblem(message="`policies` must be a list of policies", source=source))
            pol = []
        if not isinstance(cap, list):
            problems.append(PolicyProblem(message="`capabilities` must be a list of capabilities", source=source))
            cap = []
        raw_policies, raw_capabilities = pol, cap
    else:
        keys = ", ".join(sorted(str(key) for key in document)) or "none"
        return [
            PolicyProblem(
                message=f"not a policy document (top-level keys: {keys}); expected `capabilities:` and/or "
                "`policies:`, or one policy with `name:` and `rules:`",
                source=source,
            )
        ]
    for index, raw in enumerate(raw_capabilities):
        capability = _validated(Capability, raw, f"capabilities[{index}]", source, problems)
        if capability is not None:
            docs.capabilities.append(capability)
            docs.sources.setdefault(f"capability:{capability.name}", source)
    for index, raw in enumerate(raw_policies):
        policy = _validated(Policy, raw, f"policies[{index}]", source, problems)
        if policy is not None:
            docs.policies.append(policy)
            docs.sources.setdefault(policy.name, source)
    return problems


def read_yaml_file(path: Path) -> list[Any]:
    """Read a YAML (or, for `.json`, JSON) file with the loader's safety checks; return its documents.

    Raises `PolicySetError` naming the file (and line) when it cannot be read or parsed.
    """
    source = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicySetError(
            [PolicyProblem(message=f"cannot read the file: {exc.strerror or exc}", source=source)]
        ) from None
    if len(raw) > _MAX_FILE_BYTES:
        raise PolicySetError([PolicyProblem(message=f"the file is larger than {_MAX_FILE_BYTES} bytes", source=source)])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicySetError(
            [PolicyProblem(message=f"the file is not UTF-8 text ({exc.reason})", source=source)]
        ) from None
    documents, problems = _parse_documents(text, source, as_json=path.suffix.lower() == ".json")
    if problems:
        raise PolicySetError(problems)
    return documents


def parse_policy_text(text: str, source: str = "<input>", *, as_json: bool = False) -> PolicyDocuments:
    """Parse one file's text; raise `PolicySetError` with every problem found."""
    docs = PolicyDocuments(files=[source])
    documents, problems = _parse_documents(text, source, as_json)
    for document in documents:
        problems.extend(_document_contents(document, source, docs))
    if problems:
        raise PolicySetError(problems)
    return docs


def _policy_files(path: Path) -> list[Path]:
    return sorted(
        candidate
        for candidate in path.rglob("*")
        if candidate.is_file()
        and candidate.suffix.lower() in POLICY_FILE_SUFFIXES
        and not any(part.startswith(".") for part in candidate.relative_to(path).parts)
    )


def _load_paths(paths: Sequence[Path]) -> tuple[PolicyDocuments, list[PolicyProblem]]:
    docs = PolicyDocuments()
    problems: list[PolicyProblem] = []
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(_policy_files(path))
        elif path.is_file():
            files.append(path)
        else:
            problems.append(PolicyProblem(message="no such file or folder", source=str(path)))
    policy_files: dict[str, str] = {}
    capability_files: dict[str, str] = {}
    for file in files:
        source = str(file)
        try:
            documents = read_yaml_file(file)
        except PolicySetError as exc:
            problems.extend(exc.problems)
            continue
        file_docs = PolicyDocuments()
        file_problems: list[PolicyProblem] = []
        for document in documents:
            file_problems.extend(_document_contents(document, source, file_docs))
        if file_problems:
            problems.extend(file_problems)
            continue
        for policy in file_docs.policies:
            first = policy_files.setdefault(policy.name, source)
            if first != source:
                problems.append(
                    PolicyProblem(
                        message=f"policy '{policy.name}' is also defined in {first}; policy names must be unique",
                        policy=policy.name,
                        source=source,
                    )
                )
            else:
                docs.policies.append(policy)
        for capability in file_docs.capabilities:
            first = capability_files.setdefault(capability.name, source)
            if first != source:
                problems.append(
                    PolicyProblem(
                        message=f"capability '{capability.name}' is also defined in {first}; keep one definition",
                        source=source,
                    )
                )
            else:
                docs.capabilities.append(capability)
        for key, value in file_docs.sources.items():
            docs.sources.setdefault(key, value)
        docs.files.append(source)
    return docs, problems


def load_policy_paths(paths: Sequence[Path]) -> PolicyDocuments:
    """Read capabilities and policies from files and folders; raise `PolicySetError` listing every problem."""
    docs, problems = _load_paths(paths)
    if problems:
        raise PolicySetError(problems)
    return docs


def load_policy_set(paths: Sequence[Path], *, extra: PolicyDocuments | None = None) -> PolicySet:
    """Load files and compile them (plus `extra`, e.g. policies stored through the API) into a `PolicySet`.

    Loading and compile problems are reported together in one `PolicySetError`.
    """
    docs, problems = _load_paths(paths)
    if extra is not None:
        docs.extend(extra)
    try:
        policy_set = compile_policy_set(docs.policies, docs.capabilities, sources=docs.sources)
    except PolicySetError as exc:
        problems.extend(problem for problem in exc.problems if problem not in problems)
    if problems:
        raise PolicySetError(problems)
    return policy_set
