"""The built-in base model, `shapes-32` (ADR 8): its procedurally generated, captioned dataset
of coloured shapes (`shapes`), its trainer (`train`), the classical checks that grade what it
draws (`quality`), and the weights themselves (`shapes-32/`)."""
