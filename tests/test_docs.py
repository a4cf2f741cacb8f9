"""The README's settings table is generated; it must match the code it documents."""

from pathlib import Path

from services.common.config import markdown_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_lists_every_setting_as_the_code_defines_it() -> None:
    text = README.read_text()
    start = text.index("<!-- settings table")
    start = text.index("\n", start) + 1
    end = text.index("<!-- end of settings table -->")
    assert text[start:end].strip() == markdown_table()
