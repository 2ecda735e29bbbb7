"""One module per stage: rule name = subcommand name = module name (``-`` and ``_`` swapped).

Rule ``prepare_task`` runs ``culture-neurons prepare-task``, whose stage function lives in
`culture_neurons.stages.prepare_task`. A stage module reads its inputs, calls the domain packages
and writes its outputs; the domain packages never import it.
"""
