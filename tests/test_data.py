import math
import os
import shutil

import numpy as np
import pytest
import torch

import data
from conftest import FIXTURE_DATA, SHARED_DATA, needs_shared_data


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_packing_and_char_count(cache_dir):
    d = data.get_token_data("valid", "bpe512", FIXTURE_DATA)
    stories = data.read_local_stories(os.path.join(FIXTURE_DATA, "valid.txt"))
    tok = data.load_tokenizer("bpe512")
    expected = [i for s in stories for i in [data.EOT_ID] + tok.encode(s).ids]
    assert d.tokens.tolist() == expected
    assert d.num_chars == sum(map(len, stories)) + len(stories)
    assert len(os.listdir(cache_dir)) == 2  # tokens + metadata
    assert isinstance(d.tokens, np.memmap) and d.tokens.dtype == np.uint16  # read from disk, not loaded


def test_streaming_across_chunk_and_batch_boundaries(cache_dir, monkeypatch):
    """Tiny read chunks cut stories and separators in two; tiny encode batches: the same tokens."""
    stories = data.read_local_stories(os.path.join(FIXTURE_DATA, "valid.txt"))
    whole = data.get_token_data("valid", "bpe512", FIXTURE_DATA)
    shutil.rmtree(cache_dir)
    monkeypatch.setattr(data, "CHUNK_CHARS", 7)  # shorter than the separator, '<|endoftext|>'
    monkeypatch.setattr(data, "STORIES_PER_BATCH", 3)
    assert list(data.iter_local_stories(os.path.join(FIXTURE_DATA, "valid.txt"))) == stories
    streamed = data.get_token_data("valid", "bpe512", FIXTURE_DATA)
    assert streamed.tokens.tolist() == whole.tokens.tolist() and streamed.num_chars == whole.num_chars


def test_hub_path_matches_local_folder(cache_dir, monkeypatch):
    """The hub's datasets.map path (here a local Dataset; empty texts are skipped) packs the
    same tokens and counts the same characters as the local folder."""
    import datasets
    stories = data.read_local_stories(os.path.join(FIXTURE_DATA, "valid.txt"))
    local = data.get_token_data("valid", "bpe512", FIXTURE_DATA)
    hub = datasets.Dataset.from_dict({"text": stories[:5] + ["", "  "] + [f"  {s}\n" for s in stories[5:]]})
    monkeypatch.setattr(data, "load_hub_split", lambda split: hub)
    monkeypatch.setattr(data, "STORIES_PER_BATCH", 4)  # several map batches and shards
    monkeypatch.delenv("MMS_DATA_DIR", raising=False)
    from_hub = data.get_token_data("valid", "bpe512", "")
    assert from_hub.tokens.tolist() == local.tokens.tolist() and from_hub.num_chars == local.num_chars


def test_batches_from_the_memmap_are_int64(cache_dir):
    tokens = data.get_token_data("valid", "bpe512", FIXTURE_DATA).tokens
    x, y = data.sample_batch(tokens, 4, 16, torch.Generator().manual_seed(1))
    assert x.dtype == y.dtype == torch.int64 and torch.equal(x[:, 1:], y[:, :-1])
    start = int(np.flatnonzero(np.all(np.lib.stride_tricks.sliding_window_view(tokens, 16) == x[0].numpy(), 1))[0])
    assert tokens[start:start + 17].tolist() == x[0].tolist() + [int(y[0, -1])]


def test_empty_split_is_a_clear_error(cache_dir, tmp_path):
    for name in ("train.txt", "valid.txt"):
        (tmp_path / name).write_text("<|endoftext|>\n  \n<|endoftext|>\n")
    with pytest.raises(ValueError, match="valid split.*holds no stories"):
        data.get_token_data("valid", "bpe512", str(tmp_path))


def test_cache_is_reused_and_rebuilt_when_source_changes(cache_dir, tmp_path):
    src = tmp_path / "corpus"
    shutil.copytree(FIXTURE_DATA, src)
    first = data.get_token_data("valid", "bpe512", str(src))
    assert np.array_equal(data.get_token_data("valid", "bpe512", str(src)).tokens, first.tokens)
    assert len(os.listdir(cache_dir)) == 2
    with open(src / "valid.txt", "a") as f:
        f.write("A new story about a red kite.\n<|endoftext|>\n")
    changed = data.get_token_data("valid", "bpe512", str(src))
    assert len(changed.tokens) > len(first.tokens) and len(os.listdir(cache_dir)) == 4
    other = data.get_token_data("valid", "bpe1024", str(src))  # another tokenizer: another cache entry
    assert len(other.tokens) < len(changed.tokens) and len(os.listdir(cache_dir)) == 6


def test_batches_are_seeded_windows():
    tokens = torch.arange(1000)
    x1, y1 = data.sample_batch(tokens, 4, 16, torch.Generator().manual_seed(1))
    x2, y2 = data.sample_batch(tokens, 4, 16, torch.Generator().manual_seed(1))
    assert torch.equal(x1, x2) and x1.shape == (4, 16)
    assert torch.equal(y1, x1 + 1)  # targets are the next tokens


def test_validation_windows_fixed_and_disjoint():
    tokens = torch.arange(10_000)
    x, y = data.validation_windows(tokens, 64, 64 * 20)
    assert x.shape == (20, 64) and torch.equal(y, x + 1)
    starts = x[:, 0].tolist()
    assert starts == sorted(set(starts)) and all(b - a >= 64 for a, b in zip(starts, starts[1:]))
    assert torch.equal(data.validation_windows(tokens, 64, 64 * 20)[0], x)
    assert data.validation_windows(tokens, 64, 10**9)[0].shape[0] == (10_000 - 1) // 64  # all of a small split


def test_bits_per_char():
    d = data.TokenData(torch.zeros(100, dtype=torch.long), num_chars=400)
    assert math.isclose(data.bits_per_char(math.log(2) * 4, d), 1.0)


def test_missing_local_data_is_a_clear_error(tmp_path):
    with pytest.raises(data.DataUnavailable, match="train.txt"):
        data.get_token_data("train", "bpe512", str(tmp_path))
    with pytest.raises(ValueError, match="split='test'"):
        data.get_token_data("test", "bpe512", FIXTURE_DATA)


def test_unreachable_hub_gives_one_short_message(monkeypatch):
    import datasets

    def offline(*a, **k):
        raise ConnectionError("Couldn't reach huggingface.co")
    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.delenv("MMS_DATA_DIR", raising=False)
    with pytest.raises(data.DataUnavailable) as e:
        data.get_token_data("train", "bpe512", "")
    assert "MMS_DATA_DIR" in str(e.value) and "ConnectionError" in str(e.value)


@needs_shared_data
def test_real_tinystories_tokenizes():
    d = data.get_token_data("valid", "bpe2048", SHARED_DATA)
    assert 3.0 < 1 / d.tokens_per_char < 5.0  # BPE-2048 packs 3-5 characters per token on TinyStories
    assert (d.tokens == data.EOT_ID).sum() == 644
