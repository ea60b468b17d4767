"""`python -m kdyn ...` (used by `torchrun --nproc_per_node 2 -m kdyn train ...`)."""

from kdyn.cli import app

if __name__ == "__main__":
    app()
