"""What a MoMeM module may write is fixed by its input: constrained greedy decoding.

    SpanOrNone(tokenizer, questions)   the NER writes a span of its question that starts and ends
                                       at word boundaries, or "<none>": it extracts, never invents
    OneOf(tokenizer, options)          the summarizer writes one of its record's "Label: value"
                                       entries: it chooses the field, the value is copied exactly

Each is an `allowed_next` for inference.generate: from the ids generated so far (B, step) it
builds the (B, V) mask of the ids that may come next (<|endoftext|> once the text is complete).
The model still decides everything that matters (which span, which field); the constraint only
removes outputs that could never be right.
"""
import torch

import data
from momem.people import NONE


class Constraint:
    def __init__(self, tokenizer):
        self.vocab_size = tokenizer.get_vocab_size()

    def next_ids(self, row, prefix):
        """(ids that may follow prefix in this row, whether the text may end after prefix)."""
        raise NotImplementedError

    def __call__(self, generated):
        mask = torch.zeros(len(generated), self.vocab_size, dtype=torch.bool)
        for row, ids in enumerate(generated.tolist()):
            if data.EOT_ID in ids:  # finished: its next id is padding whatever the mask says
                mask[row, data.EOT_ID] = True
                continue
            allowed, can_end = self.next_ids(row, ids)
            mask[row, sorted(allowed)] = True
            mask[row, data.EOT_ID] = can_end or not allowed
        return mask


class OneOf(Constraint):
    """Each row writes one of its own options (a list of strings per row)."""

    def __init__(self, tokenizer, options):
        super().__init__(tokenizer)
        self.options = [[tokenizer.encode(o).ids for o in row] for row in options]

    def next_ids(self, row, prefix):
        n = len(prefix)
        matching = [o for o in self.options[row] if o[:n] == prefix]
        return {o[n] for o in matching if len(o) > n}, any(len(o) == n for o in matching)


class SpanOrNone(Constraint):
    """Each row writes a span of its question from the start of a word to the end of a word
    (a letter or digit next to something that is not), or NONE."""

    def __init__(self, tokenizer, questions):
        super().__init__(tokenizer)
        self.none = OneOf(tokenizer, [[NONE]] * len(questions))
        word = {i for token, i in tokenizer.get_vocab().items() if len(token) == 1 and token.isalnum()}
        self.questions = [tokenizer.encode(q).ids for q in questions]
        self.is_word = [[i in word for i in q] for q in self.questions]
        self.starts = [[s for s in range(len(q)) if w[s] and (s == 0 or not w[s - 1])]
                       for q, w in zip(self.questions, self.is_word)]

    def next_ids(self, row, prefix):
        allowed, can_end = self.none.next_ids(row, prefix)
        q, is_word, n = self.questions[row], self.is_word[row], len(prefix)
        for s in self.starts[row]:
            if q[s:s + n] != prefix:
                continue
            end = s + n
            if end < len(q):
                allowed.add(q[end])
            if n and is_word[end - 1] and (end == len(q) or not is_word[end]):
                can_end = True
        return allowed, can_end
