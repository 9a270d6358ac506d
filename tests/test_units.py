from clipo_gql.units import duration_text, human_size


def test_human_size():
    assert human_size(2 * 1024**3) == "2 GiB"
    assert human_size(1536 * 1024**2) == "1.5 GiB"
    assert human_size(10_000) == "9.8 KiB"
    assert human_size(1000) == "1000 bytes"


def test_duration_text():
    assert duration_text(165.4) == "00:02:45"
    assert duration_text(3 * 3600 + 61.9) == "03:01:01"
    assert duration_text(0) == "00:00:00"
