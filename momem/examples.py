"""MoMeM's three training tasks as sandbox datasets (TrainConfig.dataset = momem_ner |
momem_summary | momem_response), so the shared trainer trains every module.

Each example is a decoder sequence  [EOT] question "\\n" answer [EOT]  whose targets count only
the answer and its closing EOT (the question is IGNORE_INDEX, so the loss is the answer-span
loss), plus for the encoder-decoder tasks a source text:

    momem_ner       answer = the name as written (or "<none>")       no source (decoder-only GPT)
    momem_summary   answer = the record's field asked for            source = the person's record
    momem_response  answer = the reply                               source = "Name: ...; Field: value"

Batches are padded per batch (to the longest example in it, not to max_seq_len): decoder inputs
and sources with PAD_ID, targets with IGNORE_INDEX. The data folder is TrainConfig.data_dir, or
data_cache/momem, generated with seed 0 on first use.
"""
import math
import os

import torch

import data
import tools
from config import ROOT
from momem import people, questions

DEFAULT_DIR = os.path.join(ROOT, "data_cache", "momem")
SEPARATOR = "\n"  # between the question and the answer
BUCKET_BATCHES = 16  # batches per length bucket (train_batch)
FILLER = 6  # the summarizer's noisy copies: at most this many filler words put in (SummaryExamples)


def everyday_words():
    """Whole words of everyday English: those of the BPE-2048 vocabulary (learned from
    TinyStories), three letters or more."""
    vocab = data.load_tokenizer("bpe2048").get_vocab()
    return sorted(t[1:] for t in vocab if t.startswith("Ġ") and t[1:].isalpha() and len(t) > 3)


def data_folder(data_dir=""):
    """The MoMeM data folder: data_dir if given (it must hold the generated files), else the
    default folder, generated on first use (and again when it lacks a split, as data written by
    an older version does)."""
    folder = data_dir or DEFAULT_DIR
    if not data_dir and not all(os.path.isfile(os.path.join(folder, f"examples-{split}.jsonl"))
                                for split in people.SPLITS):
        people.write(folder)
    return folder


def decoder_prompt(question):
    """What the decoder reads before it answers (generate adds the leading <|endoftext|>)."""
    return question + SEPARATOR


def response_source(name, summary):
    return f"Name: {name}; {summary}"


def encode_sources(tokenizer, texts):
    """(B, S) ids of texts, right-padded with PAD_ID (the encoder masks padding)."""
    return tools.pad_rows([tokenizer.encode(t).ids or [data.PAD_ID] for t in texts], data.PAD_ID)


class MomemTask:
    """Base of the three tasks: subclasses say which examples count (`keep`), what the answer
    and source of an example are, and may add training examples (`training_examples`)."""
    has_source = True
    try_command = 'python -m momem ask "Where does Kenji Diallo live?"'  # a run's README: the pipeline it serves

    @staticmethod
    def origin(train_cfg):
        return f"MoMeM's generated people data in {os.path.relpath(train_cfg.data_dir or DEFAULT_DIR, ROOT)}"

    def __init__(self, model_cfg, train_cfg):
        self.folder = data_folder(train_cfg.data_dir)
        self.tokenizer = data.load_tokenizer(model_cfg.tokenizer)
        self.max_len = model_cfg.max_seq_len
        self.train = self._encode(self.training_examples(people.read(self.folder, "examples", "train")))
        self._by_length = None  # training example indices sorted by length (train_batch)
        self.valid = self._encode(people.read(self.folder, "examples", "valid"))
        answers = [ex["answer_chars"] for ex in self.valid]
        self.tokens_per_char = sum(len(ex["targets"]) for ex in self.valid) / max(1, sum(answers))

    @staticmethod
    def keep(example):
        return bool(example["content"])

    @staticmethod
    def training_examples(examples):
        """What to train on, from the generated training examples."""
        return examples

    @staticmethod
    def question(example):
        """The question as this module reads it."""
        return example["question"]

    def _encode(self, examples):
        encoded = []
        for ex in filter(self.keep, examples):
            prompt = [data.EOT_ID] + self.tokenizer.encode(decoder_prompt(self.question(ex))).ids
            answer = self.tokenizer.encode(self.answer(ex)).ids + [data.EOT_ID]
            sequence = prompt + answer
            if len(sequence) - 1 > self.max_len:
                raise ValueError(f"a {type(self).__name__} example needs {len(sequence) - 1} decoder tokens, more than "
                                 f"max_seq_len={self.max_len}: {ex['question']!r}")
            item = {"tokens": sequence[:-1], "targets": answer, "answer_chars": len(self.answer(ex)) + 1}
            if self.has_source:
                item["source"] = self.tokenizer.encode(self.source(ex)).ids
                if len(item["source"]) > self.max_len:
                    raise ValueError(f"a source of {len(item['source'])} tokens exceeds max_seq_len={self.max_len}")
            encoded.append(item)
        return encoded

    def collate(self, items):
        """Dict batch padded to its longest example: tokens (B, T), targets (B, T) counting only
        the answer, source (B, S)."""
        tokens = tools.pad_rows([it["tokens"] for it in items], data.PAD_ID)
        answers = [[data.IGNORE_INDEX] * (len(it["tokens"]) - len(it["targets"])) + it["targets"] for it in items]
        batch = {"tokens": tokens, "targets": tools.pad_rows(answers, data.IGNORE_INDEX, length=tokens.shape[1])}
        if self.has_source:
            batch["source"] = tools.pad_rows([it["source"] for it in items], data.PAD_ID)
        return batch

    def describe(self):
        return f"{len(self.train)} training and {len(self.valid)} validation examples from {self.folder}"

    def train_batch(self, batch_size, generator):
        """batch_size examples of similar length, so that padding costs little: the training
        examples sorted by length are cut into buckets of BUCKET_BATCHES batches; a uniformly
        drawn example picks the bucket (each example is equally likely to be drawn), the batch
        is drawn from that bucket."""
        if self._by_length is None:
            self._by_length = sorted(range(len(self.train)), key=lambda i: len(self.train[i]["tokens"]))
        size = BUCKET_BATCHES * batch_size
        start = int(torch.randint(len(self.train), (), generator=generator)) // size * size
        bucket = self._by_length[start:start + size]
        picks = torch.randint(len(bucket), (batch_size,), generator=generator)
        return self.collate([self.train[bucket[i]] for i in picks.tolist()])

    def val_batches(self, batch_size):
        """Every validation example once, in order of length (little padding)."""
        ordered = sorted(self.valid, key=lambda ex: len(ex["tokens"]))
        for i in range(0, len(ordered), batch_size):
            yield self.collate(ordered[i:i + batch_size])

    batch_tokens = staticmethod(data.TinyStories.batch_tokens)

    def bits_per_char(self, loss_nats):
        """Bits per character of the answers (the only text that takes loss)."""
        return loss_nats * self.tokens_per_char / math.log(2)


class NERExamples(MomemTask):
    """Trains also on a noisy copy of every question about a person (questions.with_noise: the
    training questions' words put in around the name), so that the NER finds a name by its
    letters rather than by the words that happen to stand next to it in the templates."""
    has_source = False

    @staticmethod
    def training_examples(examples):
        return examples + questions.noisy_copies(examples, questions.phrasing_words(examples))

    @staticmethod
    def keep(example):
        return True

    @staticmethod
    def answer(example):
        return example["name"]


class SummaryExamples(MomemTask):
    """Reads the question with its name masked (questions.mask_name), so that the letters of a
    name never sway which field is asked. Trains also on a noisy copy of every question with up
    to FILLER words put in that do not tell the field (questions.filler_words: neutral phrasing
    words and everyday words), so that words it never saw, and where the telling words stand,
    do not sway it either."""
    @staticmethod
    def training_examples(examples):
        words = questions.filler_words(examples, everyday_words())
        return examples + questions.noisy_copies(examples, words, most=FILLER)

    @staticmethod
    def question(example):
        return questions.mask_name(example["question"], example["name"])

    @staticmethod
    def answer(example):
        return example["summary"]

    @staticmethod
    def source(example):
        return example["content"]


class ResponseExamples(MomemTask):
    @staticmethod
    def answer(example):
        return example["response"]

    @staticmethod
    def source(example):
        return response_source(example["person"], example["summary"])
