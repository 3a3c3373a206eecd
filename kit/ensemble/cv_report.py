"""``kit cv``'s report as markdown: what ran, the out-of-fold table, and the differences with their intervals.

:func:`cv_markdown` renders ``cv.md`` from the record ``kit cv`` writes to ``cv.json`` (its ``settings``) and
the evaluation table; it computes nothing. Beside :mod:`kit.ensemble.report`, which renders the blend stage's.
"""
from __future__ import annotations

import json

from pathlib import Path
from typing import Sequence

import pandas as pd

from .intervals import N_DRAWS, differences_markdown
from .judges import comparison_markdown

__all__ = ["cv_markdown", "seed_spread_line", "shared_seeds"]


def shared_seeds(bagged: dict) -> list:
    """The seeds every bagged member was trained with, in the first bag's order; none for a single bag
    (its 'seed N alone' rows already are the recipe at one seed)."""
    if len(bagged) < 2:
        return []
    first, *rest = bagged.values()
    return [seed for seed in first if all(seed in other for other in rest)]


def seed_spread_line(table: pd.DataFrame, bagged: dict, bag_rows: bool = False) -> str:
    """One markdown line per bagged member, and one for the whole recipe at one seed (two or more bags):
    the blend's range over those single-seed rows beside the bag's."""
    def spread(what: str, subject: str, row_names: list) -> str:
        rows = table.loc[row_names]
        return (f"\nSeed spread ({what}): {subject} scores "
                f"{rows['log_loss'].min():.4f}–{rows['log_loss'].max():.4f} log loss and "
                f"{rows['accuracy'].min():.4f}–{rows['accuracy'].max():.4f} accuracy; bagged, "
                f"{table.loc['blend', 'log_loss']:.4f} and {table.loc['blend', 'accuracy']:.4f}.\n")

    lines = [spread(f"{name}, {len(by_seed)} seeds" + (", each on its own block of rows" if bag_rows else ""),
                    "the blend with one seed's models", [f"blend, {name} seed {sd} alone" for sd in by_seed])
             for name, by_seed in bagged.items()]
    shared = shared_seeds(bagged)
    if shared:
        lines.append(spread(f"the whole recipe, every bagged member at one seed, {len(shared)} seeds: "
                            f"{', '.join(map(str, shared))}", "the blend",
                            [f"blend, every bag at seed {sd}" for sd in shared]))
    return "".join(lines)


def _what_ran(settings: dict, extra: Sequence[str], weights_text: str, oof_score, rows: int) -> str:
    """The report's first paragraph: the rows, folds and every setting that shaped the figures."""
    residual, bags, timings = settings["residual"], settings["bag_seeds"] or {}, settings["train_minutes"]
    seed, train_seed, max_train_rows = settings["seed"], settings["train_seed"], settings["max_train_rows"]
    return (f"{rows} out-of-fold rows, {settings['folds']} folds (grouped by prompt, stratified by label); "
            + (f"extra training rows in every fold: {settings['extra_rows']} from "
               f"{', '.join(Path(p).name for p in extra)} ({settings['extra_removed']} removed as duplicates of "
               f"train prompts); " if extra else "")
            + (f"residual members: {', '.join(f'{m} on {b}' for m, b in residual.items())}; " if residual else "")
            + f"models {', '.join(settings['models'])}; member type {settings['member'] or 'preset'}; max_length "
            f"{settings['max_length'] or 'preset'}; epochs {settings['epochs'] or 'preset'}; "
            + (f"packing {json.dumps(settings['pack'])}; " if settings.get("pack") else "")
            + (f"training settings per member: {json.dumps(settings['recipes'])}; " if settings.get("recipes") else "")
            + (f"folds seeded {seed}, training seeded {train_seed}; " if train_seed != seed else "")
            + (f"seed-bagged (each fold's models averaged): {', '.join(f'{m} over seeds {bags[m]}' for m in bags)}"
               + (", the i-th seed on the i-th block of the fold's training rows (disjoint rows); "
                  if settings["bag_rows"] else "; ") if bags else "")
            + f"training rows per fold {max_train_rows or 'all'}; "
            f"swap augmentation {settings['swap_augment']} (joint head only); swap TTA {settings['tta']} (joint head "
            f"only); blend weights {weights_text}"
            + f" (test), the `blend` row {oof_score}; "
            f"training minutes summed over folds: {', '.join(f'{m} {t:.1f}' for m, t in timings.items())}.\n\n")


def cv_markdown(train: Sequence[str], settings: dict, table: pd.DataFrame, rows: int, weights_text: str,
                oof_score, bagged: dict, judges: Sequence, differences: Sequence) -> str:
    """``cv.md``: ``settings`` is the record of ``cv.json``; ``weights_text`` the blend's weights as said
    (mode, space, what was blended and fitted); ``bagged`` the seed-bagged members' seeds; ``judges`` and
    ``differences`` the judge rows and the paired comparisons."""
    cut = settings["cut_rates"]
    return (f"# kit cv: {', '.join(Path(p).name for p in train)}\n\n"
            + _what_ran(settings, settings["extra"], weights_text, oof_score, rows)
            + comparison_markdown(table) + "\n"
            + ("\n'rows cut': the share of rows of which the packing cut some text (a turn, the prompt or a "
               "response) to fit the member's token budget.\n" if any(v is not None for v in cut.values()) else "")
            + (seed_spread_line(table, bagged, settings["bag_rows"]) if bagged else "")
            + ("\nA judge known by its verdicts is scored on them (accuracy, macro-F1); its log loss is not "
               "comparable and not shown.\n" if any(j.verdicts is not None for j in judges) else "")
            + (f"\n## Differences on the same rows, with paired bootstrap 95 % intervals\n\nEach row: the first "
               f"method's figure minus the second's, on the {rows} out-of-fold rows; the interval resamples "
               f"whole prompts ({differences[0].groups} of them, {N_DRAWS} draws). Log loss: negative favours the "
               f"first; accuracy: positive favours the first. 'sign holds': the interval leaves out 0.\n\n"
               + differences_markdown(differences) if differences else ""))
