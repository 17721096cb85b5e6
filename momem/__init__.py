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
import data
import presets

# the three training tasks, offered as TrainConfig.dataset names once momem is imported
for _name, _cls in (("momem_ner", "NERExamples"),  # question -> the person's name
                    ("momem_summary", "SummaryExamples"),  # record + question -> the field asked for
                    ("momem_response", "ResponseExamples")):  # name + field + question -> the reply
    data.register_dataset(_name, f"momem.examples:{_cls}")

# The three trained modules: character-level, trained on the synthetic people data. Batches are padded
# per batch, so every step has another shape: compile off (torch 2.13's inductor fails on the backward
# of attention with dynamic shapes, and recompiling per shape would cost more than it saves)
_TRAIN = dict(tokenizer="char", dim=128, num_q_heads=4, num_kv_heads=4, head_dim=32, batch_size=64, lr=2e-3,
              weight_decay=0.01, eval_interval=250, checkpoint_interval=250, compile="off")
_SUMMARY = dict(_TRAIN, model_type="encdec", num_layers=2, encoder_layers=2, max_seq_len=256, dataset="momem_summary",
                batch_size=32, max_steps=1500)
presets.register_presets({
    "momem_ner": dict(_TRAIN, num_layers=4, max_seq_len=208, dataset="momem_ner", max_steps=1800),  # the baseline GPT
    "momem_summary": _SUMMARY,  # encoder-decoders with a copy head (modules/encoder_decoder.py)
    "momem_response": dict(_SUMMARY, dataset="momem_response", max_steps=2000),
})
