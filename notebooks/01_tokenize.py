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
# # LoRA-LiteE · 1/4 · Tokenize
# Parse the competition tables, pack every conversation (all turns) under a token budget
# for one backbone, and cache the token ids for training and inference. The head decides
# the packing: `joint` packs prompt + both responses into one sequence, `pairwise` packs
# each side (prompt + one response) on its own. The `lexical` member keeps the text.
# Run once per member. Rows that cannot be used are listed, never dropped silently.

# %% tags=["parameters"]
MODEL = "minilm"        # minilm | smollm2 (embedded) | lexical | gemma2-9b | llama3-8b (GPU)
MEMBER = None           # the member type; None: the preset's | "joint" | "pairwise" | "lexical"
TRAIN = None            # list of train tables (competition CSV/parquet, or chosen/rejected data); None: default
EXTRA = []              # extra labelled tables: training-only, deduplicated against train and test prompts
DEDUP_SIMILARITY = 0.9  # extra rows this similar to a train/test prompt are removed (1.0: exact only)
TEST = None             # test table; None: this environment's default
MAX_LENGTH = None       # None: the preset's
PACK = None             # packing options, e.g. {"chat_template": True}: the backbone's chat template around the text
MODEL_DIR = None        # override the preset's model folder
N_FOLDS = 5
MAX_ROWS = None         # use only the first N train rows (quick runs)
OUT = None              # None: the work dir: tokenized/MODEL folder
OVERWRITE = False       # an existing cache is an error unless True
KIT_DIR = "/kaggle/input/lora-litee-kit"    # Kaggle: this repository as a dataset
WHEELS = "/kaggle/input/lora-litee-wheels"  # Kaggle: wheels of requirements-kaggle.txt

# %%
import os, sys
sys.path[:0] = [KIT_DIR] if os.path.isdir(KIT_DIR) else []  # Kaggle: the kit from its dataset
import kit, kit.core.env
kit.core.env.bootstrap(WHEELS)  # offline install from the wheels dataset where needed

# %%
settings = kit.from_parameters(kit.TokenizeSettings, globals(), extra=("KIT_DIR", "WHEELS"))  # a misspelt name fails here
result = kit.tokenize_stage(**settings.to_dict())
result.retention_summary()

# %% [markdown]
# Rows skipped (train) or repaired (test), with the reason:

# %%
result.skipped

# %%
from IPython.display import Image, display
if (result.out_dir / "retention.png").exists():  # the lexical member keeps text: no token budget
    display(Image(filename=str(result.out_dir / "retention.png")))
