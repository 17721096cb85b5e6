"""MoMeM's three training tasks as sandbox datasets (TrainConfig.dataset = momem_ner |
momem_summary | momem_response), so the shared trainer trains every module.

Each example is a decoder sequence  [EOT] question "\\n" answer [EOT]  whose targets count only
the answer and its closing EOT (the question is IGNORE_INDEX, so the loss is the answer-span
loss), plus for the encoder-decoder tasks a source text:

    momem_ner       answer = the person's name (or "<none>")         no source (decoder-only GPT)
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
from momem import people

DEFAULT_DIR = os.path.join(ROOT, "data_cache", "momem")
SEPARATOR = "\n"  # between the question and the answer


def data_folder(data_dir=""):
    """The MoMeM data folder: data_dir if given (it must hold the generated files), else the
    default folder, generated on first use."""
    folder = data_dir or DEFAULT_DIR
    if not data_dir and not os.path.isfile(os.path.join(folder, "examples-train.jsonl")):
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
    """Base of the three tasks: subclasses say which examples count (`keep`), and what the
    answer and source of an example are."""
    has_source = True

    def __init__(self, model_cfg, train_cfg):
        self.folder = data_folder(train_cfg.data_dir)
        self.tokenizer = data.load_tokenizer(model_cfg.tokenizer)
        self.max_len = model_cfg.max_seq_len
        self.train = self._encode(people.read(self.folder, "examples", "train"))
        self.valid = self._encode(people.read(self.folder, "examples", "valid"))
        answers = [ex["answer_chars"] for ex in self.valid]
        self.tokens_per_char = sum(len(ex["targets"]) for ex in self.valid) / max(1, sum(answers))

    @staticmethod
    def keep(example):
        return bool(example["content"])

    def _encode(self, examples):
        encoded = []
        for ex in filter(self.keep, examples):
            prompt = [data.EOT_ID] + self.tokenizer.encode(decoder_prompt(ex["question"])).ids
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
        picks = torch.randint(len(self.train), (batch_size,), generator=generator)
        return self.collate([self.train[i] for i in picks.tolist()])

    def val_batches(self, batch_size):
        for i in range(0, len(self.valid), batch_size):
            yield self.collate(self.valid[i:i + batch_size])

    batch_tokens = staticmethod(data.TinyStories.batch_tokens)

    def bits_per_char(self, loss_nats):
        """Bits per character of the answers (the only text that takes loss)."""
        return loss_nats * self.tokens_per_char / math.log(2)


class NERExamples(MomemTask):
    has_source = False

    @staticmethod
    def keep(example):
        return True

    @staticmethod
    def answer(example):
        return example["name"]


class SummaryExamples(MomemTask):
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
        return response_source(example["name"], example["summary"])
