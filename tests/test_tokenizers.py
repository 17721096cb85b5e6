import pytest

import data
from config import tokenizer_names, tokenizer_vocab_size

TEXTS = ["Once upon a time, there was a cat.\nThe end.", "", " leading and trailing  ", "tabs\tand\r\nCRLF",
         "ünïcödé 中文字 emoji 😀🐈 math ∑∞ ĳ", "x<|endoftext|>y", "\x00\x7f control"]


@pytest.mark.parametrize("name", ["bpe512", "bpe1024", "bpe2048", "bpe4096", "byte", "char"])
def test_round_trip_and_special_ids(name):
    assert name in tokenizer_names()
    tok = data.load_tokenizer(name)
    assert tok.token_to_id("<|endoftext|>") == data.EOT_ID and tok.token_to_id("<|pad|>") == data.PAD_ID
    assert tok.get_vocab_size() == tokenizer_vocab_size(name)
    for text in TEXTS:
        assert tok.decode(tok.encode(text).ids, skip_special_tokens=False) == text


def test_bpe_sizes_and_compression():
    sizes = {n: tokenizer_vocab_size(n) for n in ("bpe512", "bpe1024", "bpe2048", "bpe4096", "byte")}
    assert sizes == {"bpe512": 512, "bpe1024": 1024, "bpe2048": 2048, "bpe4096": 4096, "byte": 258}
    text = "Once upon a time, there was a little girl named Lily. She liked to play in the park with her dog."
    lengths = [len(data.load_tokenizer(n).encode(text).ids) for n in ("byte", "bpe512", "bpe2048", "bpe4096")]
    assert lengths[0] == len(text.encode()) and lengths == sorted(lengths, reverse=True) and lengths[-1] < lengths[0] / 3


def test_missing_tokenizer_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="tokenizer 'nope'"):
        data.load_tokenizer("nope")
