"""`python -m scenetag` (needed by torchrun)."""
from .cli import main

raise SystemExit(main())
