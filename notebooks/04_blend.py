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
# # LoRA-LiteE · 4/4 · Blend
# The ensemble half of LoRA-LiteE: a weighted mean of the members' probabilities (the
# paper: Gemma 0.7 + Llama 0.3), or weights fitted on out-of-fold log loss, optionally in
# log-probability space and with temperature scaling. Writes a validated `submission.csv`
# (every test id, in order) and an out-of-fold report: baselines, each member without and
# with swap TTA, the blend, a reliability diagram and a confusion matrix.

# %% tags=["parameters"]
MEMBERS = None          # {"gemma2-9b": [dirs...], ...}; None: every trained model, by preset
MODELS = None           # with MEMBERS:None: only these presets
WEIGHTS = "paper"       # "paper" (0.7/0.3) | "equal" | "fit" | "stack" (both fitted out of fold, their OOF score cross-fitted) | [w1, ...]
SPACE = "prob"          # "prob" (arithmetic mean) | "log" (geometric mean)
TEMPERATURE = False     # fit temperature scaling on out-of-fold rows
TIE_OFFSET = False      # fit an offset on the tie's log-probability (with the weights and temperature): sharp members under-predict ties
GUARDRAILS = True       # fitted rules for identical / one-empty responses, kept only where they help out of fold
JUDGE_CSV = None        # {"gpt-3.5-turbo": "verdicts.csv", ...}: external judges compared on the rows they judged
OUT = None              # None: the work dir: submission.csv
REPORT_DIR = None       # None: the work dir: report/ folder
OVERWRITE = False
KIT_DIR = "/kaggle/input/lora-litee-kit"    # Kaggle: this repository as a dataset
WHEELS = "/kaggle/input/lora-litee-wheels"  # Kaggle: wheels of requirements-kaggle.txt

# %%
import os, sys
sys.path[:0] = [KIT_DIR] if os.path.isdir(KIT_DIR) else []  # Kaggle: the kit from its dataset
import kit, kit.core.env
kit.core.env.bootstrap(WHEELS)  # offline install from the wheels dataset where needed

# %%
settings = kit.from_parameters(kit.BlendSettings, globals(), extra=("KIT_DIR", "WHEELS"))  # a misspelt name fails here
result = kit.blend_stage(**settings.to_dict())
result.report

# %%
result.table

# %%
from IPython.display import Image, display
if "report_dir" in result.report:  # written when out-of-fold predictions exist
    for figure in ("reliability.png", "confusion.png"):
        display(Image(filename=os.path.join(result.report["report_dir"], figure)))
