"""checking/wer.py: normalisation, edit counts, standard errors, reference transcripts."""

from __future__ import annotations

import math
import sys

import pytest

from sherpa_fixed.checking.wer import (
    JiwerMissingError,
    WordErrors,
    normalize,
    paired_standard_error,
    read_reference,
    references_for,
    standard_error,
    total,
    word_errors,
)
from sherpa_fixed.errors import BadInputError


def test_normalize_case_punctuation_and_apostrophes():
    assert normalize("Hello,  World! It's 'quoted' — ok?") == "hello world it's quoted ok"
    assert normalize("Twenty-one\tdogs\n") == "twenty one dogs"
    assert normalize("  ...  ") == ""


def test_word_errors_counts_each_kind():
    e = word_errors("one two three four", "one TWO tree four five")
    assert (e.substitutions, e.deletions, e.insertions, e.words) == (1, 0, 1, 4)
    assert e.wer == pytest.approx(0.5)
    d = word_errors("one two three", "")
    assert (d.substitutions, d.deletions, d.insertions, d.words) == (0, 3, 0, 3)
    assert word_errors("Stop. Go!", "stop go").errors == 0


def test_empty_reference_counts_insertions_and_has_no_rate():
    e = word_errors("", "yes no")
    assert e.insertions == 2 and e.words == 0 and e.wer is None
    assert "n/a" in e.line()


def test_total_and_line():
    t = total([WordErrors(1, 0, 0, 10), WordErrors(0, 2, 1, 20)])
    assert t == WordErrors(1, 2, 1, 30)
    assert t.line() == "WER 13.33 % (1 substituted, 2 deleted, 1 inserted; 30 reference words)"
    assert t.to_json()["wer"] == pytest.approx(4 / 30, abs=1e-6)


def test_standard_error_is_the_ratio_estimator_over_items():
    items = [WordErrors(2, 0, 0, 10), WordErrors(0, 0, 0, 10), WordErrors(4, 0, 0, 20)]
    w = 6 / 40
    expected = math.sqrt(3 / 2 * ((2 - w * 10) ** 2 + (0 - w * 10) ** 2 + (4 - w * 20) ** 2)) / 40
    assert standard_error(items) == pytest.approx(expected)
    assert standard_error(items[:1]) is None
    # the same errors spread evenly over items have no spread
    assert standard_error([WordErrors(1, 0, 0, 10)] * 5) == pytest.approx(0.0)


def test_paired_standard_error():
    a = [WordErrors(2, 0, 0, 10), WordErrors(1, 0, 0, 10), WordErrors(3, 0, 0, 10)]
    assert paired_standard_error(a, a) == pytest.approx(0.0)
    b = [WordErrors(1, 0, 0, 10), WordErrors(1, 0, 0, 10), WordErrors(1, 0, 0, 10)]
    d, n, diff = [1, 0, 2], 30, 3 / 30
    expected = math.sqrt(3 / 2 * sum((di - diff * 10) ** 2 for di in d)) / n
    assert paired_standard_error(a, b) == pytest.approx(expected)
    with pytest.raises(ValueError):
        paired_standard_error(a, b[:2])


def test_read_reference_text_or_file(tmp_path):
    f = tmp_path / "ref.txt"
    f.write_text("Yes, stop the car.\n", encoding="utf-8")
    assert read_reference(str(f)) == "Yes, stop the car.\n"
    assert read_reference("yes stop the car") == "yes stop the car"
    assert read_reference("stop") == "stop"
    with pytest.raises(BadInputError, match="not found"):
        read_reference(str(tmp_path / "missing.txt"))
    with pytest.raises(BadInputError, match="no words"):
        read_reference(" ,.; ")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(BadInputError, match="no words"):
        read_reference(str(empty))


def test_references_for_needs_one_per_file():
    assert references_for(["a b", "c"], 2) == ["a b", "c"]
    with pytest.raises(BadInputError, match="1 reference transcript"):
        references_for(["a b"], 2)


def test_missing_jiwer_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "jiwer", None)  # import jiwer now raises ImportError
    with pytest.raises(JiwerMissingError, match="pip install jiwer") as info:
        word_errors("a b", "a b")
    assert info.value.exit_code == 2
