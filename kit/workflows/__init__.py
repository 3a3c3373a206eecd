"""Layer 7 — workflows made of stages: ``kit cv`` (:mod:`.cv`), the Kaggle submission
(:mod:`.submit`), pseudo-labels (:mod:`.pseudo_label`) and the main job (:mod:`.main`)."""
