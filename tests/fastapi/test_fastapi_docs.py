"""docs/fastapi.md stays in step with the package: every refusal code and public name is documented."""

import typing

from fastapi_support import ROOT

import aegis_fastapi
from aegis_fastapi import RefusalCode

DOC = (ROOT / "docs" / "fastapi.md").read_text(encoding="utf-8")


def test_every_refusal_code_is_documented() -> None:
    missing = [code for code in typing.get_args(RefusalCode) if f"`{code}`" not in DOC]
    assert missing == []


def test_every_public_name_is_in_the_reference() -> None:
    reference = DOC.split("## Reference", 1)[1]
    missing = [name for name in aegis_fastapi.__all__ if name != "__version__" and name not in reference]
    assert missing == []
