"""The chained MoMeM pipeline and its evaluation.

    question --Module0 NER (GPT)--> name --Module1 memory (SQLite)--> record
             --Module2 summarizer (encoder-decoder)--> field --Module3 generator--> answer

Every stage decodes greedily with the sandbox's batched, KV-cached `inference.generate` (the
encoder-decoders run their encoder once per batch through `model_inputs`). The NER may only
write a span of its question (or "<none>") and the summarizer only one of the record's entries
(momem/constrained.py): the models choose, they cannot invent. A question about
nobody, or about a person the store does not hold, gets a plain "I don't know" answer, never a
guess.
"""
import functools
import os
import re
from dataclasses import dataclass, field

import data
import inference
import tools
from config import ROOT
from momem import people
from momem.constrained import OneOf, SpanOrNone
from momem.examples import data_folder, decoder_prompt, encode_sources, response_source
from momem.questions import MAX_CHARS, mask_name
from momem.store import MemoryStore

TRAINED = os.path.join(ROOT, "trained")
MODULES = {"ner": "momem_ner", "summary": "momem_summary", "response": "momem_response"}
MAX_NEW = {"ner": 40, "summary": 40, "response": 100}
NO_NAME = "I could not find a person's name in that question."


def unknown_answer(name):
    return f"I don't know anyone called {name}."


@functools.lru_cache(maxsize=1)
def _alphabet():
    """The characters MoMeM's character-level tokenizer knows (others would go through its byte
    fallback as several ids the models never saw in training)."""
    return frozenset(t for t in data.load_tokenizer("char").get_vocab() if len(t) == 1)


def check_question(question):
    """The question as the models can read it (characters outside their alphabet, an emoji
    say, are left out: they garble every stage), or a clear ValueError."""
    readable = " ".join("".join(c if c in _alphabet() else " " for c in question).split()) \
        if isinstance(question, str) else ""
    if not readable:
        raise ValueError(f"question={question!r} is invalid: ask about a person, e.g. "
                         "\"Where does Kenji Diallo live?\"")
    if "\n" in question:
        raise ValueError("the question must be one line (a newline separates question and answer)")
    if len(readable) > MAX_CHARS:
        raise ValueError(f"the question is {len(readable)} characters long; at most {MAX_CHARS} fit "
                         "the NER model's context")
    return readable


def open_store(path=None, folder=None):
    """The memory store at path (default: memory.sqlite in the data folder), filled with every
    person of the train, valid, test and ood splits when it is created."""
    folder = folder or data_folder()
    path = path or os.path.join(folder, "memory.sqlite")
    fresh = not os.path.exists(path)
    store = MemoryStore(path)
    if fresh:
        store.add_many([p for split in people.IN_MEMORY for p in people.read(folder, "people", split)])
    return store


def nearby_spans(question, span, reach=2):
    """The word-bounded spans of question whose first and last words lie within `reach` words of
    span's, nearest first (span itself left out); [] when span is not in question."""
    words = [m.span() for m in re.finditer(r"[^\W_]+", question)]  # runs of letters and digits
    start = question.find(span)
    first = next((i for i, (s, _) in enumerate(words) if s == start), None)
    last = next((j for j, (_, e) in enumerate(words) if e == start + len(span)), None)
    if start < 0 or first is None or last is None:
        return []
    pairs = [(i, j) for i in range(first - reach, first + reach + 1) for j in range(last - reach, last + reach + 1)
             if 0 <= i <= j < len(words) and (i, j) != (first, last)]
    pairs.sort(key=lambda p: abs(p[0] - first) + abs(p[1] - last))
    return [question[words[i][0]:words[j][1]] for i, j in pairs]


@dataclass
class Answer:
    question: str
    name: str = ""
    found: str = ""  # the stored name the lookup returned ('' if none)
    lookup: str = ""  # exact | fuzzy | nearby span (the NER's span missed by a word) | '' (not found)
    summary: str = ""
    answer: str = ""
    stages: dict = field(default_factory=dict)


class Pipeline:
    def __init__(self, store=None, run_dir=TRAINED, device="auto", batch_size=256):
        self.models = {k: inference.load_model(os.path.join(run_dir, v), device)[:2] for k, v in MODULES.items()}
        self.store = store if store is not None else open_store()
        self.batch_size = batch_size

    def generate(self, module, questions, sources=None, constraint=None):
        """Greedy answers of one module for many questions (batched); sources for encoder-decoders;
        constraint(tokenizer, rows) builds the allowed_next of the question indices in rows."""
        model, tokenizer = self.models[module]
        out = []
        for i in range(0, len(questions), self.batch_size):
            rows = range(i, min(i + self.batch_size, len(questions)))
            prompts = [decoder_prompt(questions[r]) for r in rows]
            inputs = {} if sources is None else {"source": encode_sources(tokenizer, [sources[r] for r in rows])}
            out += inference.generate(model, tokenizer, prompts, max_new_tokens=MAX_NEW[module], temperature=0,
                                      model_inputs=inputs, allowed_next=constraint and constraint(tokenizer, rows))
        return out

    def ner(self, questions):
        """The name each question asks about, as written in it, or people.NONE."""
        return self.generate("ner", questions, constraint=lambda tok, rows: SpanOrNone(tok, [questions[r] for r in rows]))

    def summarize(self, questions, names, contents):
        """The entry ("Label: value") of each record that its question asks for; names: the name
        as written in each question (masked, as in training)."""
        questions = [mask_name(q, n) for q, n in zip(questions, names)]
        return self.generate("summary", questions, contents,
                             constraint=lambda tok, rows: OneOf(tok, [contents[r].split("; ") for r in rows]))

    def respond(self, questions, names, summaries):
        return self.generate("response", questions, [response_source(n, s) for n, s in zip(names, summaries)])

    def ask_many(self, questions, fuzzy=True):
        """Run the chain on many questions; returns one Answer per question."""
        questions = [check_question(q) for q in questions]
        answers = [Answer(q) for q in questions]
        for a, name in zip(answers, self.ner(questions)):
            a.name = name.strip()
            if a.name == people.NONE or not a.name:
                a.answer = NO_NAME
                continue
            record, how = self.store.find(a.name, fuzzy=fuzzy)
            if record is None and fuzzy:  # the NER's usual miss: a word too many, too few, or shifted
                record, how = self.store.find_any(nearby_spans(a.question, a.name))
                how = how and "nearby span"
            if record is None:
                a.answer = unknown_answer(a.name)
            else:
                a.found, a.lookup, a.stages["record"] = record["name"], how, record
        todo = [a for a in answers if a.found]
        if todo:
            summaries = self.summarize([a.question for a in todo], [a.name for a in todo],
                                       [a.stages["record"]["content"] for a in todo])
            for a, s in zip(todo, summaries):
                a.summary = s
            for a, r in zip(todo, self.respond([a.question for a in todo], [a.found for a in todo], summaries)):
                a.answer = r
        return answers

    def ask(self, question, fuzzy=True):
        return self.ask_many([question], fuzzy)[0]


STAGES = ("ner", "store", "summary", "response")


def evaluate(pipeline, examples, known=True):
    """Per-example results on a list of generated examples: each stage with oracle (gold) inputs,
    the chained answer, and the first stage that broke. known=False: people not in the store,
    where the right answer is 'unknown'."""
    questions = [ex["question"] for ex in examples]
    chained = pipeline.ask_many(questions)
    rows = []
    with_person = [i for i, ex in enumerate(examples) if ex["content"]]
    if known and with_person:
        picked = [examples[i] for i in with_person]
        oracle_summary = pipeline.summarize([ex["question"] for ex in picked], [ex["name"] for ex in picked],
                                            [ex["content"] for ex in picked])
        oracle_response = pipeline.respond([ex["question"] for ex in picked], [ex["person"] for ex in picked],
                                           [ex["summary"] for ex in picked])
        oracle = {i: (s, r) for i, s, r in zip(with_person, oracle_summary, oracle_response)}
    for i, (ex, a) in enumerate(zip(examples, chained)):
        row = {"category": ex["category"], "held_out": ex["held_out"], "question": ex["question"],
               "gold_name": ex["name"], "name": a.name, "answer": a.answer, "ner_ok": a.name == ex["name"]}
        if not ex["content"]:  # a question about nobody
            row.update(chained_ok=a.answer == NO_NAME, failed="ner" if a.answer != NO_NAME else "")
        elif not known:
            ok = not a.found and a.answer == unknown_answer(a.name)
            row.update(chained_ok=ok, failed="" if ok else ("store" if a.found else "ner"))
        else:
            summary, response = oracle[i]
            exact = pipeline.store.get(a.name)
            row.update(store_exact_ok=exact is not None and exact["name"] == ex["person"], store_ok=a.found == ex["person"],
                       summary_oracle_ok=summary == ex["summary"], response_oracle_ok=ex["value"] in response,
                       summary_ok=a.summary == ex["summary"], chained_ok=bool(a.found) and ex["value"] in a.answer
                       and a.found == ex["person"])
            row["oracle_ok"] = row["summary_oracle_ok"] and row["response_oracle_ok"] and row["ner_ok"]
            row["failed"] = next((stage for stage, ok in (("ner", row["ner_ok"] or row["store_ok"]),
                                                          ("store", row["store_ok"]), ("summary", row["summary_ok"]),
                                                          ("response", row["chained_ok"])) if not ok), "")
        rows.append(row)
    return rows


SPLITS = ("test", "ood", "paraphrase", "unknown")


def report(pipeline, splits=SPLITS, limit=None, folder=None, out_dir=None):
    """Evaluate on the generated splits; returns (per-example DataFrame, summary DataFrame,
    markdown) and, with out_dir, writes report.md and report.png there."""
    import pandas as pd
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit={limit!r} is invalid: must be a positive number of questions per split, or None (all)")
    folder = folder or data_folder()
    frames = []
    for split in splits:
        examples = people.read(folder, "examples", split)
        examples = examples[:limit]
        frame = pd.DataFrame(evaluate(pipeline, examples, known=split != "unknown"))
        frame.insert(0, "split", split)
        frames.append(frame)
    rows = pd.concat(frames, ignore_index=True)
    summary = summarize(rows)
    markdown = to_markdown(rows, summary)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "report.md"), "w") as f:
            f.write(markdown)
        plot(summary, os.path.join(out_dir, "report.png"))
    return rows, summary, markdown


METRICS = {"ner_ok": "NER exact match", "store_exact_ok": "store hit (exact)", "store_ok": "store hit (fuzzy, nearby)",
           "summary_oracle_ok": "summary EM (oracle)", "response_oracle_ok": "response fact acc. (oracle)",
           "oracle_ok": "end-to-end (oracle inputs)", "chained_ok": "end-to-end (chained)"}


def summarize(rows):
    """Mean of every metric per split and category (and 'all')."""
    import pandas as pd
    known = rows[rows["category"] != "none"]
    parts = []
    for (split, category), group in list(known.groupby(["split", "category"])) + [
            ((s, "all"), g) for s, g in known.groupby("split")]:
        entry = {"split": split, "category": category, "n": len(group)}
        entry.update({label: group[col].mean() for col, label in METRICS.items() if col in group and
                      group[col].notna().any()})
        parts.append(entry)
    return pd.DataFrame(parts).sort_values(["split", "category"]).reset_index(drop=True)


def to_markdown(rows, summary):
    lines = ["# MoMeM evaluation", "", "Greedy decoding; every rate is over the questions of its split and "
             "category. `paraphrase` asks about people in the store with families of phrasing never used in "
             "training; `unknown` asks about people not in the memory store (right answer: unknown).", ""]
    lines.append(tools.markdown_table(summary, float_format="{:.3f}"))
    none = rows[rows["category"] == "none"]
    if len(none):
        lines += ["", f"Questions about nobody: {none['chained_ok'].mean():.3f} answered that no name was found "
                  f"({len(none)} questions)."]
    failures = rows[(rows["category"] != "none") & ~rows["chained_ok"].astype(bool)]
    lines += ["", "Chained failures by the first stage that broke:", "",
              "| split | " + " | ".join(STAGES) + " |", "|---|" + "---|" * len(STAGES)]
    for split, group in failures.groupby("split"):
        counts = group["failed"].value_counts()
        lines.append(f"| {split} | " + " | ".join(str(int(counts.get(s, 0))) for s in STAGES) + " |")
    held = rows[rows["held_out"].astype(bool)] if "held_out" in rows else rows.iloc[:0]
    if len(held):
        by_part = held.groupby("held_out")["chained_ok"].agg(["size", "mean"]).reset_index()
        by_part.columns = ["held-out part", "questions", "end-to-end (chained)"]
        lines += ["", "Paraphrase questions by the held-out family of phrasing they use "
                  "(momem/questions.py):", "", tools.markdown_table(by_part, float_format="{:.3f}")]
    if len(failures):
        shown = failures.head(12)[["split", "question", "name", "answer", "failed"]]
        lines += ["", f"Some chained failures ({min(12, len(failures))} of {len(failures)}):", "",
                  tools.markdown_table(shown)]
    return "\n".join(lines) + "\n"


def plot(summary, path=None):
    """Bars: each metric on the whole of each split."""
    import matplotlib.pyplot as plt
    overall = summary[summary["category"] == "all"].set_index("split")
    metrics = [m for m in METRICS.values() if m in overall]
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / max(1, len(overall))
    for k, (split, row) in enumerate(overall.iterrows()):
        ax.bar([i + k * width for i in range(len(metrics))], [row[m] for m in metrics], width, label=split)
    ax.set_xticks([i + width * (len(overall) - 1) / 2 for i in range(len(metrics))])
    ax.set_xticklabels(metrics, rotation=20, ha="right", fontsize=8)
    lowest = min(float(row[m]) for _, row in overall.iterrows() for m in metrics)
    ax.set_ylim(max(0.0, lowest - 0.1 * (1.02 - lowest)), 1.01)  # zoomed: 0.96 and 1.00 must look different
    ax.set_ylabel("rate (axis zoomed, not from 0)" if lowest > 0.1 else "rate")
    ax.legend(title="split", loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("MoMeM: every stage, and the chain")
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig
