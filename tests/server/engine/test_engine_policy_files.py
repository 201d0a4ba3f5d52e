"""Loading policy files: folders, documents, and every way a file can be wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aegis_server.engine import PolicySetError
from aegis_server.policies.files import load_policy_paths, load_policy_set, parse_policy_text

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "policies"

CAPS = """
capabilities:
  - name: database.query
    risk_level: medium
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _problems(paths: list[Path]) -> list:  # type: ignore[type-arg]
    with pytest.raises(PolicySetError) as info:
        load_policy_set(paths)
    return info.value.problems


def test_the_examples_load() -> None:
    policy_set = load_policy_set([EXAMPLES])
    assert {"database.query", "payments.refund", "shell.exec", "email.send", "deploy.production"} <= set(
        policy_set.capabilities
    )
    assert policy_set.rule_count >= 10
    assert policy_set.warnings == ()


def test_folder_with_nested_files_single_policy_documents_and_json(tmp_path: Path) -> None:
    _write(tmp_path, "caps.yaml", CAPS)
    _write(tmp_path, "sub/one.yml", "name: one\nrules:\n  - {capability: database.query, outcome: ALLOW}\n")
    _write(
        tmp_path,
        "two.json",
        json.dumps(
            {"policies": [{"name": "two", "rules": [{"capability": "*", "outcome": "DENY", "condition": "false"}]}]}
        ),
    )
    _write(tmp_path, "multi.yaml", "name: three\nrules: []\n---\nname: four\nenabled: false\nrules: []\n")
    _write(tmp_path, ".hidden/ignored.yaml", "this is: [not valid")
    _write(tmp_path, "notes.txt", "ignored")
    _write(tmp_path, "cases.yaml", "cases:\n  - name: x\n")
    docs = load_policy_paths([tmp_path])
    assert sorted(p.name for p in docs.policies) == ["four", "one", "three", "two"]
    assert [c.name for c in docs.capabilities] == ["database.query"]
    assert docs.sources["one"].endswith("one.yml")
    assert docs.sources["capability:database.query"].endswith("caps.yaml")


def test_yaml_syntax_errors_name_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "bad.yaml", "name: p\nrules:\n  - capability: [unclosed\n")
    problems = _problems([path])
    assert problems[0].source is not None and problems[0].source.startswith(f"{path}:")
    assert "invalid YAML" in problems[0].message


def test_duplicate_keys_are_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, "dup.yaml", "name: p\nrules:\n  - capability: x\n    outcome: ALLOW\n    outcome: DENY\n")
    problems = _problems([path])
    assert "duplicate key 'outcome'" in problems[0].message
    assert problems[0].source == f"{path}:5:5"


def test_yaml_merge_keys_still_work(tmp_path: Path) -> None:
    text = CAPS + (
        "policies:\n  - name: p\n    rules:\n"
        "      - &base {capability: database.query, outcome: ALLOW, priority: 1}\n"
        "      - {<<: *base, outcome: DENY, condition: 'false'}\n"
    )
    policy_set = load_policy_set([_write(tmp_path, "merge.yaml", text)])
    assert policy_set.rule_count == 2


def test_schema_problems_name_policy_and_rule(tmp_path: Path) -> None:
    text = CAPS + (
        "policies:\n  - name: p\n    rules:\n"
        "      - {id: r1, capability: database.query, outcome: MAYBE}\n"
        "      - {capability: database.query, outcome: ALLOW, colour: blue}\n"
    )
    problems = _problems([_write(tmp_path, "p.yaml", text)])
    by_rule = {p.rule: p.message for p in problems}
    assert by_rule["r1"].startswith("outcome: ")
    assert "colour" in by_rule["1"]
    assert all(p.policy == "p" for p in problems)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("- just\n- a list\n", "expected a mapping"),
        ("hello: world\n", "not a policy document"),
        ("policies: {name: x}\n", "`policies` must be a list"),
        ("policies: []\nextras: 1\n", "unknown top-level key(s) extras"),
        ("capabilities:\n  - {name: 'bad name!'}\n", "capability bad name!"),
        ("date: 2020-13-45\n", "could not parse"),
    ],
)
def test_malformed_documents(tmp_path: Path, text: str, fragment: str) -> None:
    problems = _problems([_write(tmp_path, "x.yaml", text)])
    assert fragment in problems[0].message


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    problems = _problems([_write(tmp_path, "x.json", '{"policies": [}')])
    assert problems[0].source is not None and problems[0].source.endswith("x.json:1:15")
    duplicate = _problems([_write(tmp_path, "y.json", '{"policies": [], "policies": []}')])
    assert "duplicate key" in duplicate[0].message


def test_duplicates_across_files_name_both_files(tmp_path: Path) -> None:
    a = _write(tmp_path, "a.yaml", "name: same\nrules: []\n")
    _write(tmp_path, "b.yaml", "name: same\nrules: []\n")
    problems = _problems([tmp_path])
    assert len(problems) == 1
    assert f"also defined in {a}" in problems[0].message


def test_missing_paths_and_binary_files(tmp_path: Path) -> None:
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00garbage")
    problems = _problems([tmp_path / "nope", tmp_path / "bin.yaml"])
    assert [p.message for p in problems] == ["no such file or folder", problems[1].message]
    assert "not UTF-8" in problems[1].message


def test_alias_bombs_are_rejected(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    problems = _problems([_write(tmp_path, "bomb.yaml", "\n".join(lines) + "\n")])
    assert "expands to more than" in problems[0].message


def test_load_and_compile_problems_are_reported_together(tmp_path: Path) -> None:
    _write(tmp_path, "broken.yaml", "name: [")
    _write(
        tmp_path,
        "p.yaml",
        CAPS + "policies:\n  - name: p\n    rules:\n      - {capability: x, outcome: ALLOW, condition: 'a ==' }\n",
    )
    problems = _problems([tmp_path])
    assert len(problems) == 2
    assert {p.source.rsplit("/", 1)[-1].split(":")[0] for p in problems if p.source} == {"broken.yaml", "p.yaml"}


def test_parse_policy_text_for_api_bodies() -> None:
    docs = parse_policy_text('{"name": "p", "rules": []}', "request", as_json=True)
    assert docs.policies[0].name == "p"
    with pytest.raises(PolicySetError):
        parse_policy_text("name: p\nrules: 5\n", "request")
