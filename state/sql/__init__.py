"""Forward-only SQL migrations, `NNNN_name.sql`, applied by `state.migrations`."""
