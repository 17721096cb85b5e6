"""Module1, the memory: a SQLite store of people (stdlib sqlite3) mapping a name to its record.

    store = MemoryStore("memory.sqlite")          # or MemoryStore() in memory
    store.add(person)                              # person: dict with 'name' and the six facts
    store.find("Amina Otieno")                     # -> (record, how): how = 'exact' | 'fuzzy' | None

Exact lookups are case-insensitive SQL; a near-miss name (a character dropped or swapped by the
NER model) is found with rapidfuzz when one stored name is clearly the closest. Every query is
parameterised, so a name is data, never SQL. A name not found returns (None, None): the caller
answers "unknown person", never a guess.
"""
import sqlite3

from rapidfuzz import fuzz, process, utils

from momem.people import CATEGORIES, content

FIELDS = ("name", "first", "last") + CATEGORIES


class MemoryStore:
    # 88 (measured on the generated data): 6 of 200 strangers' names take a stored person's,
    # 285 of 300 stored names with one typo are found; at 85: 13 strangers and 291
    def __init__(self, path=":memory:", fuzzy_min_score=88.0, fuzzy_margin=5.0):
        self.db = sqlite3.connect(path)
        self.fuzzy_min_score, self.fuzzy_margin = fuzzy_min_score, fuzzy_margin
        columns = ", ".join(f"{f} TEXT NOT NULL" for f in FIELDS[1:])
        self.db.execute(f"CREATE TABLE IF NOT EXISTS people (name TEXT PRIMARY KEY COLLATE NOCASE, {columns})")
        self.db.commit()
        self._names = None  # cache of all names for fuzzy search, dropped on every change

    def _check(self, person):
        missing = [f for f in FIELDS if not str(person.get(f, "")).strip()]
        if missing:
            raise ValueError(f"person {person.get('name')!r} lacks {missing}: every field must be a non-empty string")
        bad = [f for f in FIELDS if ";" in str(person[f])]
        if bad:
            raise ValueError(f"person {person['name']!r}: fields {bad} contain ';', the record's field separator")

    def add(self, person):
        """Insert a person; an existing name is an error (use update)."""
        self._check(person)
        try:
            with self.db:
                self.db.execute(f"INSERT INTO people ({', '.join(FIELDS)}) VALUES ({', '.join('?' * len(FIELDS))})",
                                [str(person[f]) for f in FIELDS])
        except sqlite3.IntegrityError:
            raise ValueError(f"{person['name']!r} is already in the store; use update") from None
        self._names = None

    def add_many(self, people):
        for person in people:
            self._check(person)
        with self.db:
            self.db.executemany(f"INSERT OR REPLACE INTO people ({', '.join(FIELDS)}) VALUES "
                                f"({', '.join('?' * len(FIELDS))})", [[str(p[f]) for f in FIELDS] for p in people])
        self._names = None

    def update(self, name, **fields):
        """Change some facts of a stored person."""
        unknown = set(fields) - set(CATEGORIES)
        if unknown:
            raise ValueError(f"unknown field(s) {sorted(unknown)}; allowed: {list(CATEGORIES)}")
        record = self.get(name)
        if record is None:
            raise KeyError(f"unknown person {name!r}")
        self._check({**record, **fields})
        with self.db:
            self.db.execute(f"UPDATE people SET {', '.join(f'{k} = ?' for k in fields)} WHERE name = ?",
                            [*fields.values(), name])

    def delete(self, name):
        with self.db:
            removed = self.db.execute("DELETE FROM people WHERE name = ?", (name,)).rowcount
        self._names = None
        if not removed:
            raise KeyError(f"unknown person {name!r}")

    def get(self, name):
        """The record of exactly this name (case-insensitive), or None."""
        row = self.db.execute(f"SELECT {', '.join(FIELDS)} FROM people WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        record = dict(zip(FIELDS, row))
        record["content"] = content(record)
        return record

    def names(self):
        if self._names is None:
            self._names = [r[0] for r in self.db.execute("SELECT name FROM people ORDER BY name")]
        return self._names

    def __len__(self):
        return self.db.execute("SELECT COUNT(*) FROM people").fetchone()[0]

    def find(self, name, fuzzy=True):
        """(record, 'exact' | 'fuzzy') or (None, None); case never matters. Fuzzy: the best-scoring
        stored name (rapidfuzz ratio, 0-100, of the lower-cased names) when it scores at least
        fuzzy_min_score and beats the runner-up by fuzzy_margin, so an ambiguous near-miss finds
        nobody rather than the wrong person."""
        if fuzzy:
            return self.find_any([name])
        record = self.get(name)
        return (record, "exact") if record else (None, None)

    def find_any(self, candidates):
        """find() over several spellings of one name, likeliest first (the NER's span and its
        neighbours, say): the first that names a stored person exactly, else the best fuzzy
        match under find's threshold and margin; (record, 'exact' | 'fuzzy') or (None, None)."""
        candidates = [c for c in candidates if c.strip()]
        for name in candidates:
            record = self.get(name)
            if record is not None:
                return record, "exact"
        scored = [process.extract(c, self.names(), scorer=fuzz.ratio, processor=utils.default_process, limit=2)
                  for c in candidates]
        scored = [best for best in scored if best]  # best: the two closest stored names, (name, score, index)
        if not scored:
            return None, None
        best = max(scored, key=lambda b: b[0][1])
        if best[0][1] < self.fuzzy_min_score or (len(best) > 1 and best[0][1] - best[1][1] < self.fuzzy_margin):
            return None, None
        return self.get(best[0][0]), "fuzzy"
