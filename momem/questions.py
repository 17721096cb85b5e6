"""Questions composed from parts, with whole families of phrasing held out of training.

A question is  opener + body + suffix,  then the name's casing, the end punctuation and maybe a
short typo are varied. The body asks for one field in one of three ways:

    noun construction   "What is the {noun} of {name}?"   {noun}: that field's synonyms
    verb question       "Where is {name} based?"
    embedded clause     "Could you tell me" + " where {name} studied" + "?"

Every list of parts is split in two families: SEEN parts make the train, valid, test and ood
questions; HELD_OUT parts (other synonyms and spellings, openers, suffixes, constructions and
clauses) appear only in the `paraphrase` split, whose every question uses at least one of them.
A model trained from scratch cannot know what a word it never saw means, so every held-out
part is built from words that do occur in training ("favorite" beside "favourite", "line of
work" beside "work", "Could you tell me" beside "Can you tell me") in orders and combinations
that do not. All lists were written for this project.
"""
import collections
import random

NOUNS = {  # category: (seen synonyms, held-out synonyms)
    "job": (["job", "occupation", "profession", "work", "trade", "career"], ["line of work", "day job"]),
    "city": (["city", "home town", "home city", "town", "place of residence"], ["hometown", "city of residence"]),
    "movie": (["favourite movie", "favourite film", "movie", "film", "best-loved film"],
              ["favorite movie", "favorite film", "best-loved movie"]),
    "song": (["favourite song", "favourite tune", "song", "tune", "favourite music"],
             ["favorite song", "favorite tune", "best-loved song"]),
    "hobby": (["hobby", "pastime", "favourite pastime", "hobbies", "free-time activity"],
              ["favorite pastime", "favourite hobby"]),
    "uni": (["university", "college", "alma mater", "old university"], ["uni", "old college", "university or college"]),
}
NOUN_BODIES = (["What is {name}'s {noun}?", "What's {name}'s {noun}?", "What is the {noun} of {name}?",
                "{name}'s {noun}?", "{name} {noun}?", "Which {noun} does {name} have?", "Do you know {name}'s {noun}?"],
               ["{noun} of {name}?", "What would {name}'s {noun} be?", "And the {noun} of {name}?"])
VERB_BODIES = {
    "job": (["What does {name} do for a living?", "What does {name} do?", "What does {name} work as?",
             "How does {name} earn a living?"], ["What kind of work does {name} do?", "What does {name} do for work?"]),
    "city": (["Where does {name} live?", "Where is {name} based?", "Which city is {name} from?", "Where is {name} from?",
              "In what city does {name} live?", "Where does {name} reside?"],
             ["Where does {name} live now?", "Which city does {name} live in?"]),
    "movie": (["Which film does {name} love most?", "What movie does {name} like best?", "Which movie does {name} love?",
               "What film does {name} like?"], ["Which film does {name} like most?", "What movie does {name} love best?"]),
    "song": (["Which song does {name} love?", "What music does {name} like?", "What tune does {name} like best?",
              "Which song does {name} like most?"], ["What song does {name} love best?", "Which tune does {name} love?"]),
    "hobby": (["What does {name} do for fun?", "How does {name} spend free time?", "What does {name} enjoy doing?",
               "What does {name} like to do for fun?"], ["What does {name} do in free time?", "How does {name} have fun?"]),
    "uni": (["Where did {name} study?", "Which university did {name} attend?", "Where did {name} go to college?",
             "Which college did {name} go to?", "Where did {name} graduate?"],
            ["Where did {name} go to university?", "Which college did {name} attend?"]),
}
CLAUSES = {  # embedded: "{asker} {clause}" + end punctuation
    "job": (["what {name} does for a living", "what {name} works as", "{name}'s {noun}", "the {noun} of {name}"],
            ["what {name} does for work"]),
    "city": (["where {name} lives", "which city {name} is from", "{name}'s {noun}", "the {noun} of {name}"],
             ["where {name} is based"]),
    "movie": (["which film {name} loves most", "what movie {name} likes best", "{name}'s {noun}", "the {noun} of {name}"],
              ["what film {name} likes"]),
    "song": (["which song {name} loves", "what music {name} likes", "{name}'s {noun}", "the {noun} of {name}"],
             ["what tune {name} likes best"]),
    "hobby": (["what {name} does for fun", "how {name} spends free time", "{name}'s {noun}", "the {noun} of {name}"],
              ["what {name} enjoys doing"]),
    "uni": (["where {name} studied", "which university {name} attended", "{name}'s {noun}", "the {noun} of {name}"],
            ["where {name} went to college"]),
}
ASKERS = (["Tell me", "Can you tell me", "Do you know", "Please tell me", "I'd like to know", "I wonder"],
          ["Could you tell me", "Do you happen to know", "I was wondering"])
OPENERS = (["", "", "", "Please, ", "Hi, ", "Hey, ", "So, ", "Hello! ", "Excuse me, ",
            "Good morning! I hope you are well, I have a question for you. "],
           ["Quick question: ", "Sorry to bother you, ", "OK so ", "Hello there, sorry for the long message, I am new here. "])
SUFFIXES = (["", "", "", " Thanks.", " Thank you!", " Please.", " I need it for a form.", " If you know.",
             " I am filling in a form for our book club and need it, thanks a lot."],
            [" Just curious.", " Cheers!", " Many thanks, I need it today.",
             " My sister asked me and I could not remember, so I thought I would ask."])
MAX_CHARS = 160  # the longest question (a typed one); the NER context (208) holds it and a name of up to 40
NO_PERSON = ["What time is it?", "Tell me a joke.", "What is the weather like today?", "How far is the moon?",
             "Which city is the biggest?", "What is a good movie to watch?", "Who won the match?",
             "What song is playing?", "How do I bake bread?", "Where is the nearest library?",
             "What is the capital of France?", "Which university is the oldest?", "What job should I do?",
             "Do you know a good hobby?", "Where do you live?", "What is your favourite film?"]
NAME_MASK = "$"  # stands for the name in what the summarizer reads (a character no question uses)
PARTS = ("noun", "noun_body", "verb_body", "clause", "asker", "opener", "suffix")  # the held-out kinds


def _pick(rng, families, held_out):
    return rng.choice(families[1] if held_out else families[0])


def _typo(word, rng):
    """One short typo: two neighbouring letters swapped, or one dropped."""
    i = rng.randrange(len(word) - 1)
    return word[:i] + word[i + 1] + word[i] + word[i + 2:] if rng.random() < 0.5 else word[:i] + word[i + 1:]


def written_name(name, rng):
    """The name as a person types it: usually as stored, sometimes in lower case, rarely upper."""
    r = rng.random()
    return name.lower() if r < 0.2 else name.upper() if r < 0.25 else name


def compose(category, name, rng, held_out=None, typo_prob=0.1):
    """(question, the name as written in it) for one field of a person. held_out: None (seen
    families only) or one of PARTS, drawn from its held-out family (the other parts stay seen)."""
    held = {part: part == held_out for part in PARTS}
    if held["noun"]:  # a held-out synonym needs a body that shows the noun
        kind = rng.choice(("noun", "clause"))
    elif held["noun_body"] or held["verb_body"]:
        kind = "noun" if held["noun_body"] else "verb"
    elif held["clause"] or held["asker"]:
        kind = "clause"
    else:
        kind = rng.choice(("noun", "noun", "verb", "clause"))
    if kind == "clause":
        seen, unseen = CLAUSES[category]
        clauses = ([c for c in seen if "{noun}" in c] if held["noun"] else seen, unseen)
        body = f"{_pick(rng, ASKERS, held['asker'])} {_pick(rng, clauses, held['clause'])}" + rng.choice("??.")
    elif kind == "verb":
        body = _pick(rng, VERB_BODIES[category], held["verb_body"])
    else:
        body = _pick(rng, NOUN_BODIES, held["noun_body"])
    opener, suffix = _pick(rng, OPENERS, held["opener"]), _pick(rng, SUFFIXES, held["suffix"])
    if opener and not body.startswith(("{", "I ", "I'")):
        body = body[0].lower() + body[1:]
    if rng.random() < typo_prob:  # a typo in one word of the phrasing (never in the name or the noun)
        words = body.split(" ")
        candidates = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
        if candidates:
            i = rng.choice(candidates)
            words[i] = _typo(words[i], rng)
            body = " ".join(words)
    end = rng.random()
    if end < 0.15:  # a missing question mark, or a doubled one
        body = body.rstrip("?.")
    elif end < 0.2 and body.endswith("?"):
        body += "?"
    written = written_name(name, rng)
    noun = _pick(rng, NOUNS[category], held["noun"])
    # too long: drop the suffix (or the opener when the suffix is the held-out part), then both
    for parts in ((opener, suffix), ("", suffix) if held["suffix"] else (opener, ""), ("", "")):
        question = (parts[0] + body + parts[1]).replace("{noun}", noun).replace("{name}", written)
        if len(question) <= MAX_CHARS:
            break
    return question, written


def no_person(rng):
    """A question about nobody, phrased with the same openers and suffixes."""
    question = rng.choice(NO_PERSON)
    opener = rng.choice(OPENERS[0])
    if opener:
        question = opener + question[0].lower() + question[1:]
    with_suffix = question + rng.choice(SUFFIXES[0])
    return with_suffix if len(with_suffix) <= MAX_CHARS else question


def with_noise(question, name, words, rng, most=3):
    """The question with 1..most words from `words` put in at random word boundaries outside the
    name, each capitalised or not at random (the question itself when that would make it longer
    than MAX_CHARS): training data for the NER in which no neighbouring word, and no capital
    letter, tells where the name is, only the name's own letters do."""
    at = question.index(name)
    attached, *after = question[at + len(name):].split(" ")  # attached sticks to the name: "'s", "?" or ""
    before = question[:at].split()
    for _ in range(rng.randint(1, most)):
        side = before if rng.random() < 0.5 else after
        word = rng.choice(words)
        side.insert(rng.randint(0, len(side)), word.capitalize() if rng.random() < 0.5 else word)
    noisy = " ".join(before + [name + attached] + after)
    return noisy if len(noisy) <= MAX_CHARS else question


def noisy_copies(examples, words, most=3, seed=0):
    """with_noise of every question about a person, 1..most words drawn from `words` (seeded)."""
    rng = random.Random(seed)
    return [{**ex, "question": with_noise(ex["question"], ex["name"], words, rng, most)}
            for ex in examples if ex["content"]]


def _plain(word):
    """A word as the word lists compare it: lower case, without the punctuation around it."""
    return word.strip("?.,!:").lower()


def _word_categories(examples):
    """word of the phrasing (names left out) -> Counter of the categories of the questions it is in."""
    counts = collections.defaultdict(collections.Counter)
    for ex in examples:
        for word in ex["question"].replace(ex["name"], " ").split():
            counts[_plain(word)][ex["category"]] += 1
    counts.pop("", None)
    return counts


def phrasing_words(examples, min_count=20):
    """The words of the questions (names left out) that occur at least min_count times: the
    phrasing's words, not its typos."""
    return sorted(w for w, c in _word_categories(examples).items() if c.total() >= min_count)


def neutral_words(examples, min_count=20, max_share=0.3):
    """The phrasing words that do not tell the field: no category holds more than max_share of
    their uses (a word spread evenly over the six holds 1/6; "tell", "please", "a" do, "fun" and
    "film" do not)."""
    return sorted(w for w, c in _word_categories(examples).items()
                  if c.total() >= min_count and max(c.values()) <= max_share * c.total())


def held_out_words():
    """Every word of a held-out part (lower case, punctuation stripped)."""
    parts = [NOUNS, VERB_BODIES, CLAUSES]
    texts = [t for lists in parts for families in lists.values() for t in families[1]]
    texts += [t for families in (NOUN_BODIES, ASKERS, OPENERS, SUFFIXES) for t in families[1]]
    return {_plain(w) for t in texts for w in t.replace("{name}", " ").replace("{noun}", " ").split()}


def filler_words(examples, lexicon):
    """Words to put into a question that do not change which field it asks for: its neutral
    phrasing words, and words of everyday English (lexicon) that are not phrasing words at all
    (so none that tells a field) and not in any held-out part (so the paraphrase split still
    asks with words training never showed)."""
    phrasing = set(_word_categories(examples))
    everyday = {w.lower() for w in lexicon} - phrasing - held_out_words()
    return sorted(set(neutral_words(examples)) | everyday)


def mask_name(question, name):
    """The question with its (first) name replaced by NAME_MASK, for a module that must read the
    phrasing only."""
    return question.replace(name, NAME_MASK, 1) if name else question
