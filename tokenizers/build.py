"""Rebuild every tokenizer file in this folder from a TinyStories text folder.

    python tokenizers/build.py ../shared/data/tinystories

Writes bpe512.json, bpe1024.json, bpe2048.json, bpe4096.json (byte-level BPE), byte.json
(the 256 raw bytes) and char.json (one token per character seen in training, with byte
fallback so any Unicode text still round-trips). Every tokenizer has the same two special
tokens at the same ids: <|endoftext|> = 0 (also the separator between stories) and
<|pad|> = 1. Uses the Hugging Face `tokenizers` library; there is no hand-written BPE.
This folder deliberately has no __init__.py: it would shadow the `tokenizers` library.
"""
import os
import sys
from collections import Counter

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>"]
BPE_SIZES = (512, 1024, 2048, 4096)
HERE = os.path.dirname(os.path.abspath(__file__))


def read_stories(data_dir):
    with open(os.path.join(data_dir, "train.txt"), encoding="utf-8") as f:
        return [s.strip() for s in f.read().split("<|endoftext|>") if s.strip()]


def byte_level_bpe(stories, vocab_size):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(stories, trainer=trainer)
    return tok


def char_level(stories):
    chars = sorted(Counter(c for s in stories for c in s))
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]  # fallback for characters never seen
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS + byte_tokens + chars)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True))
    # one "word" per character keeps encoding linear and needs no merges
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens(SPECIAL_TOKENS)
    return tok


def main(data_dir):
    stories = read_stories(data_dir)
    print(f"training tokenizers on {len(stories)} stories from {data_dir}")
    builds = {f"bpe{n}": (lambda n=n: byte_level_bpe(stories, n)) for n in BPE_SIZES}
    builds["byte"] = lambda: byte_level_bpe(stories, 256 + len(SPECIAL_TOKENS))
    builds["char"] = lambda: char_level(stories)
    for name, build in builds.items():
        tok = build()
        assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1], name
        tok.save(os.path.join(HERE, f"{name}.json"))
        print(f"  {name}.json  vocab {tok.get_vocab_size()}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("MMS_DATA_DIR", "../shared/data/tinystories"))
