"""The synthetic people dataset: a seeded generator of people, their records and questions.

Every person has a name (first + last; with probability `shuffle_prob` each part's characters
are shuffled, so NER must copy names, not remember them) and six facts. A record's content is
"Job: ...; City: ...; Movie: ...; Song: ...; Hobby: ...; Uni: ..." (about 80-130 characters).
Every fact gives an example; its question is composed from parts by momem/questions.py:

    question  "Can you tell me amina otieno's favourite film?"
    name      "amina otieno"                    (NER target: the name as written; "<none>" for a
                                                 question about nobody)
    person    "Amina Otieno"                    (as stored)
    summary   "Movie: The Silver Lantern"       (the record's field the question asks for)
    response  "Amina Otieno's favourite movie is The Silver Lantern."

Splits: train / valid / test draw values from the in-distribution pools; ood draws every value
(and name part) from pools never used in training, so it tests copying rather than recall;
paraphrase asks about new people with families of phrasing never used in training; unknown
asks about people never put in memory. All lists below were written for this project. No value
contains ';' (the field separator).
"""
import json
import os
import random

import tools
from momem import questions

FIRST = """Amina Otieno Baraka Wanjiru Kofi Ama Chidi Ngozi Tunde Zola Thabo Lerato Sipho Ayana Kwame Nia Jabari Imani
Malik Zuri Omari Asha Femi Ada Kato Nala Juma Sade Lars Ingrid Sven Freya Anders Elin Nils Astrid Mateo Lucia Diego
Sofia Pablo Elena Marco Giulia Luca Chiara Hugo Chloe Louis Manon Felix Clara Jonas Lena Emil Mila Oskar Ida Theo
Nora Leo Alma Ivan Olga Dmitri Katya Pavel Irina Yusuf Leila Omar Yasmin Tariq Noor Hassan Zara Arjun Priya Rohan
Anika Vikram Meera Kiran Devi Ravi Sita Hiroshi Yuki Kenji Aiko Takeshi Emi Wei Mei Jun Lin Chen Hui Min Jia Tao
Ling Daniel Grace Samuel Ruth Peter Alice Simon Rose Paul Helen Mark Julia Adam Laura Noah Emma Liam Olivia Ethan
Ava Lucas Isla Owen Ruby Caleb Hazel Isaac Ivy Jude Maya Aaron Naomi Silas Esther Tobias Vera Rafael Ines Bruno
Alba Dario Greta Elias Paula Kai Leona Aziz Dalia Karim Rania Bilal Salma Nadia Farid Selin Emre Deniz Aylin Can
Duc Linh Minh Thu Anh Bao Chau Huy Kalani Moana Tane Aroha Rangi Mere Ezra Joy Seth Faith Abel Hope Amos Lydia""".split()
LAST = """Otieno Mwangi Kamau Njoroge Achieng Mensah Boateng Okafor Adeyemi Nwosu Dlamini Nkosi Mokoena Banda Phiri
Tembo Diallo Traore Keita Sow Ndiaye Kiptoo Chebet Odhiambo Hansen Larsen Berg Lund Nilsson Holm Dahl Garcia
Lopez Romero Navarro Torres Rossi Bianchi Ricci Marino Greco Moreau Laurent Girard Roux Fontaine Muller Weber
Fischer Becker Wagner Novak Horvat Kowalski Nowak Petrov Ivanova Smirnov Volkov Sokolov Khan Ahmed Haddad Saleh
Nasser Aziz Yilmaz Demir Sahin Kaya Sharma Patel Iyer Reddy Gupta Nair Rao Tanaka Sato Suzuki Ito Watanabe
Kobayashi Wang Zhang Liu Huang Zhao Zhou Nguyen Tran Pham Hoang Vu Kim Park Lee Choi Jung Kang Smith Brown Taylor
Walker Wright Green Hall Wood Clarke Hughes Evans Price Bell Ward Reed Cole West Stone Brooks Hayes Fox Gray Lane
Quinn Rowe Shaw Webb Moss Frost Hart Kane Vance Sousa Costa Pereira Silva Santos Alves Moreno Cruz Reyes Vega
Rios Campos Ortiz Mendez Castro Ramos Herrera Medina Flores Rivera Kealoha Makoa Walsh Byrne Doyle Kelly Nolan""".split()

OCCUPATIONS = """baker nurse teacher pilot farmer tailor potter chemist plumber dentist architect librarian carpenter
fisher jeweler florist surgeon painter sculptor judge lawyer banker miner sailor welder engineer editor writer
poet dancer singer drummer violinist actor director chef butcher brewer vintner gardener ranger geologist
biologist astronomer physicist mechanic electrician glazier roofer mason locksmith barber cobbler weaver
translator journalist curator archivist economist analyst programmer designer animator photographer
cartographer surveyor pharmacist midwife paramedic firefighter detective diplomat professor tutor coach
referee jockey lifeguard shepherd beekeeper blacksmith clockmaker bookbinder printer publisher auctioneer
courier driver conductor navigator ferryman trader merchant grocer cashier waiter barista sommelier""".split()
OCCUPATIONS += ["bus driver", "web designer", "tax adviser", "sound engineer", "tour guide", "data analyst",
                "dog trainer", "sign painter", "ship captain", "music teacher", "film editor", "crane operator",
                "ice sculptor", "map maker", "kite maker", "tea taster", "game designer", "park ranger"]
CITIES = """Nairobi Mombasa Kisumu Nakuru Eldoret Kampala Entebbe Kigali Arusha Dodoma Zanzibar Lagos Abuja Accra
Kumasi Dakar Bamako Niamey Lusaka Harare Maputo Durban Pretoria Windhoek Gaborone Luanda Cairo Tunis Rabat
Algiers Oslo Bergen Stockholm Uppsala Malmo Helsinki Tampere Reykjavik Dublin Cork Galway London Leeds York
Bristol Cardiff Glasgow Leith Paris Lyon Lille Nantes Nice Madrid Seville Bilbao Malaga Lisbon Porto Braga
Rome Milan Turin Naples Genoa Verona Berlin Munich Hamburg Bremen Leipzig Vienna Graz Zurich Basel Geneva
Prague Brno Warsaw Krakow Gdansk Budapest Zagreb Split Athens Patras Sofia Varna Istanbul Izmir Ankara Tbilisi
Yerevan Baku Tehran Dubai Muscat Doha Amman Beirut Mumbai Pune Delhi Jaipur Kochi Chennai Dhaka Kathmandu
Colombo Bangkok Hanoi Hue Manila Cebu Jakarta Bandung Tokyo Osaka Kyoto Sapporo Seoul Busan Beijing Shanghai
Chengdu Xian Taipei Sydney Perth Hobart Auckland Wellington Suva Apia Lima Cusco Quito Bogota Medellin Caracas
Santiago Valparaiso Montevideo Asuncion Recife Salvador Manaus Havana Kingston Panama Toronto Ottawa Halifax
Boston Denver Austin Chicago Seattle Portland Atlanta Memphis Phoenix Tucson Anchorage Honolulu""".split()
CITIES += ["Cape Town", "Dar es Salaam", "Addis Ababa", "Port Louis", "New Delhi", "Hong Kong", "Buenos Aires",
           "Rio de Janeiro", "Sao Paulo", "Mexico City", "San Jose", "New York", "Los Angeles", "Las Vegas",
           "Salt Lake City", "Kuala Lumpur", "Ho Chi Minh", "St Petersburg", "Tel Aviv", "Abu Dhabi"]
ADJECTIVES = """Silver Golden Quiet Hidden Lost Broken Burning Frozen Secret Wild Last Distant Crimson Hollow Velvet
Northern Silent Paper Iron Glass Winter Summer Midnight Morning Electric Gentle Brave Lonely Endless Falling
Copper Amber Scarlet Emerald Restless Sleeping Painted Wandering Crooked Bright""".split()
NOUNS = """Lantern River Garden Harbor Mountain Window Forest Island Bridge Kingdom Voyage Promise Station Compass
Lighthouse Orchard Valley Tower Meadow Desert Storm Echo Shadow Canyon Feather Anchor Mirror Horizon Comet
Festival Letter Machine Ocean Planet Castle Market Circus Forge Harvest""".split()
SONG_NOUNS = """Rain Fire Heart Moon Sun Road Home Light Dream Sky Stars Waves Wind Dawn Night Gold Time Love Smoke
Snow Thunder Roses Dust Bells Hills Tides Stone Ashes Sparks Rivers""".split()
ACTIVITIES = """chess hiking cycling rowing fishing painting knitting pottery gardening baking swimming sailing
climbing dancing singing drawing running surfing skating juggling archery fencing boxing judo karate yoga
birdwatching camping kayaking origami calligraphy photography woodwork astronomy poetry reading cooking
skiing tennis cricket football rugby golf bowling darts quilting beekeeping""".split()
HOBBY_PHRASES = ["{a}", "{a} and {b}", "weekend {a}", "{a} with friends"]
UNI_PATTERNS = ["University of {city}", "{city} University", "{city} College", "{city} Institute"]

CATEGORIES = ("job", "city", "movie", "song", "hobby", "uni")
LABELS = {"job": "Job", "city": "City", "movie": "Movie", "song": "Song", "hobby": "Hobby", "uni": "Uni"}
ANSWERS = {
    "job": ["{name} works as a {value}.", "{name} is a {value}.", "By trade, {name} is a {value}."],
    "city": ["{name} lives in {value}.", "{name} is from {value}.", "Home for {name} is {value}."],
    "movie": ["{name}'s favourite movie is {value}.", "{name} loves the film {value}.",
              "The movie {name} likes best is {value}."],
    "song": ["{name}'s favourite song is {value}.", "{name} loves the song {value}.",
             "The song {name} likes best is {value}."],
    "hobby": ["{name} enjoys {value}.", "{name}'s hobby is {value}.", "In free time, {name} likes {value}."],
    "uni": ["{name} studied at {value}.", "{name} attended {value}.", "{name} went to {value}."],
}
NONE = "<none>"


def _pools(seed, ood_frac=0.2):
    """Every value list, built from the word lists and split into (in-distribution, ood) pools."""
    rng = random.Random(seed)
    movies = sorted({f"The {a} {n}" for a in ADJECTIVES for n in NOUNS if len(a) + len(n) <= 16})
    songs = sorted({f"{a} {n}" for a in ADJECTIVES for n in SONG_NOUNS if len(a) + len(n) <= 16})
    hobbies = sorted({p.format(a=a, b=b) for p in HOBBY_PHRASES for a in ACTIVITIES for b in ACTIVITIES
                      if a != b and len(p.format(a=a, b=b)) <= 20})
    unis = sorted({p.format(city=c) for p in UNI_PATTERNS for c in CITIES if len(p.format(city=c)) <= 22})
    lists = {"first": FIRST, "last": LAST, "job": OCCUPATIONS, "city": CITIES, "movie": movies, "song": songs,
             "hobby": hobbies, "uni": unis}
    pools = {}
    for key, values in lists.items():
        values = sorted(set(values))
        rng.shuffle(values)
        cut = max(1, int(len(values) * ood_frac))
        pools[key] = (values[cut:], values[:cut])
    return pools


def _shuffle_chars(word, rng):
    chars = list(word)
    rng.shuffle(chars)
    return "".join(chars)


def make_person(rng, pools, ood=False, shuffle_prob=0.5):
    """One person: {'name', 'first', 'last', 'job', ..., 'uni'} drawn from the in-distribution
    (or ood) pools; each name part is character-shuffled with probability shuffle_prob."""
    pick = 1 if ood else 0
    person = {key: rng.choice(pools[key][pick]) for key in pools}
    for part in ("first", "last"):
        if rng.random() < shuffle_prob:
            person[part] = _shuffle_chars(person[part], rng)
    person["name"] = f"{person['first']} {person['last']}"
    return person


def content(person):
    """The record the memory store holds for a person."""
    return "; ".join(f"{LABELS[c]}: {person[c]}" for c in CATEGORIES)


def summary(person, category):
    return f"{LABELS[category]}: {person[category]}"


def example(person, category, rng, held_out=None):
    """One fact of a person as a training example: the question (questions.compose; held_out:
    the held-out part it uses, or None), the NER target (the name as written in the question),
    the record, the summary and the answer (which names the person as stored)."""
    question, written = questions.compose(category, person["name"], rng, held_out)
    response = rng.choice(ANSWERS[category]).format(name=person["name"], value=person[category])
    return {"question": question, "name": written, "person": person["name"], "category": category,
            "content": content(person), "summary": summary(person, category), "response": response,
            "value": person[category], "held_out": held_out or ""}


def no_person_example(rng):
    return {"question": questions.no_person(rng), "name": NONE, "person": "", "category": "none", "content": "",
            "summary": "", "response": "", "value": "", "held_out": ""}


# split: (people, ood values, held-out phrasing). paraphrase: people in memory asked only with
# held-out families of phrasing (questions.PARTS), each question using one of them
SPLITS = {"train": (3000, False, False), "valid": (150, False, False), "test": (300, False, False),
          "ood": (300, True, False), "paraphrase": (300, False, True), "unknown": (200, False, False)}
IN_MEMORY = ("train", "valid", "test", "ood", "paraphrase")  # the splits whose people the store holds


def generate(seed=0, sizes=None, shuffle_prob=0.5, no_person_frac=0.05):
    """{split: (people, examples)}: every person gives one example per category (in a random
    order), plus questions about nobody at rate no_person_frac. 'unknown' holds people who are
    never put in the memory store (the pipeline must answer that it does not know them). Names
    never repeat across splits."""
    rng = random.Random(seed)
    pools = _pools(seed)
    sizes = {**{k: v for k, (v, _, _) in SPLITS.items()}, **(sizes or {})}
    seen, out = set(), {}
    for split, (_, ood, paraphrase) in SPLITS.items():
        people, examples = [], []
        while len(people) < sizes[split]:
            person = make_person(rng, pools, ood, shuffle_prob)
            if person["name"].lower() in seen:
                continue
            seen.add(person["name"].lower())
            people.append(person)
            examples += [example(person, c, rng, rng.choice(questions.PARTS) if paraphrase else None)
                         for c in CATEGORIES]
        examples += [no_person_example(rng) for _ in range(int(len(examples) * no_person_frac))]
        rng.shuffle(examples)
        out[split] = (people, examples)
    return out


def write(folder, seed=0, **kwargs):
    """Write people-SPLIT.jsonl and examples-SPLIT.jsonl for every split into folder, and
    drop the memory store made from the previous data (open_store fills a new one)."""
    os.makedirs(folder, exist_ok=True)
    if os.path.exists(os.path.join(folder, "memory.sqlite")):
        os.remove(os.path.join(folder, "memory.sqlite"))
    for split, (people, examples) in generate(seed, **kwargs).items():
        for kind, rows in (("people", people), ("examples", examples)):
            path = os.path.join(folder, f"{kind}-{split}.jsonl")
            tools.atomic_save(lambda p: _write_jsonl(p, rows), path)
    return folder


def _write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def read(folder, kind, split):
    path = os.path.join(folder, f"{kind}-{split}.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no MoMeM data at {path}: generate it with `python -m momem data --out {folder}`")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]
