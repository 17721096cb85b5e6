import math
import os
import random
import re

import pytest
import torch

import config
import presets
import data
import train
from conftest import assert_cache_matches_full, random_token_heldout_loss, cli_error
from modules import build_model
from momem import people, questions
from momem.constrained import OneOf, SpanOrNone
from momem.examples import NERExamples, ResponseExamples, SummaryExamples, encode_sources
from momem.store import MemoryStore

SMALL = {"train": 40, "valid": 5, "test": 6, "ood": 6, "paraphrase": 6, "unknown": 4}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return people.write(str(tmp_path_factory.mktemp("momem")), seed=3, sizes=SMALL)


def test_generator_is_seeded_and_splits_are_disjoint():
    a, b = people.generate(seed=5, sizes=SMALL), people.generate(seed=5, sizes=SMALL)
    assert a == b and a != people.generate(seed=6, sizes=SMALL)
    names = [p["name"] for split in a.values() for p in split[0]]
    assert len(names) == len(set(names))  # nobody appears in two splits
    pools = people._pools(5)
    for category in people.CATEGORIES:  # ood values come from pools never used in training
        train_values = {p[category] for p in a["train"][0]}
        assert train_values <= set(pools[category][0])
        assert not {p[category] for p in a["ood"][0]} & set(pools[category][0])
    for split, (persons, examples) in a.items():
        for p in persons:
            assert all(p[c] and ";" not in p[c] and len(p[c]) <= 22 for c in people.CATEGORIES)
            assert 60 <= len(people.content(p)) <= 150
        for ex in examples:
            assert len(ex["question"]) <= questions.MAX_CHARS
            if ex["content"]:
                assert ex["value"] in ex["response"] and ex["summary"] in ex["content"] and ex["name"] in ex["question"]
                assert ex["name"].lower() == ex["person"].lower() and ex["person"] in ex["response"]
                assert bool(ex["held_out"]) == (split == "paraphrase") and ex["held_out"] in ("", *questions.PARTS)
            else:
                assert ex["name"] == people.NONE


def held_out_patterns():
    """A regex per held-out part of questions.py (a template's placeholders match anything;
    templates that start with one are too loose to look for)."""
    parts = [*[h for _, h in questions.NOUNS.values()], questions.NOUN_BODIES[1],
             *[h for _, h in questions.VERB_BODIES.values()], *[h for _, h in questions.CLAUSES.values()],
             questions.ASKERS[1], questions.OPENERS[1], questions.SUFFIXES[1]]
    for template in (t for family in parts for t in family):
        if template.strip() != "uni" and not template.startswith("{"):
            literal = [re.escape(piece) for piece in re.split(r"\{\w+\}", template.strip().rstrip("?.").lower())]
            yield template, re.compile(".+".join(literal))


def test_held_out_families_never_reach_training():
    """No question of train, valid, test or ood uses a held-out synonym, opener, asker, suffix,
    construction or clause; the paraphrase split uses them (and only they can produce it)."""
    generated = people.generate(seed=1, sizes={"train": 600, "paraphrase": 200})
    patterns = list(held_out_patterns())
    for split in ("train", "valid", "test", "ood"):
        for ex in generated[split][1]:
            hits = [t for t, p in patterns if p.search(ex["question"].lower())]
            assert not hits, (split, ex["question"], hits)
    paraphrase = [ex for ex in generated["paraphrase"][1] if ex["content"]]
    found = sum(any(p.search(ex["question"].lower()) for _, p in patterns) for ex in paraphrase)
    assert found > 0.6 * len(paraphrase)  # the rest use a held-out noun construction or "uni"
    lower = sum(ex["name"] == ex["person"].lower() for ex in generated["train"][1] if ex["content"])
    assert 0.1 < lower / len(generated["train"][1]) < 0.35  # names typed in lower case are in training


def test_noisy_ner_questions_keep_the_name_and_add_only_given_words():
    rng = random.Random(0)
    for question, name in (("What is Bruno Cruz's job?", "Bruno Cruz"), ("bruno cruz job?", "bruno cruz"),
                           ("Where does Kenji Diallo live?", "Kenji Diallo")):
        for _ in range(20):
            noisy = questions.with_noise(question, name, ["film", "so"], rng)
            added = [w.lower() for w in noisy.replace(name, " ").split() if w not in question.replace(name, " ").split()]
            assert name in noisy and 1 <= len(added) <= 3 and set(added) <= {"film", "so"}, noisy
            assert noisy.replace(name, "").count("'s") == question.replace(name, "").count("'s")  # "'s" stays on the name


def test_neutral_words_are_those_spread_over_the_fields():
    fields = {"job": "work", "city": "town", "movie": "film", "song": "tune", "hobby": "pastime", "uni": "college"}
    examples = [{"question": f"Please tell me {name}'s {word}?", "name": name, "category": category}
                for category, word in fields.items() for name in ("Ada Vance", "bruno cruz") * 15]
    examples += [{"question": "So, where does Ada Vance live?", "name": "Ada Vance", "category": "city"}] * 30
    assert questions.neutral_words(examples) == ["'s", "me", "please", "tell"]  # "so": only ever in a city question
    assert set(questions.phrasing_words(examples)) == {"'s", "me", "please", "tell", "so", "where", "does", "live",
                                                       *fields.values()}
    # everyday words join them, except phrasing words that tell a field and words of held-out parts
    assert questions.filler_words(examples, ["Sister", "table", "film", "so", "Cheers"]) == \
        ["'s", "me", "please", "table", "tell"]


def test_constraints_only_allow_spans_and_options():
    tok = data.load_tokenizer("char")

    def allowed(constraint, texts):
        generated = torch.tensor([tok.encode(t).ids for t in texts]) if texts[0] else torch.zeros(len(texts), 0,
                                                                                                 dtype=torch.long)
        mask = constraint(generated)
        return [{"EOT" if i == data.EOT_ID else tok.decode([i]) for i in row.nonzero().flatten().tolist()} for row in mask]

    spans = SpanOrNone(tok, ["What is bruno cruz's job?", "Tell me a joke."])
    assert allowed(spans, ["", ""]) == [set("Wibcjs") | {"<"}, set("Tmaj") | {"<"}]  # word starts, or <none>
    assert allowed(spans, ["bruno", "Tell "]) == [{" ", "EOT"}, {"m"}]  # a word ends: stop or go on; a space: go on
    assert allowed(spans, ["brun", "Tell"]) == [{"o"}, {" ", "EOT"}]  # never stop inside a word
    assert allowed(spans, ["bruno cruz", "Tell me a "]) == [{"'", "EOT"}, {"j"}]
    assert allowed(spans, ["<none>", "<none>"]) == [{"EOT"}, {"EOT"}]
    options = OneOf(tok, [["Job: baker", "Uni: Lyon College"], ["City: Lyon"]])
    assert allowed(options, ["", ""]) == [{"J", "U"}, {"C"}]
    assert allowed(options, ["Job: baker", "City: Lyon"]) == [{"EOT"}, {"EOT"}]


def test_nearby_spans_are_word_bounded_nearest_first():
    from momem.pipeline import nearby_spans
    question = "Can you tell me faith nguyen's alma mater?"
    spans = nearby_spans(question, "nguyen's alma")  # the NER one word too far right
    assert "faith nguyen" in spans and "nguyen's alma" not in spans and len(spans) == len(set(spans))
    assert spans[0] in {"faith nguyen's alma", "nguyen's", "nguyen's alma mater", "s alma"}  # one word off
    assert all(re.search(rf"(?<!\w){re.escape(s)}(?!\w)", question) for s in spans)
    assert nearby_spans(question, "guyen") == nearby_spans(question, "Kofi") == []  # not a span of it


def test_store_crud_fuzzy_and_injection():
    store = MemoryStore()
    person = people.make_person(__import__("random").Random(0), people._pools(0))
    store.add(person)
    assert store.find(person["name"])[1] == "exact" and store.find(person["name"].upper())[1] == "exact"
    for near in (person["name"][:-1], person["name"][:-1].lower()):  # a character dropped, as a wrong NER output
        record, how = store.find(near)
        assert how == "fuzzy" and record["name"] == person["name"]
    assert store.find(near, fuzzy=False) == (None, None)
    assert store.find("Nobody Atall") == (None, None)
    # several spellings, likeliest first: an exact one wins over an earlier fuzzy one; else the best fuzzy one
    assert store.find_any(["Nobody Atall", near, person["name"]]) == (store.get(person["name"]), "exact")
    assert store.find_any(["Nobody Atall", near]) == (store.get(person["name"]), "fuzzy")
    assert store.find_any(["Nobody Atall", "does " + person["first"], ""]) == (None, None)
    hostile = "x' OR '1'='1'; DROP TABLE people; --"
    assert store.find(hostile) == (None, None) and len(store) == 1
    store.update(person["name"], movie="The Quiet River")
    assert store.get(person["name"])["movie"] == "The Quiet River"
    with pytest.raises(ValueError, match="already in the store"):
        store.add(person)
    with pytest.raises(ValueError, match="contain ';'"):
        store.update(person["name"], city="Paris; Lyon")
    with pytest.raises(ValueError, match="lacks"):
        store.add({**person, "name": "New Person", "job": ""})
    store.delete(person["name"])
    assert store.get(person["name"]) is None and len(store) == 0
    with pytest.raises(KeyError, match="unknown person"):
        store.delete(person["name"])


def encdec_cfg(**kw):
    base = dict(model_type="encdec", tokenizer="char", dim=32, num_layers=2, encoder_layers=2, num_q_heads=2,
                num_kv_heads=1, head_dim=16, max_seq_len=48)
    return config.ModelConfig(**{**base, **kw})


class WithSource(torch.nn.Module):
    """An encoder-decoder seen as a plain language model over a fixed random source."""

    def __init__(self, model, batch):
        super().__init__()
        self.model, self.cfg = model, model.cfg
        self.source = torch.randint(2, model.cfg.vocab_size, (batch, 11))
        self.source[0, 8:] = data.PAD_ID

    def forward(self, tokens, targets=None, cache=None):
        return self.model(tokens, targets, cache, source=self.source[:len(tokens)])

    def new_cache(self, batch_size, pad=None):
        return self.model.new_cache(batch_size, pad, source=self.source[:batch_size])


@pytest.mark.parametrize("copy", [True, False])
def test_encoder_decoder_causal_cache_and_padding(copy):
    from conftest import assert_causal
    model = build_model(encdec_cfg(encdec_copy=copy)).eval()
    wrapped = WithSource(model, 2)
    assert_causal(wrapped, 300, length=30)
    assert_cache_matches_full(wrapped, 300, length=16)
    x = torch.randint(2, 300, (2, 12))
    logits = wrapped(x)[0]
    if copy:  # the copy head returns log-probabilities of the mixed distribution
        assert torch.allclose(logits.exp().sum(-1), torch.ones(2, 12), atol=1e-5)
    # padding never leaks: more padding, or other ids hidden behind the mask, change nothing
    longer = torch.cat([wrapped.source[:2], torch.full((2, 6), data.PAD_ID)], dim=1)
    torch.testing.assert_close(model(x, source=longer)[0], logits, atol=1e-5, rtol=0)
    # the encoder reads the source: another source changes the answer
    assert not torch.allclose(model(x, source=torch.randint(2, 300, (2, 11)))[0], logits)


def test_encoder_decoder_leak_detector():
    model = WithSource(build_model(encdec_cfg(max_seq_len=32)), 64)
    held_out = random_token_heldout_loss(model, 343)
    assert held_out >= math.log(343) - 0.05, held_out


def marker_task(batch, generator):
    """Source: random ids with a marker (2) somewhere; the answer is the id right after it."""
    source = torch.randint(10, 300, (batch, 8), generator=generator)
    where = torch.randint(0, 7, (batch,), generator=generator)
    source[torch.arange(batch), where] = 2
    return source, source[torch.arange(batch), where + 1][:, None]


@pytest.mark.parametrize("copy", [True, False])
def test_encoder_decoder_learns_to_copy_from_the_source(copy):
    torch.manual_seed(0)
    model = build_model(encdec_cfg(encdec_copy=copy))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        source, answer = marker_task(32, g)
        loss = model(torch.zeros(32, 1, dtype=torch.long), answer, source=source)[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
    source, answer = marker_task(256, torch.Generator().manual_seed(1))
    predicted = model(torch.zeros(256, 1, dtype=torch.long), source=source)[0][:, 0].argmax(-1)
    accuracy = (predicted == answer[:, 0]).float().mean().item()
    print(f"copy={copy}: accuracy {accuracy:.3f}")
    if copy:
        assert accuracy > 0.9


def test_datasets_count_only_the_answer(folder):
    model_cfg, train_cfg = presets.get_preset("momem_summary", data_dir=folder, device="cpu")
    task = SummaryExamples(model_cfg, train_cfg)
    batch = task.collate(task.valid[:3])
    tok = data.load_tokenizer("char")
    examples = [ex for ex in people.read(folder, "examples", "valid") if ex["content"]][:3]
    for row, ex in enumerate(examples):
        counted = batch["targets"][row][batch["targets"][row] != data.IGNORE_INDEX].tolist()
        assert counted == tok.encode(ex["summary"]).ids + [data.EOT_ID]  # the answer span and its end
        assert tok.decode([i for i in batch["source"][row].tolist() if i != data.PAD_ID]) == ex["content"]
        read = tok.decode(task.valid[row]["tokens"][1:])  # after the leading EOT: what the decoder reads
        assert read.startswith(ex["question"].replace(ex["name"], questions.NAME_MASK) + "\n") and ex["name"] not in read
        n = len(task.valid[row]["tokens"])
        assert (batch["tokens"][row, n:] == data.PAD_ID).all()
    assert task.batch_tokens(batch) == sum(len(ex["summary"]) + 1 for ex in examples)
    ner = NERExamples(*presets.get_preset("momem_ner", data_dir=folder))
    assert "source" not in ner.collate(ner.valid[:2]) and len(ner.valid) == len(people.read(folder, "examples", "valid"))
    with pytest.raises(ValueError, match="max_seq_len=20"):
        ResponseExamples(*presets.get_preset("momem_response", data_dir=folder, max_seq_len=20))


@pytest.fixture(scope="module")
def tiny_modules(folder, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("trained"))
    for name in ("momem_ner", "momem_summary", "momem_response"):
        encoder = {} if name == "momem_ner" else {"encoder_layers": 1}  # the NER model has no encoder
        model_cfg, train_cfg = presets.get_preset(name, name=name, data_dir=folder, out_dir=out, dim=32, num_layers=1,
                                                 **encoder, num_q_heads=2, num_kv_heads=2, head_dim=16,
                                                 max_steps=6, eval_interval=3, checkpoint_interval=3, batch_size=8,
                                                 device="cpu", autocast="off")
        readme = open(os.path.join(train.train(model_cfg, train_cfg, progress=False), "README.md")).read()
        assert "`momem_" in readme and "MoMeM's generated people data in" in readme and "python -m momem ask" in readme
    return out


def test_pipeline_end_to_end(folder, tiny_modules, tmp_path, monkeypatch):
    from momem import pipeline as mp
    store = mp.open_store(str(tmp_path / "memory.sqlite"), folder)
    assert len(store) == sum(SMALL[split] for split in people.IN_MEMORY)
    pipe = mp.Pipeline(store=store, run_dir=tiny_modules, device="cpu")
    answer = pipe.ask("What is Zoë Ōtieno's favourite movie?")  # non-ASCII reads fine (byte fallback)
    assert isinstance(answer.answer, str) and answer.answer
    pipe.ask("x " * (questions.MAX_CHARS // 2))  # as long as a question may be
    for bad, match in (("", "ask about a person"), ("x" * (questions.MAX_CHARS + 1), "at most"), ("a\nb", "one line"),
                       (None, "invalid")):
        with pytest.raises(ValueError, match=match):
            pipe.ask(bad)
    # with a perfect NER the chain reaches the store; a stranger is "unknown", a question about nobody says so
    test_people = people.read(folder, "people", "test")
    stranger = people.read(folder, "people", "unknown")[0]["name"]
    first, last = test_people[1]["first"], test_people[1]["last"]
    names = iter([test_people[0]["name"], stranger, people.NONE, f"{last}'s home"])  # the last: one word too far
    monkeypatch.setattr(pipe, "ner", lambda questions: [next(names) for _ in questions])
    known, unknown, nobody, shifted = pipe.ask_many(["Q1?", "Q2?", "Q3?", f"Where is {first} {last}'s home town?"])
    assert known.found == test_people[0]["name"] and known.lookup == "exact" and known.summary is not None
    assert shifted.found == test_people[1]["name"] and shifted.lookup == "nearby span"
    assert unknown.answer == mp.unknown_answer(stranger) and not unknown.found
    assert nobody.answer == mp.NO_NAME
    monkeypatch.undo()
    rows, summary, markdown = mp.report(pipe, mp.SPLITS, limit=8, folder=folder, out_dir=str(tmp_path / "report"))
    assert set(rows["split"]) == set(mp.SPLITS) and rows["chained_ok"].isin([True, False]).all()
    # an untrained NER still only extracts: every name it gives is a word-bounded span of the question
    for question, name in zip(rows["question"], rows["name"]):
        assert name == people.NONE or re.search(rf"(?<!\w){re.escape(name)}(?!\w)", question), (question, name)
    assert {"NER exact match", "end-to-end (chained)", "store hit (fuzzy, nearby)"} <= set(summary.columns)
    assert os.path.isfile(tmp_path / "report" / "report.png") and "first stage that broke" in markdown
    failed = rows[~rows["chained_ok"].astype(bool)]
    assert failed["failed"].isin(mp.STAGES).all()  # every failure is attributed to a stage


def test_cli_errors(capsys):
    from momem.__main__ import main
    with cli_error(capsys, "question=''"):
        main(["ask", ""])
    with cli_error(capsys, "--splits"):
        main(["eval", "--splits", "nope"])


def test_encode_sources_right_pads():
    tok = data.load_tokenizer("char")
    src = encode_sources(tok, ["ab", "abcd"])
    assert src.shape == (2, 4) and (src[0, 2:] == data.PAD_ID).all() and (src[1] != data.PAD_ID).all()


def test_readme_asks_about_people_the_store_holds():
    """Every `python -m momem ask` in the README names a person of the generated store (seed 0)."""
    with open(os.path.join(config.ROOT, "README.md"), encoding="utf-8") as f:
        asked = re.findall(r'python -m momem ask "([^"]+)"', f.read())
    generated = people.generate(seed=0)
    stored = {p["name"].lower() for split in people.IN_MEMORY for p in generated[split][0]}
    assert asked and all(any(name in q.lower() for name in stored) for q in asked), asked
