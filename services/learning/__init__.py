"""The learning core: model zoo (``zoo``), classifier growth (``growth``), losses (``losses``),
methods built from pieces (``methods``), the training loop (``trainer``), checkpoint files
(``checkpoint``) and step timing (``benchmark``). ``names`` holds the architecture and method
names without importing torch. See docs/method-engine.md.
"""
