"""`python -m llmhost.cli`: the same command as the `llmhost` script (tests and benches use it)."""

from llmhost.cli import main

if __name__ == "__main__":
    main()
