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
# # LoRA-LiteE · extra · Pseudo-label
# Scores an unlabelled table with trained models (their saved blend, or the paper's / equal
# weights) and writes it back as training rows with soft labels — the teacher's probabilities,
# optionally sharpened and filtered by confidence. Pass the result to `01_tokenize` as `EXTRA`
# (training-only rows, deduplicated against the train and test prompts) to train a student.

# %% tags=["parameters"]
INPUT = "data/hh-rlhf/harmless-base-test.jsonl.gz"  # any --train format; its labels are ignored
MODEL_ROOTS = ["artifacts/models"]  # folders holding the teacher's trained models (+ a saved blend.json)
OUT = "artifacts/pseudo_labels.csv"
WEIGHTS = "auto"        # auto (the saved blend if found) | saved | paper | equal | [w1, ...]
SHARPENING = 1.0        # < 1 sharpens the teacher's probabilities, > 1 softens them
MIN_CONFIDENCE = 0.0    # leave out rows whose most likely outcome is below this
OVERWRITE = False
KIT_DIR = "/kaggle/input/lora-litee-kit"    # Kaggle: this repository as a dataset
WHEELS = "/kaggle/input/lora-litee-wheels"  # Kaggle: wheels of requirements-kaggle.txt

# %%
import os, sys
sys.path[:0] = [KIT_DIR] if os.path.isdir(KIT_DIR) else []  # Kaggle: the kit from its dataset
import kit, kit.core.env
kit.core.env.bootstrap(WHEELS)  # offline install from the wheels dataset where needed

# %%
settings = kit.from_parameters(kit.PseudoLabelSettings, globals(), extra=("KIT_DIR", "WHEELS"))  # a misspelt name fails here
result = kit.pseudo_label(**settings.to_dict())
result.manifest["rows"]

# %%
result.table.head()

# %%
import matplotlib.pyplot as plt
confidence = result.table[["winner_model_a", "winner_model_b", "winner_tie"]].max(axis=1)
confidence.plot.hist(bins=20, title="teacher confidence of the written rows")
plt.show()
