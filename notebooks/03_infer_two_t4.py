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
# # LoRA-LiteE · 3/4 · Infer on two T4s
# Score the test rows (and each model's held-out fold) with every trained model. Rows
# are sorted by length and batched under a tokens-per-batch budget; on Kaggle the rows
# are dealt across both T4s, one model replica per GPU, and every model runs in its own
# process so the next one loads into empty GPUs. Joint-head models use swap test-time
# augmentation — each row scored as (A, B) and (B, A), averaged; the flip rate says how often
# the two disagree. Pairwise-head models are swap-equivariant by construction: one pass.
# A runtime projection after the first batches warns when the run would exceed the budget.

# %% tags=["parameters"]
TRAINED = None          # train-stage outputs (a list); None: every one under the work dir: models/
MODELS = None           # with TRAINED = None: only these presets, e.g. ["gemma2-9b"]
MODEL_DIR = None        # the backbone's folder, where it is not where it was at training time
SPLITS = ["test", "oof"]
TOKENIZED = None        # None: the cache each model trained on (Kaggle: tokenize the hidden test first)
DEVICES = None          # None: every visible GPU (cuda:0, cuda:1), else the CPU
CPU_WORKERS = 1
TTA = True              # swap TTA for joint-head models (pairwise and lexical need none: one pass)
MAX_TOKENS = None       # padded tokens per batch; None: 16384 on GPU, 2048 on CPU
BUDGET_HOURS = 9.0
QUANTIZATION = None     # None: the backbone as trained; "8bit" (int8: faster than nf4 on a T4), "4bit" or "none"
DEADLINE = None         # a time.time() by which scoring must end (the main job's session deadline); None: none
ISOLATE = None          # None: each model in its own process when on GPU
OVERWRITE = False
KIT_DIR = "/kaggle/input/lora-litee-kit"    # Kaggle: this repository as a dataset
WHEELS = "/kaggle/input/lora-litee-wheels"  # Kaggle: wheels of requirements-kaggle.txt

# %%
import os, sys
sys.path[:0] = [KIT_DIR] if os.path.isdir(KIT_DIR) else []  # Kaggle: the kit from its dataset
import kit, kit.core.env
kit.core.env.bootstrap(WHEELS)  # offline install from the wheels dataset where needed

# %%
from kit.ops.devices import visible_devices
from kit.stages.infer_many import infer_many

options = kit.from_parameters(kit.InferSettings, globals(), extra=("TRAINED", "MODELS", "SPLITS", "ISOLATE",
                                                                   "KIT_DIR", "WHEELS"))  # a misspelt name fails here
model_dirs = TRAINED or kit.trained_outputs(models=MODELS)
print("devices:", options.devices or visible_devices(), "| models:", [str(m) for m in model_dirs])
summary = infer_many(model_dirs, SPLITS, isolate=ISOLATE, settings=options)
summary
