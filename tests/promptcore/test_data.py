import pytest

from promptcore.data import check_utf8, detect_encoding, few_shot_indices
from promptcore.errors import UserError


def test_few_shot_draw_among_and_classes():
    labels = [i % 3 for i in range(30)]
    picked = few_shot_indices(labels, 2, seed=0, among=range(15), classes=[0, 2])
    assert all(i < 15 for i in picked) and sorted(labels[i] for i in picked) == [0, 0, 2, 2]
    assert few_shot_indices(labels, 20, seed=0, on_short="all") == list(range(30))
    with pytest.raises(ValueError, match="shots: K must be a positive integer, found 0"):
        few_shot_indices(labels, 0, seed=0)


TEXT = "text,label\ncafé au lait,0\ntea,1\n"


@pytest.mark.parametrize("encoding, name, words", [
    ("utf-16", "utf-16", "UTF-16 (little-endian, with a byte order mark)"),
    ("utf-16-be", "utf-16be", "UTF-16 (big-endian, without a byte order mark)"),
    ("utf-16-le", "utf-16le", "UTF-16 (little-endian, without a byte order mark)"),
    ("utf-32", "utf-32", "UTF-32 (little-endian, with a byte order mark)"),
    ("utf-32-be", "utf-32be", "UTF-32 (big-endian, without a byte order mark)"),
    ("latin-1", "latin1", "Latin-1 (ISO-8859-1)"),
    ("cp1252", "cp1252", "Windows-1252"),
])
def test_a_file_not_in_utf8_names_its_encoding_and_the_iconv_line_that_converts_it(tmp_path, encoding, name, words):
    path = tmp_path / "rows.csv"
    path.write_bytes((TEXT + ("“quoted”,1\n" if encoding == "cp1252" else "")).encode(encoding))
    with pytest.raises(UserError) as e:
        check_utf8(str(path))
    message = str(e.value)
    assert words in message and f"iconv -f {name} -t utf-8 {path} > {tmp_path / 'rows.utf8.csv'}" in message, message
    assert len(message.splitlines()) == 1
    # the line given converts it: the result reads as UTF-8
    converted = path.read_bytes().decode({"utf-16be": "utf-16-be", "utf-16le": "utf-16-le", "utf-32be": "utf-32-be"}.get(name, name))
    assert converted.lstrip("\ufeff").startswith("text,label\ncafé")


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig"])
def test_utf8_with_or_without_a_byte_order_mark_passes(tmp_path, encoding):
    (tmp_path / "rows.csv").write_bytes(TEXT.encode(encoding))
    check_utf8(str(tmp_path / "rows.csv"))
    check_utf8(str(tmp_path / "missing.csv"))  # left to the reader
    assert detect_encoding("plain ascii, no NUL bytes".encode()) is None
