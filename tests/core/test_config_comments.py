"""Every field of a configuration dataclass (a class named ``*Config`` in recsys, pipelines or serving) carries a
comment: on its line, or on the comment lines directly above it (one comment may cover a group of fields only when
it sits right above each of them)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def config_fields() -> list[tuple[str, int, str, bool]]:
    """(file, line, Class.field, commented) of every annotated field of every ``*Config`` class."""
    out = []
    for package in ("recsys", "pipelines", "serving"):
        for path in sorted((REPO / package).rglob("*.py")):
            lines = path.read_text().splitlines()
            for node in ast.walk(ast.parse("\n".join(lines))):
                if not (isinstance(node, ast.ClassDef) and node.name.endswith("Config")):
                    continue
                for st in node.body:
                    if isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name):
                        own = any("#" in line for line in lines[st.lineno - 1:st.end_lineno])
                        above = lines[st.lineno - 2].strip().startswith("#")
                        name = f"{node.name}.{st.target.id}"
                        out.append((str(path.relative_to(REPO)), st.lineno, name, own or above))
    return out


def test_every_config_field_has_a_comment() -> None:
    fields = config_fields()
    assert len(fields) > 100  # the model, data, eval, pipeline, export and serving configs
    missing = [f"{f}:{line} {name}" for f, line, name, ok in fields if not ok]
    assert not missing, "fields without a comment (unit, range, why the default):\n" + "\n".join(missing)
