"""Data: TinyStories text -> tokenizer -> cached token array -> random training windows.

A dataset (TrainConfig.dataset picks one from DATASETS) hands the trainer dict batches that it
passes on as model(**batch), fixed validation batches, the token count of a batch and the
meaning of bits per character. TinyStories (below) is the default; a dataset living in another
package registers as "package.module:Class".

Sources, in order: TrainConfig.data_dir, the environment variable MMS_DATA_DIR (a folder with
train.txt / valid.txt in the official TinyStories txt layout: stories separated by a line
holding <|endoftext|>), else `datasets.load_dataset("roneneldan/TinyStories")`.

Each split is tokenized once, batched, into data_cache/<split>-<tokenizer>-<key>.npy, where
the key hashes the text source and the tokenizer file, so a change to either rebuilds it.
Stories are packed back to back, each preceded by the <|endoftext|> id.
"""
import functools
import hashlib
import importlib
import json
import math
import os

import numpy as np
import torch
from tokenizers import Tokenizer

from config import ROOT, TOKENIZER_DIR
from metrics import IGNORE_INDEX  # noqa: F401  (targets that take no loss)

EOT_ID, PAD_ID = 0, 1  # the same in every tokenizer built by tokenizers/build.py
SEPARATOR = "<|endoftext|>"
HUB_DATASET = "roneneldan/TinyStories"
SPLIT_FILES = {"train": "train.txt", "valid": "valid.txt"}
CACHE_DIR = os.environ.get("MMS_CACHE_DIR", os.path.join(ROOT, "data_cache"))


class DataUnavailable(RuntimeError):
    pass


def load_tokenizer(name):
    """The Hugging Face Tokenizer stored as tokenizers/<name>.json."""
    path = os.path.join(TOKENIZER_DIR, f"{name}.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"tokenizer {name!r}: no file {path}; rebuild with "
                                "`python tokenizers/build.py ../shared/data/tinystories`")
    return Tokenizer.from_file(path)


def resolve_data_dir(data_dir=""):
    """The local data folder to use ('' or None means the hub), checked for its two files."""
    data_dir = data_dir or os.environ.get("MMS_DATA_DIR", "")
    if data_dir:
        data_dir = os.path.join(ROOT, data_dir) if not os.path.isabs(data_dir) else data_dir
        missing = [f for f in SPLIT_FILES.values() if not os.path.isfile(os.path.join(data_dir, f))]
        if missing:
            raise DataUnavailable(f"data_dir={data_dir!r} lacks {missing}; it must hold train.txt and valid.txt "
                                  f"(stories separated by a line '{SEPARATOR}')")
    return data_dir


def read_local_stories(path):
    with open(path, encoding="utf-8") as f:
        return [s.strip() for s in f.read().split(SEPARATOR) if s.strip()]


def load_hub_split(split):
    """The hub dataset for a split, or a DataUnavailable error saying how to go offline."""
    try:
        import datasets
        return datasets.load_dataset(HUB_DATASET, split="train" if split == "train" else "validation")
    except Exception as e:  # network, auth, missing package: all end in the same advice
        raise DataUnavailable(
            f"could not load {HUB_DATASET} from the Hugging Face hub ({type(e).__name__}: {str(e)[:200]}). "
            "Use a local copy instead: set MMS_DATA_DIR=/path/to/folder (or --data_dir) to a folder with "
            "train.txt and valid.txt in the TinyStories txt layout.") from None


class TokenData:
    """One tokenized split: `tokens` (N,) int64 tensor of packed stories, and `num_chars`, the
    characters of its text (each separator counted as one), for bits-per-character."""

    def __init__(self, tokens, num_chars):
        self.tokens, self.num_chars = tokens, num_chars

    @property
    def tokens_per_char(self):
        return len(self.tokens) / self.num_chars


def _atomic_write(path, write):
    """write(file) into a temporary file, then rename it onto path (no half-written cache)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


def get_token_data(split, tokenizer_name, data_dir=""):
    """Tokenized `split` ('train' or 'valid'), from the cache when the source and tokenizer match."""
    if split not in SPLIT_FILES:
        raise ValueError(f"split={split!r} is invalid: must be one of {list(SPLIT_FILES)}")
    data_dir = resolve_data_dir(data_dir)
    with open(os.path.join(TOKENIZER_DIR, f"{tokenizer_name}.json"), "rb") as f:
        key = hashlib.sha1(f.read())
    if data_dir:
        with open(os.path.join(data_dir, SPLIT_FILES[split]), "rb") as f:
            key.update(f.read())
    else:
        dataset = load_hub_split(split)
        key.update(f"{HUB_DATASET}:{dataset._fingerprint}".encode())
    stem = os.path.join(CACHE_DIR, f"{split}-{tokenizer_name}-{key.hexdigest()[:16]}")
    if os.path.exists(stem + ".json") and os.path.exists(stem + ".npy"):
        with open(stem + ".json") as f:
            meta = json.load(f)
        return TokenData(torch.from_numpy(np.load(stem + ".npy").astype(np.int64)), meta["num_chars"])

    stories = read_local_stories(os.path.join(data_dir, SPLIT_FILES[split])) if data_dir else dataset["text"]
    stories = [s.strip() for s in stories if s and s.strip()]
    tokenizer = load_tokenizer(tokenizer_name)
    pieces = []
    for i in range(0, len(stories), 10000):  # batched: the Rust tokenizer uses every core
        for enc in tokenizer.encode_batch(stories[i:i + 10000]):
            pieces.append([EOT_ID] + enc.ids)
    tokens = np.fromiter((t for p in pieces for t in p), dtype=np.int64, count=sum(map(len, pieces)))
    num_chars = sum(len(s) for s in stories) + len(stories)
    dtype = np.uint16 if tokenizer.get_vocab_size() <= 65536 else np.int32
    os.makedirs(CACHE_DIR, exist_ok=True)
    meta = {"num_chars": num_chars, "stories": len(stories), "tokens": len(tokens)}
    _atomic_write(stem + ".npy", lambda f: np.save(f, tokens.astype(dtype)))
    _atomic_write(stem + ".json", lambda f: f.write(json.dumps(meta).encode()))
    return TokenData(torch.from_numpy(tokens), num_chars)


def sample_batch(tokens, batch_size, seq_len, generator):
    """Random windows: x (B, seq_len) and its next-token targets y (B, seq_len), int64."""
    if len(tokens) <= seq_len + 1:
        raise ValueError(f"the corpus has {len(tokens)} tokens, too few for windows of max_seq_len={seq_len}")
    starts = torch.randint(len(tokens) - seq_len - 1, (batch_size,), generator=generator)
    window = tokens[starts[:, None] + torch.arange(seq_len + 1)]
    return window[:, :-1], window[:, 1:]


def validation_windows(tokens, seq_len, max_tokens):
    """Fixed evaluation windows: up to max_tokens // seq_len non-overlapping windows spread evenly
    over the split (all of them when the split is small). Returns x, y of shape (N, seq_len)."""
    available = (len(tokens) - 1) // seq_len
    if available < 1:
        raise ValueError(f"the validation split has {len(tokens)} tokens, too few for one window of {seq_len}")
    count = max(1, min(available, max_tokens // seq_len))
    starts = torch.linspace(0, available - 1, count).round().long() * seq_len
    window = tokens[starts[:, None] + torch.arange(seq_len + 1)]
    return window[:, :-1], window[:, 1:]


def bits_per_char(loss_nats, data):
    """Convert a per-token loss in nats to bits per character of `data`'s text."""
    return loss_nats * data.tokens_per_char / math.log(2)


class TinyStories:
    """Packed TinyStories windows. Batches are {"tokens": (B, T), "targets": (B, T)} int64, the
    targets being the next tokens; validation uses the fixed windows of `validation_windows`.
    The splits are tokenized (or read from the cache) on first use."""

    def __init__(self, model_cfg, train_cfg):
        self.tokenizer, self.seq_len = model_cfg.tokenizer, model_cfg.max_seq_len
        self.data_dir, self.eval_tokens = train_cfg.data_dir, train_cfg.eval_tokens

    @functools.cached_property
    def train_data(self):
        return get_token_data("train", self.tokenizer, self.data_dir)

    @functools.cached_property
    def valid_data(self):
        return get_token_data("valid", self.tokenizer, self.data_dir)

    @functools.cached_property
    def validation(self):
        return validation_windows(self.valid_data.tokens, self.seq_len, self.eval_tokens)

    def describe(self):
        return f"{len(self.validation[0])} validation windows of {self.seq_len} tokens"

    def train_batch(self, batch_size, generator):
        x, y = sample_batch(self.train_data.tokens, batch_size, self.seq_len, generator)
        return {"tokens": x, "targets": y}

    def val_batches(self, batch_size):
        """The fixed validation windows, batch_size at a time, always in the same order."""
        x, y = self.validation
        for i in range(0, len(x), batch_size):
            yield {"tokens": x[i:i + batch_size], "targets": y[i:i + batch_size]}

    @staticmethod
    def batch_tokens(batch):
        """Tokens a batch trains on (what the log's `tokens` column counts)."""
        return int((batch["targets"] != IGNORE_INDEX).sum())

    def bits_per_char(self, loss_nats):
        return bits_per_char(loss_nats, self.valid_data)


# TrainConfig.dataset -> "module:Class", imported on use so a dataset's package loads only when chosen
DATASETS = {
    "tinystories": "data:TinyStories",  # the default: TinyStories from a local folder or the hub
    "momem_ner": "momem.examples:NERExamples",  # MoMeM question -> person's name (momem/)
    "momem_summary": "momem.examples:SummaryExamples",  # MoMeM record + question -> the field asked for
    "momem_response": "momem.examples:ResponseExamples",  # MoMeM name + field + question -> the reply
}


def get_dataset(model_cfg, train_cfg):
    """The dataset TrainConfig.dataset names, built for these configs."""
    module, _, cls = DATASETS[train_cfg.dataset].partition(":")
    return getattr(importlib.import_module(module), cls)(model_cfg, train_cfg)
