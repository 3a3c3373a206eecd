"""Layer 2 — every artefact the stages write and read, each with its writer, reader and checks in
one place: atomic writes and stage-atomic folders (:mod:`.io`), manifests (:mod:`.manifest`),
the tokenized cache (:mod:`.cache`), trained model folders (:mod:`.models`), prediction files
(:mod:`.predictions`) and figures (:mod:`.figures`)."""
