"""The capability probes (tasks.py): answers where they should be on hand-checked examples,
deterministic per seed, validation apart from training, a control without the answer in the
context, the icll scorer against a hand-built automaton, accuracy and its standard error."""
import math

import numpy as np
import pytest
import torch

import metrics
import presets
from config import IGNORE_INDEX
from tasks import ICLL, MQAR, MQARControl, SelectiveCopying


def task(cls, **kw):
    settings = dict(dataset="mqar", task_vocab=64, task_pairs=4, max_seq_len=64, eval_tokens=64 * 32, seed=3)
    settings.update(kw)
    model_cfg, train_cfg = presets.get_preset("tiny", **settings)
    return cls(model_cfg, train_cfg)


def test_mqar_answers_are_the_values_of_the_keys_asked():
    batch = task(MQAR).validation
    for tokens, targets in zip(batch["tokens"].tolist(), batch["targets"].tolist()):
        pairs = dict(zip(tokens[0:8:2], tokens[1:8:2]))
        asked = [(t, target) for t, target in zip(tokens, targets) if target != IGNORE_INDEX]
        assert len(pairs) == 4 and sorted(k for k, _ in asked) == sorted(pairs)  # each key asked once
        assert all(pairs[key] == value for key, value in asked)
        assert all(2 <= k < 33 for k in pairs) and all(33 <= v < 64 for v in pairs.values())  # disjoint halves
        queries = [t for t in tokens[8:] if t in pairs]
        assert len(queries) == 4  # no filler repeats a key


def test_mqar_control_keeps_the_answers_out_of_the_context():
    batch = task(MQARControl).validation
    found = total = 0
    for tokens, targets in zip(batch["tokens"].tolist(), batch["targets"].tolist()):
        context = dict(zip(tokens[0:8:2], tokens[1:8:2]))
        for key, target in zip(tokens, targets):
            if target != IGNORE_INDEX:
                found, total = found + (context[key] == target), total + 1
    assert found / total < 0.1  # only where the redrawn value happens to equal the answer (1 in 31)


def test_tasks_are_deterministic_per_seed_and_validation_is_not_in_training():
    a, b, c = task(MQAR), task(MQAR), task(MQAR, seed=4)
    assert torch.equal(a.validation["tokens"], b.validation["tokens"])
    assert not torch.equal(a.validation["tokens"], c.validation["tokens"])
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(a.train_batch(8, g1)["tokens"], a.train_batch(8, g2)["tokens"])
    seen = {tuple(row) for row in a.validation["tokens"].tolist()}
    for _ in range(50):
        assert not any(tuple(row) in seen for row in a.train_batch(16, g1)["tokens"].tolist())


def test_copying_targets_are_the_data_in_order():
    batch = task(SelectiveCopying, dataset="copying", task_vocab=20, max_seq_len=24).validation
    for tokens, targets in zip(batch["tokens"].tolist(), batch["targets"].tolist()):
        data = [t for t in tokens[:24 - 4 - 1] if t != SelectiveCopying.NOISE]
        assert tokens[19] == SelectiveCopying.SEPARATOR and len(data) == 4
        assert [t for t in targets if t != IGNORE_INDEX] == data == tokens[20:]


def test_icll_sequences_follow_their_automaton():
    batch = task(ICLL, dataset="icll", task_vocab=24, task_states=4, task_symbols=6, max_seq_len=48).validation
    tokens, allowed, targets = batch["tokens"], batch["allowed"], batch["targets"]
    next_ok = allowed[:, :-1].gather(-1, tokens[:, 1:, None]).squeeze(-1)  # every next token was allowed
    assert next_ok.all() and (targets[:, :-1] == tokens[:, 1:]).all() and (targets[:, -1] == IGNORE_INDEX).all()
    assert (allowed.sum(-1)[:, :-1] >= 1).all()


def test_icll_scorer_accepts_exactly_what_a_hand_built_automaton_allows():
    icll = task(ICLL, dataset="icll", task_vocab=8, task_states=2, task_symbols=2, max_seq_len=16)
    # automaton over {3, 4}: state 0 --3--> 1, state 1 --4--> 0 (or end: delimiter 2); the string 3 4 3
    allowed = torch.zeros(1, 4, 8, dtype=torch.bool)
    allowed[0, 0, [2, 4]] = True  # after "3" (state 1): 4, or the end
    allowed[0, 1, [2, 3]] = True  # after "3 4" (state 0): 3, or the end
    allowed[0, 2, [2, 4]] = True
    targets = torch.tensor([[4, 3, 2, IGNORE_INDEX]])
    guesses = torch.tensor([[4, 4, 2, 0]])  # right, wrong, right; the last is not counted
    logits = torch.nn.functional.one_hot(guesses, 10).float()  # a model vocabulary larger than the task's
    assert icll.accuracy(logits, {"targets": targets, "allowed": allowed}).tolist() == [pytest.approx(2 / 3)]
    logits = torch.nn.functional.one_hot(torch.tensor([[9, 9, 9, 9]]), 10).float()  # ids past the task's
    assert icll.accuracy(logits, {"targets": targets, "allowed": allowed}).tolist() == [0.0]


def test_accuracy_and_its_standard_error_on_hand_made_logits():
    mqar = task(MQAR)
    targets = torch.full((3, 5), IGNORE_INDEX)
    targets[:, 1], targets[:, 3] = 7, 9
    guesses = torch.tensor([[0, 7, 0, 9, 0], [0, 7, 0, 1, 0], [0, 1, 0, 1, 0]])
    acc = mqar.accuracy(torch.nn.functional.one_hot(guesses, 12).float(), {"targets": targets})
    assert acc.tolist() == [1.0, 0.5, 0.0]
    mean, se = metrics.mean_and_se(acc)
    assert mean == pytest.approx(0.5) and se == pytest.approx(0.5 / math.sqrt(3))


@pytest.mark.parametrize("kw, match", [
    (dict(task_pairs=20), "task_pairs=20 is invalid for mqar"),
    (dict(task_vocab=10, task_pairs=6), "task_vocab=10 is invalid for mqar"),
    (dict(task_vocab=600), "task_vocab=600 is invalid: must be at most the tokenizer's vocabulary"),
])
def test_impossible_settings_are_named(kw, match):
    with pytest.raises(ValueError, match=match):
        task(MQAR, **kw)


def test_training_logs_accuracy_and_its_standard_error(tmp_path):
    import train
    from conftest import tiny_configs
    model_cfg, train_cfg = tiny_configs(dataset="mqar", task_vocab=64, task_pairs=4, max_steps=4, eval_interval=2,
                                        eval_tokens=64 * 16, out_dir=str(tmp_path), data_dir="")
    run = train.train(model_cfg, train_cfg, progress=False)
    import runs
    log = runs.read_log(run)
    assert {"val_acc", "val_acc_se"} <= set(log.columns) and 0 <= log["val_acc"].iloc[-1] <= 1
    assert np.isnan(log["val_bpc"].iloc[-1])  # ids, not text
