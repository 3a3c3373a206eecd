# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # LoRA-LiteE · Submit (the one Kaggle submission notebook)
# Attach the training session's output (model folders, any number of members and folds,
# and its `report/blend.json`), the kit and its wheels. This notebook tokenizes the hidden
# `test.csv` once per member — exactly as each member was tokenized for training — scores
# it with every model (one process per model, both T4s each), cheapest member first, blends
# with the saved blend (or the paper's weights), and writes `/kaggle/working/submission.csv`.
# It cannot time out: a valid submission is written once the first member is scored and
# refined as each finishes; a model that would not end before `BUDGET_HOURS` (less a margin)
# is left out, and the output below names it. `AVERAGE_FOLDS = True` scores each LoRA member
# once (its folds' weights averaged). Nothing is written under `/kaggle/input`; each run works
# in a fresh `/kaggle/working/submit/<time>/` folder.

# %% tags=["parameters"]
MODEL_ROOTS = None      # folders holding trained models; None: every attached dataset (/kaggle/input)
TEST = None             # None: the competition's test.csv
WEIGHTS = "auto"        # "auto" (the saved blend.json if found, else "paper") | "saved" | "paper" | "equal" | [w1, ...]
                        # | "fit": fitted on the held-out rows the members share (each trained on one fold of one split)
SPACE = "prob"          # with weights other than a saved blend's: average probabilities ("prob") or log-probabilities
BLEND_JSON = None       # the saved blend to apply; None: the one found under MODEL_ROOTS
MODEL_DIR = None        # {"gemma2-9b": "/kaggle/input/..."}: a backbone attached elsewhere than in training
DEVICES = None          # None: every visible GPU, else the CPU
ISOLATE = None          # None: each model in its own process when on GPU
TTA = True              # swap TTA for joint-head models
MAX_TOKENS = None       # padded tokens per batch; None: 16384 on GPU, 2048 on CPU
BUDGET_HOURS = 9.0      # the session's hours: scoring stops in time to keep a valid submission
AVERAGE_FOLDS = False   # True: each LoRA member's fold models averaged into one model, scored once
QUANTIZATION = None     # None: the backbone as trained; "8bit" (int8: faster than nf4 on a T4), "4bit" or "none"
OUT = None              # None: the work dir's submission.csv (/kaggle/working on Kaggle)
SAMPLE_SUBMISSION = "auto"  # checked against by ids; "auto": the competition's, for its own test; None: no check
KIT_DIR = "/kaggle/input/lora-litee-kit"    # Kaggle: this repository as a dataset
WHEELS = "/kaggle/input/lora-litee-wheels"  # Kaggle: wheels of requirements-kaggle.txt

# %%
import os, sys
sys.path[:0] = [KIT_DIR] if os.path.isdir(KIT_DIR) else []  # Kaggle: the kit from its dataset
import kit, kit.core.env
kit.core.env.bootstrap(WHEELS)  # offline install from the wheels dataset where needed

# %%
settings = kit.from_parameters(kit.SubmitSettings, globals(), extra=("KIT_DIR", "WHEELS"))  # a misspelt name fails here
result = kit.submit(**settings.to_dict())
{"submission": str(result.submission), "minutes": round(result.seconds / 60, 1), "blend": result.weights,
 "members": {name: len(dirs) for name, dirs in result.members.items()}, "left_out": result.left_out}

# %%
from kit.store.io import read_csv_keeping_ids
read_csv_keeping_ids(result.submission).head()
