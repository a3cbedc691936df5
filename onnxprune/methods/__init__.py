"""Methods: the ways of making a model smaller (width pruning today; depth and element sparsity next).

Each method supplies analyze → plan → apply → reference behind one interface (DESIGN §1); the plan
records which method made it, so front-ends can handle plans without branching on methods.
"""
