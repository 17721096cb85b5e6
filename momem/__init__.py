"""MoMeM, the modular memory-augmented pipeline (seed 004), built in the sandbox's house.

    python -m momem data                      # generate the synthetic people data (seeded)
    python -m momem train all                 # NER, summarizer, generator with the shared trainer
    python -m momem ask "Where does Kenji Diallo live?"     # a person the store holds
    python -m momem add "Juma Baraka" --job potter --city Kisumu ...
    python -m momem eval --out comparison/momem

people.py (data generator), store.py (Module1: SQLite memory), examples.py (the three training
tasks as sandbox datasets), pipeline.py (the chain and its evaluation). The models are sandbox
architectures: the NER is the baseline GPT, the summarizer and generator modules/encoder_decoder.py.
"""
