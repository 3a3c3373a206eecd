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
# # LoRA-LiteE · Train and submit in one session
# The Kaggle flow for members small enough to train *and* score the hidden test within one
# 9-hour session: this one notebook runs the four stage notebooks in order (tokenize →
# train per member → infer → blend) and writes `/kaggle/working/submission.csv`. Submit it as
# it is: on the hidden test it trains again and scores the hidden rows. The executed stage
# notebooks and the report land in `/kaggle/working/runs/<time>/`.
# For 8–9B members, train each in its own session and submit with `05_submit` instead.

# %% tags=["parameters"]
MODELS = ["llama3-8b", "lexical"]  # presets (the members); any number
TRAIN = None            # training tables (competition CSV/parquet, or chosen/rejected data); None: the competition's
TEST = None             # the test table; None: the competition's test.csv
SAMPLE_SUBMISSION = "auto"  # the sample submission to check against; "auto": the competition's, for its own test
MODEL_DIR = None        # backbone folders where not at the preset's path, e.g. {"llama3-8b": "/kaggle/input/my-llama"}
N_FOLDS = 5             # prompt-grouped folds of the training rows
TRAIN_FOLDS = [0]       # folds trained: [0] one fold, whose held-out rows fit the weights; None: every fold
MAX_ROWS = None         # training rows tokenized; None: every row
MAX_LENGTH = {}         # tokens: one number for every member (e.g. 1024), or per model {"llama3-8b": 1024}
RECIPES = {}            # training settings per model, e.g. {"llama3-8b": {"max_steps": 400}}
WEIGHTS = "fit"         # "fit" (on the held-out rows) | "paper" | "equal" | "stack" | [w1, ...]
SPACE = "log"           # "log" (geometric mean) | "prob" (arithmetic mean)
BUDGET_HOURS = 9.0      # the session's hours: a training projected past what is left stops before it loads; scoring keeps the deadline
KIT_DIR = "/kaggle/input/lora-litee-kit"    # Kaggle: this repository as a dataset
WHEELS = "/kaggle/input/lora-litee-wheels"  # Kaggle: wheels of requirements-kaggle.txt

# %%
import os, sys
sys.path[:0] = [KIT_DIR] if os.path.isdir(KIT_DIR) else []  # Kaggle: the kit from its dataset
import kit, kit.core.env
kit.core.env.bootstrap(WHEELS)  # offline install from the wheels dataset where needed

# %%
settings = kit.from_parameters(kit.MainSettings, globals(), extra=("KIT_DIR", "WHEELS"))  # a misspelt name fails here
submission = kit.run_main(**settings.to_dict(), wheels=WHEELS)
submission

# %%
from kit.store.io import read_csv_keeping_ids
read_csv_keeping_ids(submission).head()
