"""Prompts files: CSV or TSV, one generation job per row, parsed strictly.

Columns (header row required, names case-insensitive):

- ``prompt`` or the reference's ``text_prompt`` (required);
- ``image``: relative to the prompts file, or the reference's ``image_path``: relative to the working
  directory, as the reference's ``inference.py`` reads its own ``example_prompts/*.csv``. Empty: no image.

Strict: the file must be UTF-8 (a BOM is fine), fields containing the delimiter must be quoted, and a row
with more or fewer fields than the header is an error naming its line (an unquoted comma in a prompt
would otherwise cut the prompt silently).
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

PROMPT_COLUMNS = ("prompt", "text_prompt")
IMAGE_COLUMNS = {"image": "file", "image_path": "cwd"}  # column -> what a relative path is relative to


@dataclass(frozen=True)
class Job:
    prompt: str
    image: str | None = None
    where: str = "prompt"  # for messages: "prompt", or "prompts.csv line 3"


class PromptsFileError(ValueError):
    """Problems with a prompts file, one line each (``problems``)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _decode(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")  # tolerates the BOM spreadsheet programs write
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise PromptsFileError([f"{path} line {line}: not UTF-8 (byte 0x{data[e.start]:02x}); "
                                "re-save the file as UTF-8 (CSV UTF-8 in a spreadsheet program)"]) from None


def _column(header: list[str], names: tuple[str, ...] | list[str], path: Path) -> str | None:
    found = [n for n in names if n in header]
    if len(found) > 1:
        raise PromptsFileError([f"{path} line 1: both {found[0]!r} and {found[1]!r} columns; keep one"])
    return found[0] if found else None


def read_prompts_file(path: str | Path) -> list[Job]:
    """Every row of a CSV/TSV prompts file as a Job; raises PromptsFileError listing each bad line."""
    path = Path(path)
    if not path.is_file():
        raise PromptsFileError([f"prompts_file not found: {path}; give the path of a CSV or TSV file"])
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    reader = csv.reader(io.StringIO(_decode(path), newline=""), delimiter=delimiter, strict=True)
    rows: list[tuple[int, list[str]]] = []
    problems: list[str] = []
    start = 1
    try:
        for row in reader:
            rows.append((start, row))
            start = reader.line_num + 1
    except csv.Error as e:
        raise PromptsFileError([f"{path} line {reader.line_num}: {e}; wrap fields that contain quotes, "
                                "commas or line breaks in double quotes (a quote inside one is written \"\")"]) from None
    rows = [(n, r) for n, r in rows if any(cell.strip() for cell in r)]  # blank lines are not jobs
    if not rows:
        raise PromptsFileError([f"{path}: empty; needs a header row with a `prompt` (or `text_prompt`) column"])
    header = [h.strip().lower() for h in rows[0][1]]
    prompt_col = _column(header, PROMPT_COLUMNS, path)
    if prompt_col is None:
        raise PromptsFileError([f"{path} line 1: no `prompt` (or `text_prompt`) column in the header {rows[0][1]}; "
                                "add a header row naming the columns"])
    image_col = _column(header, list(IMAGE_COLUMNS), path)
    sep = "tab" if delimiter == "\t" else "comma"
    jobs = []
    for line, row in rows[1:]:
        if len(row) != len(header):
            problems.append(f"{path} line {line}: {len(row)} fields but the header has {len(header)}; "
                            f"a prompt containing a {sep} must be wrapped in double quotes")
            continue
        cells = dict(zip(header, row))
        image = cells.get(image_col, "").strip() if image_col else ""
        if image and not Path(image).is_absolute() and IMAGE_COLUMNS[image_col] == "file":
            image = str(path.parent / image)
        jobs.append(Job(cells[prompt_col], image or None, f"{path.name} line {line}"))
    if problems:
        raise PromptsFileError(problems)
    return jobs
