"""Capability probes: synthetic tasks that isolate one capability, as datasets like any other
(TrainConfig.dataset = mqar | mqar_control | copying | icll), generated from the run's seed on
the fly: no data files, a fixed validation set per seed, training sequences drawn from the
checkpointed batch generator (so a resumed run sees the same stream). Only answer positions
carry targets; the log's `val_acc` is the share of them the model gets right (top-1), with its
standard error over validation sequences.

  mqar      multi-query associative recall (Zoology, Arora et al. 2023): task_pairs key-value
            pairs first (keys from the lower half of the task's ids, values from the upper half),
            then random ids among which each key comes back once, at a power-law distance
            (a = 0.01); the target after a returning key is its value.
  mqar_control  the same, except the values in the context are redrawn: the answer is not in
            the context, so no model can beat chance (1 / the number of values).
  copying   selective copying (Gu & Dao 2023, section 4.1): task_pairs data ids scattered among
            noise ids, then a separator; the targets are the data ids in order.
  icll      in-context language learning (RegBench, Akyurek et al. 2024): strings from one random
            probabilistic finite automaton per sequence (task_states states over task_symbols
            symbols), separated by a delimiter; every next-symbol prediction is scored as right
            when the automaton allows it from the state reached.

Ids: 0 (<|endoftext|>) and 1 (<|pad|>) are never used; a task draws from ids 2 .. task_vocab - 1
(task_vocab 0 = the tokenizer's vocabulary).
"""
import numpy as np
import torch

from config import IGNORE_INDEX

FIRST_ID = 2  # ids 0 and 1 are the tokenizers' <|endoftext|> and <|pad|>
VALIDATION_SEED = 0x5EED  # mixed with the run's seed: validation sequences never come from the training stream's draws


class SyntheticTask:
    """Base of the probes. Batches: {"tokens": (B, T), "targets": (B, T)} int64, IGNORE_INDEX
    except at answer positions; a task that scores otherwise than by the target keeps what it
    needs under other keys, listed in `score_keys` (the trainer takes them off before the model)."""

    score_keys = ()
    uses_fields = ("task_vocab", "task_pairs", "task_states", "task_symbols")  # TrainConfig fields it reads
    try_command = "cat {run}/log_data.csv"  # a run's README: no stories to sample; its val_acc column is the score

    def __init__(self, model_cfg, train_cfg):
        self.seq_len, self.seed = model_cfg.max_seq_len, train_cfg.seed
        self.vocab = train_cfg.task_vocab or model_cfg.vocab_size
        self.pairs, self.states, self.symbols = train_cfg.task_pairs, train_cfg.task_states, train_cfg.task_symbols
        if self.vocab > model_cfg.vocab_size:
            raise ValueError(f"task_vocab={train_cfg.task_vocab} is invalid: must be at most the tokenizer's vocabulary "
                             f"({model_cfg.vocab_size}, tokenizer={model_cfg.tokenizer!r}), or 0 for all of it")
        self.check()
        count = max(1, train_cfg.eval_tokens // self.seq_len)
        self.validation = self.make(np.random.default_rng([VALIDATION_SEED, self.seed]), count)

    @staticmethod
    def origin(train_cfg):
        return f"generated from seed {train_cfg.seed} (tasks.py)"

    def describe(self):
        return f"{len(self.validation['tokens'])} validation sequences of {self.seq_len} tokens"

    def check(self):
        """ValueError naming a setting that cannot make a sequence."""

    def make(self, rng, count):
        """A dict batch of `count` sequences drawn with the numpy generator rng."""
        raise NotImplementedError

    def train_batch(self, batch_size, generator):
        seed = int(torch.randint(2**62, (1,), generator=generator))
        batch = self.make(np.random.default_rng(seed), batch_size)
        return {k: v for k, v in batch.items() if k not in self.score_keys}

    def val_batches(self, batch_size):
        for i in range(0, len(self.validation["tokens"]), batch_size):
            yield {k: v[i:i + batch_size] for k, v in self.validation.items()}

    @staticmethod
    def batch_tokens(batch):
        return int((batch["targets"] != IGNORE_INDEX).sum())

    def bits_per_char(self, loss_nats):
        return float("nan")  # ids, not text

    def accuracy(self, logits, batch):
        """(B,) share of each sequence's answer positions whose top-1 prediction is right."""
        targets = batch["targets"]
        counted = targets != IGNORE_INDEX
        right = (logits.argmax(dim=-1) == targets) & counted
        return right.sum(dim=1) / counted.sum(dim=1).clamp_min(1)


def power_law_positions(rng, slots, count, a=0.01):
    """`count` distinct slots in 0 .. slots-1, slot i drawn with probability ~ (i + 1)^(a - 1)
    (Zoology's power law: most queries come soon after the context, some far)."""
    p = (np.arange(1, slots + 1) ** (a - 1.0))
    return rng.choice(slots, size=count, replace=False, p=p / p.sum())


class MQAR(SyntheticTask):
    shuffled_values = False  # the control: the context's values are not the answers

    def check(self):
        if self.pairs < 1 or 4 * self.pairs > self.seq_len:
            raise ValueError(f"task_pairs={self.pairs} is invalid for mqar at max_seq_len={self.seq_len}: the pairs "
                             f"(2 ids each) and their queries (2 slots each) need 4 x task_pairs <= max_seq_len")
        if (self.vocab - FIRST_ID) // 2 < self.pairs:
            raise ValueError(f"task_vocab={self.vocab} is invalid for mqar with task_pairs={self.pairs}: keys are "
                             "distinct, so the lower half of the ids must hold at least task_pairs of them")

    def make(self, rng, count):
        T, n, half = self.seq_len, self.pairs, (self.vocab - FIRST_ID) // 2
        tokens = rng.integers(FIRST_ID, self.vocab, size=(count, T))  # random ids wherever nothing is placed
        targets = np.full((count, T), IGNORE_INDEX)
        slots = (T - 2 * n) // 2  # queries sit at even offsets after the context, each followed by a random id
        for row in range(count):
            keys = rng.choice(half, size=n, replace=False) + FIRST_ID
            values = rng.integers(half, 2 * half, size=n) + FIRST_ID
            shown = rng.integers(half, 2 * half, size=n) + FIRST_ID if self.shuffled_values else values
            tokens[row, 0:2 * n:2], tokens[row, 1:2 * n:2] = keys, shown
            at = 2 * n + 2 * power_law_positions(rng, slots, n)
            tokens[row, at], targets[row, at] = keys, values
        # a random filler that equals a key would be a second query without a target: move it to the values' half
        context_keys = tokens[:, 0:2 * n:2]
        filler = targets == IGNORE_INDEX
        filler[:, :2 * n] = False
        clash = filler & (tokens[:, :, None] == context_keys[:, None, :]).any(-1)
        tokens[clash] = rng.integers(half, 2 * half, size=int(clash.sum())) + FIRST_ID
        return {"tokens": torch.from_numpy(tokens), "targets": torch.from_numpy(targets)}


class MQARControl(MQAR):
    shuffled_values = True


class SelectiveCopying(SyntheticTask):
    """task_pairs data ids (drawn from 4 .. task_vocab - 1) at random positions among noise ids (2),
    then a separator (3), then the data ids again in order: each is predicted from what came
    before it (the first from the separator)."""

    NOISE, SEPARATOR = FIRST_ID, FIRST_ID + 1

    def check(self):
        if self.pairs < 1 or 2 * self.pairs + 1 > self.seq_len:
            raise ValueError(f"task_pairs={self.pairs} is invalid for copying at max_seq_len={self.seq_len}: the data "
                             "ids, the separator and the copy need 2 x task_pairs + 1 <= max_seq_len")
        if self.vocab < FIRST_ID + 3:
            raise ValueError(f"task_vocab={self.vocab} is invalid for copying: noise, separator and data need 5 ids or more")

    def make(self, rng, count):
        T, n = self.seq_len, self.pairs
        region = T - n - 1  # data among noise; then the separator, then the copy
        tokens = np.full((count, T), self.NOISE)
        targets = np.full((count, T), IGNORE_INDEX)
        tokens[:, region] = self.SEPARATOR
        for row in range(count):
            data = rng.integers(self.SEPARATOR + 1, self.vocab, size=n)
            tokens[row, np.sort(rng.choice(region, size=n, replace=False))] = data
            tokens[row, region + 1:] = data
            targets[row, region:region + n] = data
        return {"tokens": torch.from_numpy(tokens), "targets": torch.from_numpy(targets)}


class ICLL(SyntheticTask):
    """Random probabilistic finite automata, one per sequence (RegBench): task_states states, an
    alphabet of task_symbols ids drawn per sequence; each state has 1 .. 3 outgoing symbols
    (distinct), each to a random state. Strings start at state 0, end when a step draws the end
    (probability 1/8 after the first symbol) and are followed by the delimiter (id 2)."""

    DELIMITER = FIRST_ID
    score_keys = ("allowed",)

    def check(self):
        if self.states < 1 or not 2 <= self.symbols <= self.vocab - FIRST_ID - 1:
            raise ValueError(f"task_states={self.states}, task_symbols={self.symbols} are invalid for icll: at least one "
                             f"state, and 2 .. {self.vocab - FIRST_ID - 1} symbols (the ids task_vocab allows)")

    def make(self, rng, count):
        T = self.seq_len
        tokens = np.full((count, T), self.DELIMITER)
        allowed = np.zeros((count, T, self.vocab), dtype=bool)  # allowed[t]: what may follow position t
        for row in range(count):
            alphabet = rng.choice(np.arange(FIRST_ID + 1, self.vocab), size=self.symbols, replace=False)
            edges = []  # per state: {symbol: next state}
            for _ in range(self.states):
                out = rng.choice(alphabet, size=min(self.symbols, int(rng.integers(1, 4))), replace=False)
                edges.append({int(s): int(rng.integers(self.states)) for s in out})
            t, state, length = 0, 0, 0
            while t < T:
                allowed[row, t, list(edges[state])] = True
                if length and rng.random() < 1 / 8:  # the string ends here: the delimiter is allowed too
                    allowed[row, t, self.DELIMITER] = True
                    tokens[row, t], state, length = self.DELIMITER, 0, 0
                else:
                    if length:
                        allowed[row, t, self.DELIMITER] = True
                    symbol = int(rng.choice(list(edges[state])))
                    tokens[row, t], state, length = symbol, edges[state][symbol], length + 1
                t += 1
        # position t predicts token t + 1 from what was allowed after the state reached at t
        targets = np.full((count, T), IGNORE_INDEX)
        targets[:, :-1] = tokens[:, 1:]
        shifted = np.zeros_like(allowed)
        shifted[:, :-1] = allowed[:, 1:]
        return {"tokens": torch.from_numpy(tokens), "targets": torch.from_numpy(targets),
                "allowed": torch.from_numpy(shifted)}

    def accuracy(self, logits, batch):
        """(B,) share of each sequence's predictions (top-1) that the automaton allows."""
        counted, allowed = batch["targets"] != IGNORE_INDEX, batch["allowed"].to(logits.device)
        guess = logits.argmax(dim=-1)  # an id past the task's (the model's vocabulary is larger) is never allowed
        inside = guess < allowed.shape[-1]
        ok = allowed.gather(-1, guess.clamp_max(allowed.shape[-1] - 1)[..., None]).squeeze(-1) & inside & counted
        return ok.sum(dim=1) / counted.sum(dim=1).clamp_min(1)
