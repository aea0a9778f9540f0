"""Write the merchant API's OpenAPI document to docs/openapi.json (or check that it is current).

    .venv/bin/python scripts/export_openapi.py          # regenerate docs/openapi.json
    .venv/bin/python scripts/export_openapi.py --check  # exit 1 if docs/openapi.json is stale

The document comes from the application itself (`create_app().openapi()`), built without starting
its lifespan, so no database is needed. It is written pretty-printed with sorted keys and a
trailing newline, so that a change to the API shows up as a readable diff.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DOCUMENT_PATH = PROJECT_ROOT / "docs" / "openapi.json"


def document() -> dict[str, Any]:
    """The OpenAPI document the application serves at /openapi.json."""
    from server.main import create_app

    return create_app().openapi()


def render(openapi: dict[str, Any]) -> str:
    return json.dumps(openapi, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="do not write; exit 1 if the file is out of date"
    )
    parser.add_argument("--output", type=Path, default=DOCUMENT_PATH, help="where to write")
    args = parser.parse_args(argv)
    text = render(document())
    output: Path = args.output
    if args.check:
        current = output.read_text(encoding="utf-8") if output.exists() else None
        if current != text:
            print(f"{output} is out of date; run .venv/bin/python scripts/export_openapi.py")
            return 1
        print(f"{output} is up to date.")
        return 0
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    print(f"Wrote {output} ({len(text):,} bytes).")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(PROJECT_ROOT))
    sys.exit(main())
