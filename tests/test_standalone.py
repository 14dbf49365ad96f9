"""A clone of the repository alone passes its tests: nothing under tests/, bench/ or hal0proxy/
reads outside the repository. The contract data the tests need lives in tests/fixtures/."""

from __future__ import annotations

import re

from tests.support.emulator import REPO

# A path leaving the checkout: "../shared", parents[N] / "..", or a bare "shared" path segment.
OUTSIDE = re.compile(r"\.\./shared|[\"']shared[\"']|parents\[\d+\]\s*/\s*[\"']\.\.[\"']")


def test_no_code_or_test_reads_outside_the_repository() -> None:
    offenders = []
    for top in ("tests", "bench", "hal0proxy"):
        for path in sorted((REPO / top).rglob("*.py")):
            if path == REPO / "tests" / "test_standalone.py":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if OUTSIDE.search(line):
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_fixtures_say_where_they_came_from() -> None:
    fixtures = REPO / "tests" / "fixtures"
    readme = (fixtures / "README.md").read_text()
    for directory in sorted(p for p in fixtures.iterdir() if p.is_dir()):
        assert f"`{directory.name}/" in readme, f"tests/fixtures/README.md does not describe {directory.name}/"
    assert (fixtures / "lemond" / "log_lines.txt").is_file()
    assert (fixtures / "lemond" / "SOURCES.md").is_file()
    assert "LEGAL_TRANSITIONS" in (fixtures / "hal0" / "slot_states.md").read_text()
