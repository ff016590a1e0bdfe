"""One `.avsc` per record, named `<namespace>.<Record>.avsc`.

`released/` holds the schemas as last released; tests resolve every current schema
against its released version, so a change that breaks old data fails CI.
"""
