"""The small base model the embedded stack generates with (issue 5): a procedurally generated
captioned dataset of coloured shapes, and the classical checks that grade what a model makes
of their captions. Training builds on these."""
