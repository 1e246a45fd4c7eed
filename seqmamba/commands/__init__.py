"""The ``seqmamba`` command, in parts (``seqmamba.cli`` is the thin entry module):

- ``verbs.py``        the verb table (run, eval, generate, embed, list) and what each verb does
- ``hydra_app.py``    configs dir, Hydra launch, external config dirs, one run dir under torchrun
- ``errors.py``       any failure -> one line (Hydra's multi-line reports folded, closest matches)
- ``main.py``         argument handling, help text built from the verb table, exit codes
"""
