"""The product speaks only of itself: no issue numbers, change history or process words in the
code, docs, sweep files, benchmarks or tests (a reader has the repository, not its making)."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEARCHED = ["README.md", "docs", "iclsim", "sweeps", "benchmarks", "tests", ".ci"]
# Built from parts so that this file does not match itself.
PROCESS_WORDS = re.compile("|".join([
    r"\bissues?\s*#?\s*[0-9]+",      # issue numbers
    r"\bclos" + r"ing note",          # the notes that close issues
    r"\bthis bra" + r"nch\b",         # change history
    r"\bwa" + r"ve\s+[0-9]+\b",       # planning waves
    r"before its" + r" last",
    r"\bhel" + r"per-[0-9]+",         # who made it
    r"\b(?:this|the|that) iss" + r"ue\b",  # the work item, not the product
]), re.IGNORECASE)


def _tracked_text_files():
    names = subprocess.run(["git", "ls-files", *SEARCHED], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in names:
        path = ROOT / name
        if not path.is_file():
            continue
        try:
            yield name, path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # figures, netCDF


def test_no_process_words_in_the_product():
    hits = [f"{name}:{i}: {line.strip()[:120]}"
            for name, text in _tracked_text_files()
            for i, line in enumerate(text.splitlines(), 1)
            if PROCESS_WORDS.search(line)]
    assert not hits, "process words in the product:\n" + "\n".join(hits)


def test_the_pattern_catches_what_it_guards_against():
    for bad in ["see iss" "ue #17", "Iss" "ues 12", "the clos" "ing note says", "on this bra" "nch",
                "wa" "ve 3 work", "hel" "per-6 wrote",
                "the tests of this iss" "ue"]:
        assert PROCESS_WORDS.search(bad), bad
    for good in ["the sweep file", "a wave of noise", "close to the note", "no issue here"]:
        assert not PROCESS_WORDS.search(good), good
