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
# # LoRA-LiteE · 2/4 · Train
# LoRA fine-tuning of one backbone as a three-way classifier (A / B / tie) on one fold
# of the tokenized data — the "SFT with LoRA" half of LoRA-LiteE — with the head the cache
# was tokenized for (`joint` or `pairwise`). `MODEL = "lexical"` fits the TF-IDF member. One run per (model,
# fold): run this notebook once per member and fold (each run in its own process keeps
# GPU memory free). On a GPU the large presets load in 4-bit nf4 (QLoRA). Multi-GPU:
# `torchrun --nproc_per_node=2 -m kit train --model ... --fold ...` runs the same code with DDP.

# %% tags=["parameters"]
MODEL = "minilm"        # minilm | smollm2 (embedded) | lexical | gemma2-9b | llama3-8b (GPU)
MEMBER = None           # the member type; None: the tokenized cache's (must match it)
POOLING = None          # pairwise head: "mean" | "last" | "first"; None: the preset's
FOLD = 0                # held-out fold; None trains on every row (final model, no evaluation)
TOKENIZED = None        # stage-1 cache; None: the work dir: tokenized/MODEL folder
OUT = None              # None: the work dir: models/MODEL/foldK folder
MODEL_DIR = None        # override the preset's model folder
LOAD_IN_4BIT = None     # None: the preset's (True for the GPU presets; on CPU it runs, slower than fp32)
LORA_R = None           # LoRA settings; None: the preset's
LORA_ALPHA = None
LORA_DROPOUT = None
TARGET_MODULES = None   # e.g. ["q_proj", "v_proj"]
LAYERS = None           # e.g. list(range(16, 42)): LoRA on these layers only
LEXICAL_C = None        # lexical member: inverse L2 strength; None: the preset's
LEXICAL_DENSE_SCALE = None  # lexical member: structure features' scale beside TF-IDF; None: the preset's
EPOCHS = None           # training settings; None: the preset's
LR = None
LR_SCHEDULE = "cosine"   # after warm-up: "cosine" or "linear" decay to 0, or "constant" (SWA's usual rate)
BATCH_SIZE = None
GRAD_ACCUM = None
MAX_STEPS = -1          # > 0 overrides EPOCHS
EVALS_PER_RUN = 4       # evaluations and checkpoints over the run (the best is kept)
SWAP_AUGMENT = True     # joint head: also train on every row with A and B exchanged
GROUP_BY_LENGTH = None  # batches of similar length (True) or shuffled (False); None: the preset's
HEAD_LR_SCALE = None    # the new heads' learning rate as a multiple of LR; None: the preset's
WEIGHT_AVERAGE = "none"  # the weights saved: "none" (as trained), "swa" (their mean) or "ema" (moving average)
AVERAGE_START = 0.5     # swa/ema: averaging starts after this share of the updates
EMA_DECAY = 0.9         # ema: the moving average's decay per update
MAX_TRAIN_ROWS = None
SKIP_TRAIN_ROWS = 0     # skip this many training rows first (a row bag: each model its own block)
MAX_EVAL_ROWS = None
SEED = 42
OVERWRITE = False       # an existing trained output is an error unless True
RESUME = True           # a killed run resumes from its last complete checkpoint (same arguments only)
BUDGET_HOURS = 9.0      # stop before the model loads when the training time projected by arithmetic exceeds this
KIT_DIR = "/kaggle/input/lora-litee-kit"    # Kaggle: this repository as a dataset
WHEELS = "/kaggle/input/lora-litee-wheels"  # Kaggle: wheels of requirements-kaggle.txt

# %%
import os, sys
sys.path[:0] = [KIT_DIR] if os.path.isdir(KIT_DIR) else []  # Kaggle: the kit from its dataset
import kit, kit.core.env
kit.core.env.bootstrap(WHEELS)  # offline install from the wheels dataset where needed

# %%
run, overrides, settings = kit.from_parameters([kit.TrainRun, kit.PresetOverrides, kit.TrainSettings], globals(),
                                               extra=("KIT_DIR", "WHEELS"))  # a misspelt name fails here
result = kit.train_stage(**run.to_dict(), **settings.to_dict(), **overrides.given())
import pandas as pd
pd.Series(result.metrics, name=f"{run.model} fold {run.fold}").to_frame()

# %%
from IPython.display import Image, display
if (result.out_dir / "training.png").exists():  # the lexical member has no training curve
    display(Image(filename=str(result.out_dir / "training.png")))
