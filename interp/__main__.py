"""`python -m interp ...` = the `interp` command (what `torchrun -m interp` and `srun python -m interp` run)."""

from interp.cli import main

main()
