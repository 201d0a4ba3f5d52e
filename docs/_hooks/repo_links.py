"""MkDocs hook: links from a page to files of the repository outside docs/ (`../examples/fastapi_app.py`,
`../README.md`) work when the Markdown is read on the forge or in an editor; on the site they become links
to the repository. A link whose target does not exist in the checkout fails the strict build."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.plugins.repo_links")

# ](../path) or ](../path#anchor), not images or absolute URLs.
_LINK = re.compile(r"\]\((\.\./[^)\s#]+)(#[^)\s]*)?\)")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    docs_dir = Path(config["docs_dir"])
    page_dir = (docs_dir / page.file.src_path).parent
    root = docs_dir.resolve().parent
    repo = str(config.get("repo_url") or "").rstrip("/")

    def rewrite(match: re.Match[str]) -> str:
        target = (page_dir / match.group(1)).resolve()
        try:
            relative = target.relative_to(root)
        except ValueError:
            return match.group(0)
        if target.is_relative_to(docs_dir.resolve()):
            return match.group(0)  # a page of the site: MkDocs checks it
        if not target.exists():
            log.warning(
                "Doc file '%s' links to '%s', which does not exist in the repository.",
                page.file.src_path,
                match.group(1),
            )
            return match.group(0)
        kind = "tree" if target.is_dir() else "blob"
        return f"]({repo}/{kind}/main/{relative.as_posix()}{match.group(2) or ''})"

    return _LINK.sub(rewrite, markdown)
