from .cli import main

if __name__ == "__main__":  # a spawned child (kit.stages.infer_many.infer_isolated) imports this too
    raise SystemExit(main())
