"""The chaos run: the pipeline under load, seeded faults, and a checker of the README's promises.

    python -m bench.chaos --seconds 60 [--seed S]

See README.md (Chaos) for what is injected, what is checked and the bounds.
"""
