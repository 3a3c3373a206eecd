"""Layer 3 — the operations member types are built from: packing under a token budget
(:mod:`.packing`), batched forward passes (:mod:`.batching`), devices and run-time projection
(:mod:`.devices`), backbones (:mod:`.backbones`), LoRA (:mod:`.lora`), losses (:mod:`.losses`)
and the Trainer loop (:mod:`.hf_training`)."""
