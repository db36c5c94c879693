import pytest

from vp.errors import CliError
from vp.sizes import parse_size


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("65536", 65536),
        ("256K", 256 * 1024),
        ("8M", 8 * 1024**2),
        ("1.5G", 3 * 1024**3 // 2),
        ("64KiB", 64 * 1024),
        ("2mb", 2 * 1024**2),
        (" 1 ", 1),
    ],
)
def test_sizes_are_read_in_powers_of_1024(text, count):
    assert parse_size(text, what="--chunk-size") == count


@pytest.mark.parametrize("text", ["", "fast", "-1", "1T", "0", "0.1"])
def test_a_size_that_is_not_one_says_what_is_expected(text):
    with pytest.raises(CliError, match="--chunk-size must be"):
        parse_size(text, what="--chunk-size")
