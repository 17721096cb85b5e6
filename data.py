"""Data: TinyStories text -> tokenizer -> cached token array -> random training windows.

A dataset (TrainConfig.dataset picks one from DATASETS) hands the trainer dict batches that it
passes on as model(**batch), fixed validation batches, the token count of a batch and the
meaning of bits per character. TinyStories (below) is the default; a dataset living in another
package registers as "package.module:Class".

Sources, in order: TrainConfig.data_dir, the environment variable MMS_DATA_DIR (a folder with
train.txt / valid.txt in the official TinyStories txt layout: stories separated by a line
holding <|endoftext|>), else `datasets.load_dataset("roneneldan/TinyStories")`.

Each split is tokenized once, streamed: the text is read in chunks, encoded a batch of stories
at a time (the hub's by `datasets.map(batched=True, num_proc=...)`, then written shard by shard,
as nanoGPT's prepare.py does) and appended to data_cache/<split>-<tokenizer>-<key>.bin: raw
uint16 token ids, read back as a read-only np.memmap. Memory stays bounded by one chunk whatever
the corpus size, and training widens only each batch to int64. The key hashes the text source
and the tokenizer file, so a change to either rebuilds it. Stories are packed back to back,
each preceded by the <|endoftext|> id.
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
from tqdm.auto import tqdm

import tools
from config import EOT_ID, IGNORE_INDEX, PAD_ID, ROOT, TOKENIZER_DIR  # noqa: F401  (the token ids, here for data users)

SEPARATOR = "<|endoftext|>"
HUB_DATASET = "roneneldan/TinyStories"
CHUNK_CHARS = 1 << 24      # characters of a local split read at a time while preparing it
STORIES_PER_BATCH = 4096   # stories per encode_batch call (the Rust tokenizer uses every core)
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
            raise DataUnavailable(f"data_dir={data_dir!r} lacks {missing}: pass --data_dir (or set MMS_DATA_DIR) to a "
                                  f"folder holding train.txt and valid.txt (stories separated by a line '{SEPARATOR}')")
    return data_dir


def read_local_stories(path):
    """Every story of a local split, in memory (for small splits; preparation streams instead)."""
    return list(iter_local_stories(path))


def iter_local_stories(path, chunk_chars=None, progress=None):
    """The stripped, non-empty stories of a TinyStories txt file, read chunk_chars at a time;
    `progress` (a tqdm bar counting bytes), when given, is advanced as the file is read."""
    carry = ""
    with open(path, encoding="utf-8") as f:
        while True:
            try:
                chunk = f.read(chunk_chars or CHUNK_CHARS)
            except UnicodeDecodeError as e:
                raise ValueError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start} of a chunk read "
                                 f"near byte {f.buffer.tell():,}); convert it to UTF-8") from None
            if progress is not None:
                progress.update(len(chunk.encode("utf-8")))
            parts = (carry + chunk).split(SEPARATOR)
            carry = parts.pop() if chunk else ""  # the tail may be a story (or a separator) cut in two
            yield from (p.strip() for p in parts if p.strip())
            if not chunk:
                return


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
    """One tokenized split: `tokens`, a 1-D array of packed stories (a read-only np.memmap of
    uint16 when it comes from the cache; a tensor works too), and `num_chars`, the characters
    of its text (each separator counted as one), for bits-per-character."""

    def __init__(self, tokens, num_chars):
        self.tokens, self.num_chars = tokens, num_chars

    @property
    def tokens_per_char(self):
        return len(self.tokens) / self.num_chars


def _write_file(path, write):
    with open(path, "wb") as f:
        write(f)


def _hash_file(key, path, block=1 << 24):
    with open(path, "rb") as f:
        while data := f.read(block):
            key.update(data)


def _token_dtype(tokenizer):
    return np.uint16 if tokenizer.get_vocab_size() <= 65536 else np.int32


def _write_local(out, path, tokenizer, chunk_chars=None):
    """Stream a local split into the open binary file `out`; returns (tokens, stories, chars)."""
    dtype, counts = _token_dtype(tokenizer), [0, 0, 0]
    with tqdm(total=os.path.getsize(path), unit="B", unit_scale=True, delay=2, leave=False,
              desc=f"tokenizing {os.path.basename(path)}") as bar:
        stories = iter_local_stories(path, chunk_chars, bar)
        while batch := [story for _, story in zip(range(STORIES_PER_BATCH), stories)]:
            ids = [[EOT_ID] + enc.ids for enc in tokenizer.encode_batch(batch)]
            array = np.fromiter((t for piece in ids for t in piece), dtype=dtype, count=sum(map(len, ids)))
            array.tofile(out)
            counts[0] += len(array)
            counts[1] += len(batch)
            counts[2] += sum(map(len, batch)) + len(batch)
    return tuple(counts)


def _write_hub(out, dataset, tokenizer, num_proc=None):
    """Tokenize a `datasets.Dataset` with a batched (multi-process on a large split) map, whose
    results datasets keeps on disk, then write them into the open binary file `out` shard by
    shard; returns (tokens, stories, chars)."""
    def encode(batch):
        texts = [(t or "").strip() for t in batch["text"]]
        ids = [[EOT_ID] + e.ids if t else [] for t, e in zip(texts, tokenizer.encode_batch(texts))]
        return {"ids": ids, "length": [len(i) for i in ids], "chars": [len(t) + 1 if t else 0 for t in texts]}
    if num_proc is None:
        num_proc = max(1, min(os.cpu_count() or 1, len(dataset) // 100_000))
    encoded = dataset.map(encode, batched=True, batch_size=STORIES_PER_BATCH, remove_columns=dataset.column_names,
                          num_proc=num_proc if num_proc > 1 else None, desc="tokenizing")
    dtype, shards = _token_dtype(tokenizer), max(1, len(encoded) // STORIES_PER_BATCH)
    for i in tqdm(range(shards), desc="writing tokens", delay=2, leave=False):
        shard = encoded.shard(shards, i, contiguous=True).with_format("numpy")
        np.concatenate([np.zeros(0, dtype), *shard["ids"]]).astype(dtype).tofile(out)
    lengths, chars = np.asarray(encoded["length"]), np.asarray(encoded["chars"])
    return int(lengths.sum()), int((lengths > 0).sum()), int(chars.sum())


def get_token_data(split, tokenizer_name, data_dir=""):
    """Tokenized `split` ('train' or 'valid'), prepared once (streamed) and memory-mapped from the
    cache afterwards; the cache is reused while the source text and the tokenizer are unchanged."""
    if split not in SPLIT_FILES:
        raise ValueError(f"split={split!r} is invalid: must be one of {list(SPLIT_FILES)}")
    data_dir = resolve_data_dir(data_dir)
    tokenizer = load_tokenizer(tokenizer_name)
    key = hashlib.sha1()
    _hash_file(key, os.path.join(TOKENIZER_DIR, f"{tokenizer_name}.json"))
    if data_dir:
        source = os.path.join(data_dir, SPLIT_FILES[split])
        _hash_file(key, source)
    else:
        source = load_hub_split(split)
        key.update(f"{HUB_DATASET}:{source._fingerprint}".encode())
    stem = os.path.join(CACHE_DIR, f"{split}-{tokenizer_name}-{key.hexdigest()[:16]}")
    if not (os.path.exists(stem + ".json") and os.path.exists(stem + ".bin")):
        os.makedirs(CACHE_DIR, exist_ok=True)
        write, counts = (_write_local if data_dir else _write_hub), []
        tools.atomic_save(lambda p: _write_file(p, lambda f: counts.extend(write(f, source, tokenizer))), stem + ".bin")
        meta = dict(zip(("tokens", "stories", "num_chars"), counts), dtype=np.dtype(_token_dtype(tokenizer)).name)
        tools.atomic_save(lambda p: _write_file(p, lambda f: f.write(json.dumps(meta).encode())), stem + ".json")
    with open(stem + ".json") as f:
        meta = json.load(f)
    if meta["tokens"] == 0:
        raise ValueError(f"the {split} split ({source if data_dir else HUB_DATASET}) holds no stories")
    return TokenData(np.memmap(stem + ".bin", dtype=meta["dtype"], mode="r"), meta["num_chars"])


def gather_windows(tokens, starts, length):
    """tokens[s:s + length] for each start s, as one (len(starts), length) int64 tensor; from a
    memmap only these windows are read and widened."""
    index = starts[:, None] + torch.arange(length)
    if isinstance(tokens, np.ndarray):
        return torch.from_numpy(tokens[index.numpy()].astype(np.int64))
    return tokens[index].long()


def sample_batch(tokens, batch_size, seq_len, generator):
    """Random windows: x (B, seq_len) and its next-token targets y (B, seq_len), int64."""
    if len(tokens) <= seq_len + 1:
        raise ValueError(f"the corpus has {len(tokens)} tokens, too few for windows of max_seq_len={seq_len}")
    starts = torch.randint(len(tokens) - seq_len - 1, (batch_size,), generator=generator)
    window = gather_windows(tokens, starts, seq_len + 1)
    return window[:, :-1], window[:, 1:]


def validation_windows(tokens, seq_len, max_tokens):
    """Fixed evaluation windows: up to max_tokens // seq_len non-overlapping windows spread evenly
    over the split (all of them when the split is small). Returns x, y of shape (N, seq_len)."""
    available = (len(tokens) - 1) // seq_len
    if available < 1:
        raise ValueError(f"the validation split has {len(tokens)} tokens, too few for one window of {seq_len}")
    count = max(1, min(available, max_tokens // seq_len))
    starts = torch.linspace(0, available - 1, count).round().long() * seq_len
    window = gather_windows(tokens, starts, seq_len + 1)
    return window[:, :-1], window[:, 1:]


def bits_per_char(loss_nats, data):
    """Convert a per-token loss in nats to bits per character of `data`'s text."""
    return loss_nats * data.tokens_per_char / math.log(2)


class TinyStories:
    """Packed TinyStories windows. Batches are {"tokens": (B, T), "targets": (B, T)} int64, the
    targets being the next tokens; validation uses the fixed windows of `validation_windows`.
    The splits are tokenized (or read from the cache) on first use."""

    data_dir_env = "MMS_DATA_DIR"  # used for a run folder whose stored data_dir is not on this machine (runs.load_configs)
    try_command = 'python inference.py --model {run} --prompt "Once upon a time"'  # a run's README: try the model

    @staticmethod
    def origin(train_cfg):
        """Where the text comes from (a run's README)."""
        return train_cfg.data_dir or os.environ.get(TinyStories.data_dir_env) or f"the Hugging Face hub ({HUB_DATASET})"

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
        """Reads both splits (so a fault in either shows before training starts) and says what is used."""
        data_dir = resolve_data_dir(self.data_dir)
        for split, split_data in (("train", self.train_data), ("valid", self.valid_data)):
            if len(split_data.tokens) <= self.seq_len + 1:
                source = os.path.join(data_dir, SPLIT_FILES[split]) if data_dir else f"{HUB_DATASET} ({split})"
                raise ValueError(f"{source} has {len(split_data.tokens)} tokens, too few for one window of "
                                 f"max_seq_len={self.seq_len} (+1); use more text or a shorter max_seq_len")
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


# TrainConfig.dataset -> "module:Class", imported on use so a dataset's package loads only when chosen;
# an application package adds its own when it is imported (register_dataset)
DATASETS = {
    "tinystories": "data:TinyStories",  # the default: TinyStories from a local folder or the hub
    "mqar": "tasks:MQAR",  # capability probe: multi-query associative recall (Zoology)
    "mqar_control": "tasks:MQARControl",  # its control: the answers are not in the context (chance)
    "copying": "tasks:SelectiveCopying",  # capability probe: selective copying (Mamba, section 4.1)
    "icll": "tasks:ICLL",  # capability probe: in-context language learning (RegBench)
}


def register_dataset(name, path):
    """Offer the dataset class at path ("package.module:Class") as TrainConfig.dataset=name."""
    if DATASETS.get(name, path) != path:
        raise ValueError(f"dataset name {name!r} is taken by {DATASETS[name]}")
    DATASETS[name] = path


def dataset_class(name):
    """The class TrainConfig.dataset names: a key of DATASETS, or "package.module:Class"."""
    path = DATASETS.get(name, name)
    module, _, cls = path.partition(":")
    if not cls:
        raise ValueError(f"dataset={name!r} is invalid: must be one of {list(DATASETS)} or 'package.module:Class' "
                         "(an application's datasets are offered once its package is imported, e.g. by its command)")
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"dataset={name!r} is invalid: {path} cannot be imported ({e})") from None


def get_dataset(model_cfg, train_cfg):
    """The dataset TrainConfig.dataset names, built for these configs."""
    return dataset_class(train_cfg.dataset)(model_cfg, train_cfg)
