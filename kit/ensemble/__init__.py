"""Layer 5 — from member probabilities to a submission: blending and fitting (:mod:`.combine`),
stacking (:mod:`.stacking`), guardrails (:mod:`.guardrails`), out-of-fold evaluation
(:mod:`.evaluation`), the submission (:mod:`.submission`) and the report (:mod:`.report`)."""
